//! The API's own client, for `postoffice queue`: one bodiless request per
//! connection to the running postoffice (`Connection: close`, the answer
//! read to the end), written out by hand and blocking: a command makes a
//! few requests one after another, and a second HTTP client or an executor
//! would cost a binary near its size budget more than these lines. Over
//! HTTPS it pins the certificate: the server must present the very one
//! hedwig.ron names for postoffice (self-signed, from a private CA or a
//! public one alike). A host name could not be checked: the command talks
//! to postoffice's own listen address, not to its name.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// How long one request may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes of an answer read.
const MAX_ANSWER: u64 = 64 << 20;

/// Where and how to reach the API.
#[derive(Debug)]
pub struct Client {
    base: String,
    addr: SocketAddr,
    token: String,
    tls: Option<Pinned>,
}

/// A TLS connector and the certificate (DER) the server must present.
#[derive(Debug)]
struct Pinned {
    connector: native_tls::TlsConnector,
    der: Vec<u8>,
}

impl Client {
    /// A client for the API at `addr` (https when `cert`, the PEM file
    /// postoffice serves, is given), sending `token`.
    pub fn new(addr: SocketAddr, cert: Option<&Path>, token: String) -> Result<Client, String> {
        let scheme = if cert.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{addr}/");
        let tls = match cert {
            None => None,
            Some(path) => {
                let what = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
                let pem = std::fs::read(path).map_err(|e| what(&e))?;
                // The chain's first certificate is the server's own.
                let cert = native_tls::Certificate::from_pem(&pem).map_err(|e| what(&e))?;
                let der = cert.to_der().map_err(|e| what(&e))?;
                // Whom it chains to does not matter once it is pinned.
                let connector = native_tls::TlsConnector::builder()
                    .danger_accept_invalid_certs(true)
                    .build()
                    .map_err(|e| format!("TLS: {e}"))?;
                Some(Pinned { connector, der })
            }
        };
        Ok(Client {
            base,
            addr,
            token,
            tls,
        })
    }

    /// The base URL, for messages.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Sends `method path` (path without its leading slash); returns the
    /// status and the JSON body (`Null` when the body is not JSON). Every
    /// connect, read and write is bounded by [`TIMEOUT`].
    pub fn request(&self, method: &str, path: &str) -> Result<(u16, Value), String> {
        let head = format!(
            "{method} /{path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr, self.token
        );
        let fail = |e: std::io::Error| format!("{}: {e}", self.base);
        let stream = TcpStream::connect_timeout(&self.addr, TIMEOUT)
            .map_err(|e| format!("cannot connect to {}: {e}", self.base))?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(fail)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(fail)?;
        let answer = match &self.tls {
            None => exchange(stream, &head).map_err(fail)?,
            Some(pinned) => {
                let stream = pinned
                    .connector
                    .connect(&self.addr.ip().to_string(), stream)
                    .map_err(|e| format!("TLS with {}: {e}", self.base))?;
                let served = stream.peer_certificate().ok().flatten();
                if served.and_then(|c| c.to_der().ok()).as_deref() != Some(&pinned.der[..]) {
                    return Err(format!(
                        "{}: the certificate served is not postoffice's tls.cert",
                        self.base
                    ));
                }
                exchange(stream, &head).map_err(fail)?
            }
        };
        parse(&answer).ok_or_else(|| format!("{}: not an HTTP answer", self.base))
    }
}

/// Writes the request, reads the answer until the server closes.
fn exchange<S: Read + Write>(mut stream: S, head: &str) -> std::io::Result<Vec<u8>> {
    stream.write_all(head.as_bytes())?;
    stream.flush()?;
    let mut answer = Vec::new();
    match stream.take(MAX_ANSWER).read_to_end(&mut answer) {
        // A TLS peer may close without close_notify once it has answered.
        Err(_) if !answer.is_empty() => Ok(answer),
        Err(e) => Err(e),
        Ok(_) => Ok(answer),
    }
}

/// The status and JSON body of an HTTP/1.1 answer read whole.
fn parse(answer: &[u8]) -> Option<(u16, Value)> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..end]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let mut body = answer[end + 4..].to_vec();
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// The data of a chunked body (RFC 9112 section 7.1), trailers ignored.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_plain_and_chunked() {
        let plain = b"HTTP/1.1 404 Not Found\r\ncontent-length: 21\r\n\r\n{\"error\": \"no such\"}";
        assert_eq!(
            parse(plain),
            Some((404, serde_json::json!({"error": "no such"})))
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n";
        assert_eq!(parse(chunked), Some((200, serde_json::json!({"a": 1}))));
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\n\r\nnot json").unwrap().1,
            Value::Null
        );
        assert_eq!(parse(b"garbage"), None);
        assert_eq!(dechunk(b"5\r\nab"), None, "cut short");
    }
}
