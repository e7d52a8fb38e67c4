//! Requests and responses between hyper's types (`http` crate) and
//! http-types (tide's and surf's): the client sends an http-types request
//! through hyper, the server hands hyper's request to tide. Bodies stream
//! through [`super::body`]; only an answer's body is taken whole, so that it
//! is written in one go with its head.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body::Body as _;
use http_types::headers::{HeaderName, HeaderValue};

use super::body::{Incoming, OnEnd, Outgoing};

/// What cannot cross from one model to the other, for a 400 or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unconvertible(pub String);

impl std::fmt::Display for Unconvertible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn version_from(v: http::Version) -> Option<http_types::Version> {
    match v {
        http::Version::HTTP_10 => Some(http_types::Version::Http1_0),
        http::Version::HTTP_11 => Some(http_types::Version::Http1_1),
        _ => None,
    }
}

/// Copies hyper's headers into an http-types message (`append` is its
/// `append_header`); http-types takes ASCII only.
fn copy_headers(
    from: &http::HeaderMap,
    mut append: impl FnMut(HeaderName, HeaderValue),
) -> Result<(), Unconvertible> {
    for (name, value) in from {
        let bad = || Unconvertible(format!("header {name} is not ASCII"));
        let value = HeaderValue::from_bytes(value.as_bytes().to_vec()).map_err(|_| bad())?;
        let name = HeaderName::from_bytes(name.as_str().as_bytes().to_vec()).map_err(|_| bad())?;
        append(name, value);
    }
    Ok(())
}

/// Copies an http-types message's headers into hyper's.
fn headers_to(from: &http_types::Headers) -> Result<http::HeaderMap, Unconvertible> {
    let mut to = http::HeaderMap::new();
    for (name, values) in from.iter() {
        let bad = || Unconvertible(format!("header {name} cannot be sent"));
        let n = http::HeaderName::from_bytes(name.as_str().as_bytes()).map_err(|_| bad())?;
        for v in values {
            to.append(
                &n,
                http::HeaderValue::from_str(v.as_str()).map_err(|_| bad())?,
            );
        }
    }
    Ok(to)
}

/// The server side: a request hyper read, for tide. `https` picks the URL
/// scheme; the host comes from `Host` (or the absolute-form target), else
/// from the address the connection came in on.
pub fn request_from_hyper(
    req: http::Request<hyper::body::Incoming>,
    peer: SocketAddr,
    local: SocketAddr,
    https: bool,
) -> Result<http_types::Request, Unconvertible> {
    let (parts, body) = req.into_parts();
    let method: http_types::Method = parts
        .method
        .as_str()
        .parse()
        .map_err(|_| Unconvertible(format!("method {} is not implemented", parts.method)))?;
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            let h = parts.headers.get(http::header::HOST)?;
            h.to_str().ok().map(str::to_string)
        })
        .unwrap_or_else(|| local.to_string());
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let scheme = if https { "https" } else { "http" };
    let url = http_types::Url::parse(&format!("{scheme}://{host}{target}"))
        .map_err(|e| Unconvertible(format!("request target {target:?} on host {host:?}: {e}")))?;
    let mut out = http_types::Request::new(method, url);
    out.set_version(version_from(parts.version));
    out.set_peer_addr(Some(peer));
    out.set_local_addr(Some(local));
    copy_headers(&parts.headers, |n, v| out.append_header(n, v))?;
    let len = body_length(&parts.headers);
    // set_body adds the body's type (octet-stream) where none was sent.
    let typed = out.header(http_types::headers::CONTENT_TYPE).is_some();
    out.set_body(http_types::Body::from_reader(
        Incoming::new(body, None),
        len,
    ));
    if !typed {
        out.remove_header(http_types::headers::CONTENT_TYPE);
    }
    Ok(out)
}

/// The declared Content-Length, when there is exactly one valid one.
fn body_length(headers: &http::HeaderMap) -> Option<usize> {
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let first = values.next()?;
    let n = first.to_str().ok()?.trim().parse().ok()?;
    values.all(|v| v == first).then_some(n)
}

/// The server side: tide's answer for hyper, its body read whole (answers
/// are small JSON) so head and body leave in one write.
pub async fn response_to_hyper(
    mut res: http_types::Response,
) -> Result<http::Response<Outgoing>, Unconvertible> {
    let body = res
        .take_body()
        .into_bytes()
        .await
        .map_err(|e| Unconvertible(format!("answer body: {e}")))?;
    let mut out = http::Response::new(Outgoing::full(body));
    *out.status_mut() = http::StatusCode::from_u16(res.status() as u16)
        .map_err(|e| Unconvertible(format!("status: {e}")))?;
    let mut headers = headers_to(res.as_ref())?;
    // hyper writes the length it knows from the body.
    headers.remove(http::header::CONTENT_LENGTH);
    headers.remove(http::header::TRANSFER_ENCODING);
    if out.body().is_end_stream() {
        // http-types types even an empty body.
        headers.remove(http::header::CONTENT_TYPE);
    }
    *out.headers_mut() = headers;
    Ok(out)
}

/// The client side: an http-types request for hyper, its body streamed.
/// The target is sent in origin form with `Host` from the URL.
pub fn request_to_hyper(
    mut req: http_types::Request,
) -> Result<http::Request<Outgoing>, Unconvertible> {
    let url = req.url();
    let mut target = url.path().to_string();
    if let Some(q) = url.query() {
        target.push('?');
        target.push_str(q);
    }
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => return Err(Unconvertible(format!("no host in {url}"))),
    };
    let method = http::Method::from_bytes(req.method().to_string().as_bytes())
        .map_err(|e| Unconvertible(format!("method: {e}")))?;
    let uri: http::Uri = target
        .parse()
        .map_err(|e| Unconvertible(format!("target {target:?}: {e}")))?;
    let mut headers = headers_to(req.as_ref())?;
    headers.remove(http::header::CONTENT_LENGTH);
    headers.remove(http::header::TRANSFER_ENCODING);
    if !headers.contains_key(http::header::HOST) {
        let value =
            http::HeaderValue::from_str(&host).map_err(|e| Unconvertible(format!("host: {e}")))?;
        headers.insert(http::header::HOST, value);
    }
    let mut out = http::Request::new(Outgoing::stream(req.take_body()));
    *out.method_mut() = method;
    *out.uri_mut() = uri;
    *out.headers_mut() = headers;
    Ok(out)
}

/// The client side: hyper's response as http-types, its body streamed;
/// `on_end` runs once the body has been read to its end.
pub fn response_from_hyper(
    res: http::Response<hyper::body::Incoming>,
    on_end: Option<OnEnd>,
) -> Result<http_types::Response, Unconvertible> {
    let (parts, body) = res.into_parts();
    let status = http_types::StatusCode::try_from(parts.status.as_u16())
        .map_err(|_| Unconvertible(format!("status {} unknown", parts.status)))?;
    let mut out = http_types::Response::new(status);
    out.set_version(version_from(parts.version));
    copy_headers(&parts.headers, |n, v| out.append_header(n, v))?;
    let len = body_length(&parts.headers);
    let typed = out.header(http_types::headers::CONTENT_TYPE).is_some();
    out.set_body(http_types::Body::from_reader(
        Incoming::new(body, on_end),
        len,
    ));
    if !typed {
        out.remove_header(http_types::headers::CONTENT_TYPE);
    }
    Ok(out)
}

/// A bodiless answer's bytes, for errors written before or after hyper
/// (the JSON `{"error": ...}` of every error answer).
pub fn error_bytes(status: u16, message: &str) -> Vec<u8> {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let body = serde_json::json!({ "error": message }).to_string();
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if status == 503 {
        out.push_str("retry-after: 1\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// A JSON error answer as hyper sends it.
pub fn error_response(status: http::StatusCode, message: &str) -> http::Response<Outgoing> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut out = http::Response::new(Outgoing::full(Bytes::from(body)));
    *out.status_mut() = status;
    out.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_are_whole_json_answers() {
        let bytes = error_bytes(505, "HTTP/2.0 is not supported");
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 505 HTTP Version Not Supported\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("connection: close"));
        assert_eq!(body, r#"{"error":"HTTP/2.0 is not supported"}"#);
        assert!(String::from_utf8(error_bytes(503, "busy"))
            .unwrap()
            .contains("retry-after: 1\r\n"));
    }

    #[test]
    fn a_request_leaves_in_origin_form_with_its_host() {
        let url =
            http_types::Url::parse("https://po.test:8025/v1/messages?from=&to=a%40b").unwrap();
        let mut req = http_types::Request::new(http_types::Method::Post, url);
        req.insert_header("authorization", "Bearer t");
        req.set_body(http_types::Body::from_bytes(b"hello".to_vec()));
        let out = request_to_hyper(req).unwrap();
        assert_eq!(out.method(), http::Method::POST);
        assert_eq!(out.uri(), "/v1/messages?from=&to=a%40b");
        assert_eq!(out.headers()["host"], "po.test:8025");
        assert_eq!(out.headers()["authorization"], "Bearer t");
        assert_eq!(http_body::Body::size_hint(out.body()).exact(), Some(5));
    }
}
