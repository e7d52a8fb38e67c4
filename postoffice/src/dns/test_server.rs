//! DNS servers on loopback for tests, run on smol: no tokio runtime is ever started.
//!
//! [`ZoneServer`] serves zone text with hickory-server's `Catalog` and in-memory zone
//! handler (real authoritative answers: NXDOMAIN, NOERROR/no-data with SOA, REFUSED outside
//! the zone, truncation over UDP). hickory-server's own `Server` needs tokio sockets, so the
//! UDP and TCP loops here feed its `Catalog` directly. [`FnServer`] answers UDP queries with
//! a closure, for answers a zone cannot give (SERVFAIL) and for counting queries.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::proto::op::Message;
use hickory_server::proto::rr::{LowerName, Name, Record};
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::proto::serialize::txt::Parser;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, MessageResponse, ZoneType};
use smol::net::{TcpListener, TcpStream};
use smol::Async;
use smol::Task;

use super::runtime::{SmolRuntime, SmolTime};

/// An authoritative server for one zone on `ip`, UDP and TCP on the same port.
#[derive(Debug)]
pub struct ZoneServer {
    /// Where to send queries.
    pub addr: SocketAddr,
    /// Queries that came over TCP (after a truncated UDP answer).
    pub tcp_queries: Arc<AtomicUsize>,
    _tasks: Vec<Task<()>>,
}

impl ZoneServer {
    /// Serves `zone` (zone-file text, `$ORIGIN` given by `origin`) on `ip`, a free port.
    pub fn start(ip: [u8; 4], origin: &str, zone: &str) -> Self {
        let origin = Name::from_ascii(origin).unwrap();
        let (_, records) = Parser::new(zone, None, Some(origin.clone()))
            .parse()
            .unwrap();
        let handler = InMemoryZoneHandler::<SmolRuntime>::new(
            origin.clone(),
            records,
            ZoneType::Primary,
            AxfrPolicy::Deny,
        )
        .unwrap();
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::from(origin), vec![Arc::new(handler)]);
        let catalog = Arc::new(catalog);
        let (udp, tcp) = bind_pair(ip);
        let addr = udp.get_ref().local_addr().unwrap();
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        let tasks = vec![
            smol::spawn(serve_udp(udp, catalog.clone())),
            smol::spawn(serve_tcp(tcp, catalog, tcp_queries.clone())),
        ];
        Self {
            addr,
            tcp_queries,
            _tasks: tasks,
        }
    }
}

/// UDP and TCP sockets on one port of `ip`, retried until a port is free for both.
fn bind_pair(ip: [u8; 4]) -> (Async<UdpSocket>, TcpListener) {
    for _ in 0..50 {
        let udp = Async::<UdpSocket>::bind((ip, 0)).unwrap();
        let addr = udp.get_ref().local_addr().unwrap();
        if let Ok(tcp) = std::net::TcpListener::bind(addr) {
            return (udp, TcpListener::try_from(tcp).unwrap());
        }
    }
    panic!("no port free for both udp and tcp on {ip:?}");
}

async fn serve_udp(socket: Async<UdpSocket>, catalog: Arc<Catalog>) {
    let mut buf = vec![0; 4096];
    loop {
        let Ok((n, src)) = socket.recv_from(&mut buf).await else {
            return;
        };
        if let Some(reply) = answer(&catalog, buf[..n].to_vec(), src, Protocol::Udp).await {
            let _ = socket.send_to(&reply, src).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, catalog: Arc<Catalog>, count: Arc<AtomicUsize>) {
    loop {
        let Ok((stream, src)) = listener.accept().await else {
            return;
        };
        smol::spawn(serve_tcp_conn(stream, src, catalog.clone(), count.clone())).detach();
    }
}

/// RFC 1035 §4.2.2 framing: each message is preceded by its length, two bytes.
async fn serve_tcp_conn(
    mut stream: TcpStream,
    src: SocketAddr,
    catalog: Arc<Catalog>,
    count: Arc<AtomicUsize>,
) {
    loop {
        let mut len = [0; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut query = vec![0; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        count.fetch_add(1, Ordering::SeqCst);
        let Some(reply) = answer(&catalog, query, src, Protocol::Tcp).await else {
            return;
        };
        let framed = [&(reply.len() as u16).to_be_bytes()[..], &reply].concat();
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

/// The catalog's reply to one query, encoded; `None` for undecodable input.
async fn answer(
    catalog: &Catalog,
    raw: Vec<u8>,
    src: SocketAddr,
    protocol: Protocol,
) -> Option<Vec<u8>> {
    let request = Request::from_bytes(raw, src, protocol).ok()?;
    // Over UDP an answer must fit the size the client offered, else it is truncated.
    let max_size = match protocol {
        Protocol::Udp => request.edns.as_ref().map_or(512, |e| e.max_payload()),
        _ => u16::MAX,
    };
    let capture = Capture {
        max_size,
        bytes: Arc::default(),
    };
    catalog
        .handle_request::<_, SmolTime>(&request, capture.clone())
        .await;
    let bytes = capture.bytes.lock().unwrap().take();
    bytes
}

/// Keeps the encoded response so the socket loop can send it.
#[derive(Clone)]
struct Capture {
    max_size: u16,
    bytes: Arc<Mutex<Option<Vec<u8>>>>,
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(self.max_size);
        let info = response.destructive_emit(&mut encoder)?;
        *self.bytes.lock().unwrap() = Some(bytes);
        Ok(info)
    }
}

/// A UDP server answering each query with `reply(query)`.
#[derive(Debug)]
pub struct FnServer {
    /// Where to send queries.
    pub addr: SocketAddr,
    _task: Task<()>,
}

impl FnServer {
    /// Serves on `ip`, a free port; no TCP (a TCP attempt is refused).
    pub fn start(ip: [u8; 4], reply: impl Fn(&Message) -> Message + Send + 'static) -> Self {
        let socket = Async::<UdpSocket>::bind((ip, 0)).unwrap();
        let addr = socket.get_ref().local_addr().unwrap();
        let task = smol::spawn(async move {
            let mut buf = vec![0; 4096];
            loop {
                let Ok((n, src)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let _ = socket.send_to(&reply(&query).to_vec().unwrap(), src).await;
            }
        });
        Self { addr, _task: task }
    }
}

/// The skeleton of a reply to `query`: same id and question, no records yet.
pub fn reply_to(query: &Message) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.queries = query.queries.clone();
    reply
}
