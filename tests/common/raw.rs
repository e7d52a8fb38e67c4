//! Raw HTTP over a TCP socket: exact bytes out, answers split and parsed,
//! for what curl and libraries would smooth over (HTTP/1.0, pipelining,
//! malformed or stalled heads).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One parsed answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// The status code.
    pub status: u16,
    /// Header fields, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (by Content-Length).
    pub body: String,
}

impl Answer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        super::stack::json(&self.body)
    }
}

/// Connects with a read timeout of `limit`.
pub fn connect(addr: SocketAddr, limit: Duration) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(limit)).expect("read timeout");
    s
}

/// Sends `bytes`, then reads until the server closes (or `limit` passes);
/// returns what arrived and whether the server closed.
pub fn exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> (Vec<u8>, bool) {
    let mut s = connect(addr, limit);
    s.write_all(bytes).expect("write request");
    read_until_close(&mut s, limit)
}

/// Reads until EOF or `limit`; (bytes, whether EOF came).
pub fn read_until_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(_) => break,
        }
    }
    (out, false)
}

/// Splits a byte stream into answers (bodies by Content-Length); panics on
/// anything else, naming it.
pub fn parse(mut bytes: &[u8]) -> Vec<Answer> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let text = String::from_utf8_lossy(bytes);
        let end = text
            .find("\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of head in {text:?}"));
        let head = &text[..end];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().expect("content-length"));
        let start = end + 4;
        assert!(bytes.len() >= start + len, "body cut short in {text:?}");
        let body = String::from_utf8_lossy(&bytes[start..start + len]).into_owned();
        out.push(Answer {
            version,
            status,
            headers,
            body,
        });
        bytes = &bytes[start + len..];
    }
    out
}

/// A raw message post of `message` (HTTP/1.1, Content-Length).
pub fn post(token: &str, message: &[u8], extra: &str) -> Vec<u8> {
    let mut r = format!(
        "POST {} HTTP/1.1\r\nHost: po.test\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: message/rfc822\r\nContent-Length: {}\r\n{extra}\r\n",
        super::stack::raw_path("a@x.test", &["b@y.test"]),
        message.len()
    )
    .into_bytes();
    r.extend_from_slice(message);
    r
}
