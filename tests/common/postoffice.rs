//! The fake postoffice: a tiny_http server that records every hand-off and answers
//! as the test tells it to. Each part of a batch (`POST /v1/batch`) is
//! recorded and answered as a hand-off of its own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::TestDir;

/// Worker threads answering requests; more than mailman's concurrency so the
/// endpoint itself never limits how many hand-offs are in flight.
const WORKERS: usize = 16;

/// One request the endpoint received, and what it answered.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Arrival order, from 0.
    pub seq: usize,
    /// HTTP method.
    pub method: String,
    /// URL path without the query.
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// The decoded `from` parameter (None when absent).
    pub from: Option<String>,
    /// The decoded `to` parameters, in order.
    pub to: Vec<String>,
    /// The Authorization header.
    pub authorization: Option<String>,
    /// The Idempotency-Key header.
    pub key: Option<String>,
    /// The Content-Type header.
    pub content_type: Option<String>,
    /// The request body.
    pub body: Vec<u8>,
    /// The Content-Length header.
    pub content_length: Option<usize>,
    /// Whether the whole body arrived (as long as Content-Length said); an
    /// incomplete request (the sender died mid-request) is answered 400.
    pub complete: bool,
    /// The sender's address and port.
    pub peer: Option<SocketAddr>,
    /// When the request arrived.
    pub received_at: Instant,
    /// The status the endpoint answered.
    pub status: u16,
    /// When the answer was written, None if writing it failed.
    pub answered_at: Option<Instant>,
}

impl Delivery {
    /// Whether the endpoint answered 2xx, successfully written to mailman.
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status) && self.answered_at.is_some()
    }

    /// The key, or a panic naming the request.
    pub fn key(&self) -> &str {
        self.key
            .as_deref()
            .unwrap_or_else(|| panic!("request #{} has no Idempotency-Key", self.seq))
    }

    /// A short description for failure messages.
    pub fn summary(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let head: String = body.chars().take(300).collect();
        format!(
            "#{} at {} from {:?} {} {}?{} key={:?} auth={:?} type={:?} -> {} at {} ({} body bytes{}: {:?}...)",
            self.seq,
            super::clock(self.received_at),
            self.peer,
            self.method,
            self.path,
            self.query,
            self.key,
            self.authorization,
            self.content_type,
            self.status,
            self.answered_at.map_or("(not answered)".into(), super::clock),
            self.body.len(),
            if self.complete {
                String::new()
            } else {
                format!(" of Content-Length {:?}, incomplete", self.content_length)
            },
            head
        )
    }
}

/// What the endpoint answers to one request.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Sleep this long before answering.
    pub delay: Duration,
}

impl Answer {
    /// Answer `status` at once.
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            delay: Duration::ZERO,
        }
    }
}

type Policy = Arc<dyn Fn(&Delivery) -> Answer + Send + Sync>;

#[derive(Default)]
struct State {
    log: Mutex<Vec<Delivery>>,
    changed: Condvar,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// The recording endpoint. [`Postoffice::reserve`] picks its address without
/// listening, so a test can start with postoffice down.
pub struct Postoffice {
    addr: SocketAddr,
    state: Arc<State>,
    policy: Arc<RwLock<Policy>>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Postoffice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postoffice")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Postoffice {
    /// An endpoint on a free port of the test's address, not listening yet.
    pub fn reserve(dir: &TestDir) -> Postoffice {
        let accept: Policy = Arc::new(|_: &Delivery| Answer::status(202));
        Postoffice {
            addr: dir.free_addr(),
            state: Arc::default(),
            policy: Arc::new(RwLock::new(accept)),
            stop: Arc::new(AtomicBool::new(false)),
            workers: Vec::new(),
        }
    }

    /// An endpoint listening and answering 202 to everything.
    pub fn start(dir: &TestDir) -> Postoffice {
        let mut po = Postoffice::reserve(dir);
        po.listen();
        po
    }

    /// Where it listens (or will).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts listening on the reserved address.
    pub fn listen(&mut self) {
        assert!(self.workers.is_empty(), "endpoint already listening");
        self.stop.store(false, Ordering::SeqCst);
        let server = Arc::new(
            tiny_http::Server::http(self.addr)
                .unwrap_or_else(|e| panic!("endpoint cannot listen on {}: {e}", self.addr)),
        );
        for _ in 0..WORKERS {
            let (server, state, policy, stop) = (
                server.clone(),
                self.state.clone(),
                self.policy.clone(),
                self.stop.clone(),
            );
            self.workers.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(50)) {
                        serve(request, &state, &policy);
                    }
                }
            }));
        }
    }

    /// Stops listening (requests already read are still answered).
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }

    /// Decides the answer to every following request.
    pub fn set_policy(&self, policy: impl Fn(&Delivery) -> Answer + Send + Sync + 'static) {
        *self.policy.write().unwrap() = Arc::new(policy);
    }

    /// Every request so far, in arrival order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state.log.lock().unwrap().clone()
    }

    /// Requests answered 2xx, in arrival order.
    pub fn accepted(&self) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(Delivery::accepted)
            .collect()
    }

    /// 2xx answers per Idempotency-Key.
    pub fn accepted_by_key(&self) -> BTreeMap<String, Vec<Delivery>> {
        let mut map: BTreeMap<String, Vec<Delivery>> = BTreeMap::new();
        for d in self.accepted() {
            map.entry(d.key().to_string()).or_default().push(d);
        }
        map
    }

    /// The most requests that were being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits up to `limit` until `cond` holds for the recorded requests; returns them.
    pub fn wait_for(
        &self,
        limit: Duration,
        cond: impl Fn(&[Delivery]) -> bool,
    ) -> Result<Vec<Delivery>, Vec<Delivery>> {
        let deadline = Instant::now() + limit;
        let mut log = self.state.log.lock().unwrap();
        loop {
            if cond(&log) {
                return Ok(log.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(log.clone());
            }
            log = self
                .state
                .changed
                .wait_timeout(log, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Waits until every key in `keys` was answered 2xx; panics with what arrived if
    /// that takes longer than `limit`.
    pub fn wait_for_keys(&self, keys: &[String], limit: Duration) -> Vec<Delivery> {
        let done = |log: &[Delivery]| {
            keys.iter().all(|k| {
                log.iter()
                    .any(|d| d.accepted() && d.key.as_deref() == Some(k))
            })
        };
        match self.wait_for(limit, done) {
            Ok(log) => log,
            Err(log) => {
                let missing: Vec<&String> = keys
                    .iter()
                    .filter(|k| {
                        !log.iter()
                            .any(|d| d.accepted() && d.key.as_deref() == Some(k.as_str()))
                    })
                    .collect();
                panic!(
                    "after {limit:?}, {} of {} messages never reached postoffice: {missing:?}\nreceived:\n{}",
                    missing.len(),
                    keys.len(),
                    log.iter().map(Delivery::summary).collect::<Vec<_>>().join("\n")
                );
            }
        }
    }

    /// The recorded requests, one summary a line.
    pub fn dump(&self) -> String {
        self.deliveries()
            .iter()
            .map(Delivery::summary)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Postoffice {
    fn drop(&mut self) {
        self.shutdown();
        if std::thread::panicking() {
            eprintln!("--- postoffice {} received:\n{}", self.addr, self.dump());
        }
    }
}

/// Records one request, answers it as the policy says, records the answer.
fn serve(mut request: tiny_http::Request, state: &State, policy: &RwLock<Policy>) {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let received_at = Instant::now();
    let mut body = Vec::new();
    let read = request.as_reader().read_to_end(&mut body);
    let header = |name: &'static str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str().to_string())
    };
    let (path, query) = match request.url().split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (request.url().to_string(), String::new()),
    };
    let (from, to) = envelope(&query);
    let mut delivery = Delivery {
        seq: 0,
        method: request.method().to_string(),
        path,
        query,
        from,
        to,
        authorization: header("Authorization"),
        key: header("Idempotency-Key"),
        content_type: header("Content-Type"),
        content_length: header("Content-Length").and_then(|v| v.trim().parse().ok()),
        complete: false,
        body,
        peer: request.remote_addr().copied(),
        received_at,
        status: 0,
        answered_at: None,
    };
    delivery.complete = read.is_ok()
        && delivery
            .content_length
            .is_none_or(|n| n == delivery.body.len());
    if delivery.path == "/v1/batch" && delivery.complete {
        if let Some(parts) = split_batch(&delivery.body) {
            return serve_batch(request, delivery, parts, state, policy);
        }
    }
    // Record at arrival, so `seq` is arrival order and the policy can see it.
    {
        let mut log = state.log.lock().unwrap();
        delivery.seq = log.len();
        log.push(delivery.clone());
        state.changed.notify_all();
    }
    let answer = if delivery.complete {
        let policy = policy.read().unwrap().clone();
        policy(&delivery)
    } else {
        Answer::status(400)
    };
    std::thread::sleep(answer.delay);
    let body = format!(r#"{{"id": "po-{}"}}"#, delivery.seq);
    let response = tiny_http::Response::from_string(body)
        .with_status_code(answer.status)
        .with_header(tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap());
    // Out of flight before the answer leaves: once mailman has it, the next
    // request may come on the same keep-alive connection at once, to
    // another worker, before this one would get here after writing.
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let answered_at = request.respond(response).ok().map(|()| Instant::now());
    let mut log = state.log.lock().unwrap();
    log[delivery.seq].status = answer.status;
    log[delivery.seq].answered_at = answered_at;
    state.changed.notify_all();
}

/// The `from` and `to` of a hand-off's query string.
fn envelope(query: &str) -> (Option<String>, Vec<String>) {
    let mut from = None;
    let mut to = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match form_decode(k).as_str() {
            "from" => from = Some(form_decode(v)),
            "to" => to.push(form_decode(v)),
            _ => {}
        }
    }
    (from, to)
}

/// The parts of a batch body (`KEY LENGTH QUERY` CRLF, LENGTH bytes, CRLF,
/// as the README's API section has it), read here without hedwig's code;
/// None when the body does not follow that.
fn split_batch(mut body: &[u8]) -> Option<Vec<(String, String, Vec<u8>)>> {
    let mut parts = Vec::new();
    while !body.is_empty() {
        let eol = body.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&body[..eol]).ok()?;
        let mut fields = line.split(' ');
        let (key, len, query) = (fields.next()?, fields.next()?, fields.next()?);
        let len: usize = len.parse().ok()?;
        let rest = &body[eol + 2..];
        if rest.len() < len + 2 || &rest[len..len + 2] != b"\r\n" {
            return None;
        }
        parts.push((key.to_string(), query.to_string(), rest[..len].to_vec()));
        body = &rest[len + 2..];
    }
    (!parts.is_empty()).then_some(parts)
}

/// Records each part of a batch as a hand-off of its own, answers each as
/// the policy says (after the longest of their delays) in one 200.
fn serve_batch(
    request: tiny_http::Request,
    template: Delivery,
    parts: Vec<(String, String, Vec<u8>)>,
    state: &State,
    policy: &RwLock<Policy>,
) {
    let mut seqs = Vec::new();
    {
        let mut log = state.log.lock().unwrap();
        for (key, query, body) in parts {
            let (from, to) = envelope(&query);
            let mut d = template.clone();
            d.seq = log.len();
            (d.query, d.from, d.to, d.key, d.body) = (query, from, to, Some(key), body);
            seqs.push(d.seq);
            log.push(d);
        }
        state.changed.notify_all();
    }
    let policy = policy.read().unwrap().clone();
    let answers: Vec<Answer> = {
        let log = state.log.lock().unwrap().clone();
        seqs.iter().map(|&seq| policy(&log[seq])).collect()
    };
    std::thread::sleep(answers.iter().map(|a| a.delay).max().unwrap_or_default());
    let results: Vec<String> = seqs
        .iter()
        .zip(&answers)
        .map(|(seq, a)| match a.status {
            200..=299 => format!(r#"{{"status": {}, "id": "po-{seq}"}}"#, a.status),
            s => format!(r#"{{"status": {s}, "error": "the fake answers {s}"}}"#),
        })
        .collect();
    let body = format!(r#"{{"results": [{}]}}"#, results.join(", "));
    let response = tiny_http::Response::from_string(body)
        .with_header(tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap());
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let answered_at = request.respond(response).ok().map(|()| Instant::now());
    let mut log = state.log.lock().unwrap();
    for (&seq, a) in seqs.iter().zip(&answers) {
        log[seq].status = a.status;
        log[seq].answered_at = answered_at;
    }
    state.changed.notify_all();
}

/// Decodes one application/x-www-form-urlencoded value (`+` is a space).
pub fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
