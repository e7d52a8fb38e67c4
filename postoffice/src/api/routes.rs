//! The endpoints: the hand-off (raw messages), JSON messages, status, queue
//! control, health and metrics. Every error is JSON `{"error": "..."}`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::{AsyncBufReadExt, AsyncRead, AsyncReadExt, FutureExt};
use hedwig::envelope::Envelope;
use hedwig::handoff::{self, batch};
use hedwig::id::Id;
use serde_json::{json, Value};
use tide::{Request, Response, StatusCode};

use super::State;
use crate::compose::{self, ComposeError, JsonMessage};
use crate::queue::record::{Record, State as RcptState};
use crate::queue::AddError;

/// The router.
pub fn app(state: State) -> tide::Server<State> {
    let mut app = tide::with_state(state);
    app.at("/healthz")
        .get(|_| async { Ok(json_response(StatusCode::Ok, json!({"status": "ok"}))) });
    app.at("/metrics").get(metrics);
    app.at(handoff::PATH).post(post_message);
    app.at(batch::PATH).post(post_batch);
    app.at("/v1/messages/:id")
        .get(get_message)
        .delete(delete_message);
    app.at("/v1/messages/:id/flush").post(flush_message);
    app.at("/v1/queue").get(get_queue);
    app.at("/v1/queue/flush").post(flush);
    app.at("*")
        .options(options)
        .all(|_| async { Ok(error(StatusCode::NotFound, "no such endpoint")) });
    app.at("/")
        .options(options)
        .all(|_| async { Ok(error(StatusCode::NotFound, "no such endpoint")) });
    // GET / and /messages/:id: the status page; other methods fall to the above.
    super::status::mount(&mut app);
    app
}

/// `OPTIONS` anywhere: what HAProxy's default `option httpchk` sends
/// (`OPTIONS / HTTP/1.0`); any 2xx keeps the server up.
async fn options(_req: Request<State>) -> tide::Result {
    let mut r = Response::new(StatusCode::NoContent);
    r.insert_header("Allow", "GET, POST, DELETE, OPTIONS");
    Ok(r)
}

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut r = Response::new(status);
    r.set_body(body);
    r
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    json_response(status, json!({ "error": message.to_string() }))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Compares without an early exit, so timing tells nothing of the token.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}

/// `Some(401 response)` unless the request carries an accepted bearer token.
fn refuse_unauthorized(req: &Request<State>) -> Option<Response> {
    let header = req
        .header(handoff::AUTHORIZATION)
        .map(|v| v.last().as_str().to_string())
        .unwrap_or_default();
    let Some(token) = handoff::bearer_token(&header) else {
        return Some(unauthorized(handoff::CHALLENGE, "missing bearer token"));
    };
    // Check every token, so which one matched does not show in the timing either.
    let ok = req.state().tokens.iter().fold(false, |ok, t| {
        constant_time_eq(token.as_bytes(), t.as_bytes()) | ok
    });
    let challenge = format!("{}, error=\"invalid_token\"", handoff::CHALLENGE);
    (!ok).then(|| unauthorized(&challenge, "invalid bearer token"))
}

/// A 401 with its challenge (RFC 9110 section 11.6.1).
fn unauthorized(challenge: &str, message: &str) -> Response {
    let mut r = error(StatusCode::Unauthorized, message);
    r.insert_header("WWW-Authenticate", challenge);
    r
}

macro_rules! authorized {
    ($req:expr) => {
        if let Some(response) = refuse_unauthorized(&$req) {
            return Ok(response);
        }
    };
}

/// Reads the body, refusing more than the limit (413) or a client too slow.
/// The limit leaves room for what the previous hop added to the message
/// (`handoff::HOP_ALLOWANCE`): what mailman admits under the same limit fits.
async fn read_body(req: &mut Request<State>) -> Result<Vec<u8>, Response> {
    let limit = req.state().max_message_size;
    let max = limit.saturating_add(handoff::HOP_ALLOWANCE);
    let too_large = || {
        error(
            StatusCode::PayloadTooLarge,
            format!("message larger than {limit} bytes"),
        )
    };
    if req.len().is_some_and(|n| !handoff::fits(n as u64, limit)) {
        return Err(too_large());
    }
    let timeout = req.state().body_timeout;
    let mut body = Vec::new();
    let reader = req.take_body().into_reader();
    let read = async {
        reader
            .take(max + 1)
            .read_to_end(&mut body)
            .await
            .map_err(|e| e.to_string())
    }
    .or(async {
        smol::Timer::after(timeout).await;
        Err("request body timed out".to_string())
    })
    .await;
    if let Err(e) = read {
        return Err(error(StatusCode::BadRequest, e));
    }
    if !handoff::fits(body.len() as u64, limit) {
        return Err(too_large());
    }
    Ok(body)
}

async fn post_message(mut req: Request<State>) -> tide::Result {
    authorized!(req);
    let content_type = content_type(&req);
    let key = match req.header(handoff::IDEMPOTENCY_KEY) {
        None => None,
        Some(v) => {
            let k = v.last().as_str().to_string();
            if let Err(e) = handoff::check_key(&k) {
                return Ok(error(StatusCode::BadRequest, e));
            }
            Some(k)
        }
    };
    let (envelope, message) = match content_type.as_str() {
        "message/rfc822" => {
            let envelope = match handoff::parse_query(req.url().query().unwrap_or("")) {
                Ok(e) => e,
                Err(e) => return Ok(error(StatusCode::BadRequest, format!("envelope: {e}"))),
            };
            if req
                .len()
                .is_some_and(|n| !handoff::fits(n as u64, req.state().max_message_size))
            {
                let max = req.state().max_message_size;
                return Ok(error(
                    StatusCode::PayloadTooLarge,
                    format!("message larger than {max} bytes"),
                ));
            }
            // Streamed to the queue's file as it arrives, never held whole;
            // bare CR or LF are repaired on the way.
            let deadline = std::time::Instant::now() + req.state().body_timeout;
            let mut body = hedwig::timeout::Deadline::new(req.take_body().into_reader(), deadline);
            let client = client_ip(&req);
            return accept(req.state(), envelope, key, &mut body, client).await;
        }
        "application/json" => {
            let body = match read_body(&mut req).await {
                Ok(b) => b,
                Err(r) => return Ok(r),
            };
            let msg: JsonMessage = match serde_json::from_slice(&body) {
                Ok(m) => m,
                Err(e) => return Ok(error(StatusCode::BadRequest, format!("invalid JSON: {e}"))),
            };
            let now = SystemTime::now();
            let message_id = format!("{}@{}", hedwig::id::new(now), req.state().hostname);
            match compose::compose(&msg, &message_id, now) {
                Ok(x) => x,
                Err(ComposeError::BadRequest(e)) => return Ok(error(StatusCode::BadRequest, e)),
                Err(ComposeError::Unprocessable(e)) => {
                    return Ok(error(StatusCode::UnprocessableEntity, e))
                }
            }
        }
        "" => {
            return Ok(error(
                StatusCode::UnsupportedMediaType,
                "Content-Type must be message/rfc822 or application/json",
            ))
        }
        other => {
            return Ok(error(
                StatusCode::UnsupportedMediaType,
                format!("unsupported Content-Type {other}: use message/rfc822 or application/json"),
            ))
        }
    };
    if message.len() as u64 > req.state().max_message_size {
        return Ok(error(StatusCode::PayloadTooLarge, "message too large"));
    }
    accept(
        req.state(),
        envelope,
        key,
        &mut message.as_slice(),
        client_ip(&req),
    )
    .await
}

/// The request's media type, lowercase, without parameters ("" if none).
fn content_type(req: &Request<State>) -> String {
    req.content_type()
        .map(|m| m.essence().to_ascii_lowercase())
        .unwrap_or_default()
}

fn client_ip(req: &Request<State>) -> Option<std::net::IpAddr> {
    req.peer_addr()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.ip())
}

/// Queues durably (streaming `body`), then answers 202; a repeated key
/// answers the first id.
async fn accept(
    state: &State,
    envelope: Envelope,
    key: Option<String>,
    body: &mut (dyn AsyncRead + Unpin + Send),
    client: Option<std::net::IpAddr>,
) -> tide::Result {
    let trace = received(state, client, &envelope);
    let result = state
        .queue
        .add(&envelope, key.as_deref(), trace, body, now_ms())
        .await;
    let (status, body) = match answer(state, &envelope, result) {
        (status, Ok(id)) => (status, json!({ "id": id })),
        (status, Err(e)) => (status, json!({ "error": e })),
    };
    Ok(json_response(status, body))
}

/// RFC 5321 section 4.4's trace, as every MTA hop adds one: who posted
/// it, over what, and the id to grep postoffice's log for.
fn received<'a>(
    state: &'a State,
    client: Option<std::net::IpAddr>,
    envelope: &'a Envelope,
) -> impl FnOnce(Id) -> String + Send + 'a {
    move |id: Id| {
        let ip = client.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        hedwig::message::Trace {
            helo: &ip.to_string(),
            client_ip: ip,
            by: &state.hostname,
            software: "hedwig postoffice",
            protocol: if state.https { "HTTPS" } else { "HTTP" },
            id: &id.to_string(),
            for_rcpt: envelope.sole_recipient(),
            time: SystemTime::now(),
        }
        .received()
    }
}

/// What queuing one message answers, the single hand-off and each part of
/// a batch alike: 202 with its id, or an error status and why.
fn answer(
    state: &State,
    envelope: &Envelope,
    result: Result<(Id, bool), AddError>,
) -> (StatusCode, Result<String, String>) {
    let failed = |status, e: &dyn std::fmt::Display| (status, Err(e.to_string()));
    match result {
        Ok((id, true)) => {
            state.metrics.accepted(envelope.to.len());
            let to: Vec<&str> = envelope.to.iter().map(|a| a.as_str()).collect();
            log::info!(
                "{id}: queued from=<{}> to=<{}>",
                envelope.sender(),
                to.join(">,<")
            );
            (StatusCode::Accepted, Ok(id.to_string()))
        }
        Ok((id, false)) => {
            log::info!("{id}: repeated Idempotency-Key, not queued again");
            (StatusCode::Accepted, Ok(id.to_string()))
        }
        Err(e @ AddError::KeyBusy) => {
            failed(StatusCode::ServiceUnavailable, &format!("{e}; retry"))
        }
        Err(e @ AddError::TooLarge { .. }) => failed(StatusCode::PayloadTooLarge, &e),
        Err(e @ (AddError::Empty | AddError::Body(_))) => failed(StatusCode::BadRequest, &e),
        Err(e @ AddError::Io(_)) => {
            log::error!("{e}");
            failed(StatusCode::ServiceUnavailable, &e)
        }
    }
}

/// `POST /v1/batch` (see `hedwig::handoff::batch`). Each part is written
/// as it streams in, as a single hand-off's message is (never the whole
/// body in one buffer), and waits, staged, for the rest: what the staged
/// parts hold until their commit is bounded by `max_batch_size`. Once the
/// whole body has been read and found well formed, the parts are committed
/// side by side (their syncs share the queue's group commit). A body that
/// breaks off or does not parse is a 400 and queues none of its parts.
async fn post_batch(mut req: Request<State>) -> tide::Result {
    authorized!(req);
    let content_type = content_type(&req);
    if content_type != batch::CONTENT_TYPE {
        return Ok(error(
            StatusCode::UnsupportedMediaType,
            format!("Content-Type must be {}", batch::CONTENT_TYPE),
        ));
    }
    let deadline = std::time::Instant::now() + req.state().body_timeout;
    let body = hedwig::timeout::Deadline::new(req.take_body().into_reader(), deadline);
    let mut body = futures_lite::io::BufReader::new(body);
    let (state, client) = (req.state(), client_ip(&req));
    let mut parts = Vec::new();
    let mut total = 0u64;
    loop {
        let n = parts.len() + 1;
        let bad = |why: String| {
            Ok(error(
                StatusCode::BadRequest,
                format!("batch part {n}: {why}"),
            ))
        };
        let mut line = Vec::new();
        let read = (&mut body)
            .take(batch::MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await;
        match read {
            Ok(0) if parts.is_empty() => return Ok(error(StatusCode::BadRequest, "empty batch")),
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return bad(format!("request body: {e}")),
        }
        if n > batch::MAX_PARTS {
            return bad(format!("more than {} parts", batch::MAX_PARTS));
        }
        let head = match batch::parse_head(&line) {
            Ok(head) => head,
            Err(e) => return bad(e),
        };
        // Staged parts hold their bytes until the commit (up to the spool
        // writer's buffer each): what bounds a batch's memory.
        total = total.saturating_add(head.len);
        if total > state.max_batch_size {
            let max = state.max_batch_size;
            let why = format!("batch carries more than {max} bytes of messages; send them alone");
            return Ok(error(StatusCode::PayloadTooLarge, why));
        }
        let mut message = (&mut body).take(head.len);
        let trace = received(state, client, &head.envelope);
        let key = Some(head.key.as_str());
        let staged = state
            .queue
            .stage(&head.envelope, key, trace, &mut message, now_ms())
            .await;
        // What staging did not read (a known key reads nothing, a message
        // too large stops early) is skipped to reach the next part.
        if let Err(e) = futures_lite::io::copy(&mut message, &mut futures_lite::io::sink()).await {
            return bad(format!("request body: {e}"));
        }
        if message.limit() > 0 {
            return bad(format!("body ends inside its {} bytes", head.len));
        }
        let mut crlf = [0; 2];
        match body.read_exact(&mut crlf).await {
            Ok(()) if &crlf == b"\r\n" => {}
            _ => return bad("message not followed by CRLF (wrong LENGTH?)".into()),
        }
        if let Err(AddError::Body(e)) = &staged {
            return bad(format!("request body: {e}"));
        }
        parts.push((head.envelope, staged));
    }
    let committed = parts.into_iter().map(|(envelope, staged)| async move {
        let result = match staged {
            Ok(staged) => state.queue.commit(staged).await,
            Err(e) => Err(e),
        };
        let (status, said) = answer(state, &envelope, result);
        batch::PartAnswer {
            status: status.into(),
            id: said.as_ref().ok().cloned(),
            error: said.err(),
        }
    });
    let results = futures_util::future::join_all(committed).await;
    let answer = serde_json::to_value(batch::Answer { results })?;
    Ok(json_response(StatusCode::Ok, answer))
}

/// A time in ms since 1970 as RFC 3339, UTC, to the second.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A record as the API shows it.
pub fn view(r: &Record) -> Value {
    let recipients: Vec<Value> = r
        .recipients
        .iter()
        .map(|x| {
            json!({
                "address": x.address,
                "state": x.state.name(),
                "attempts": x.attempts,
                "last_error": x.last_error,
                "next_attempt": x.next_attempt.map(rfc3339),
                "relay": x.relay.as_ref().map(|r| r.to_string()),
                "reply": x.reply.as_ref().map(|r| r.to_lines().replace('\n', " ")),
                "history": x.history.iter().map(|a| json!({
                    "at": rfc3339(a.at),
                    "state": a.state.name(),
                    "relay": a.relay.as_ref().map(|r| r.to_string()),
                    "text": a.text,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "id": r.id,
        "from": r.sender(),
        "size": r.size,
        "received_at": rfc3339(r.received_at),
        "recipients": recipients,
    })
}

async fn get_message(req: Request<State>) -> tide::Result {
    authorized!(req);
    let text = req.param("id").unwrap_or_default();
    let Ok(id) = text.parse::<Id>() else {
        return Ok(error(StatusCode::NotFound, format!("no message {text}")));
    };
    Ok(match req.state().queue.get(id).await {
        Ok(Some(r)) => json_response(StatusCode::Ok, view(&r)),
        Ok(None) => error(StatusCode::NotFound, format!("no message {id}")),
        Err(e) => error(
            StatusCode::ServiceUnavailable,
            format!("cannot read {id}: {e}"),
        ),
    })
}

async fn delete_message(req: Request<State>) -> tide::Result {
    authorized!(req);
    let text = req.param("id").unwrap_or_default();
    let Ok(id) = text.parse::<Id>() else {
        return Ok(error(StatusCode::NotFound, format!("no message {text}")));
    };
    Ok(match req.state().queue.delete(id).await {
        Ok(true) => {
            log::info!("{id}: deleted through the API");
            json_response(StatusCode::Ok, json!({ "id": id, "deleted": true }))
        }
        Ok(false) => error(StatusCode::NotFound, format!("no message {id}")),
        Err(e) => error(
            StatusCode::ServiceUnavailable,
            format!("cannot delete {id}: {e}"),
        ),
    })
}

async fn get_queue(req: Request<State>) -> tide::Result {
    authorized!(req);
    let mut offset = 0usize;
    let mut limit = 100usize;
    for (k, v) in req.url().query_pairs() {
        let n: Option<usize> = v.parse().ok();
        match (&*k, n) {
            ("offset", Some(n)) => offset = n,
            ("limit", Some(n)) if (1..=1000).contains(&n) => limit = n,
            _ => {
                return Ok(error(
                    StatusCode::BadRequest,
                    format!("bad query parameter {k}={v}: offset=N, limit=1..1000"),
                ))
            }
        }
    }
    let queue = &req.state().queue;
    let counts = queue.counts();
    let by_state: serde_json::Map<String, Value> = RcptState::ALL
        .iter()
        .map(|s| {
            (
                s.name().to_string(),
                json!(counts.by_state.get(s).copied().unwrap_or(0)),
            )
        })
        .collect();
    let (total, page) = match queue.page(offset, limit).await {
        Ok(p) => p,
        Err(e) => {
            return Ok(error(
                StatusCode::ServiceUnavailable,
                format!("cannot read the queue: {e}"),
            ))
        }
    };
    Ok(json_response(
        StatusCode::Ok,
        json!({
            "messages": counts.messages,
            "by_state": by_state,
            "by_domain": counts.by_domain,
            "total": total,
            "offset": offset,
            "limit": limit,
            "items": page.iter().map(view).collect::<Vec<_>>(),
        }),
    ))
}

async fn flush(req: Request<State>) -> tide::Result {
    authorized!(req);
    let n = req.state().queue.flush(now_ms());
    log::info!("queue flush: {n} messages due now");
    Ok(json_response(StatusCode::Accepted, json!({ "flushed": n })))
}

async fn flush_message(req: Request<State>) -> tide::Result {
    authorized!(req);
    let text = req.param("id").unwrap_or_default();
    let Ok(id) = text.parse::<Id>() else {
        return Ok(error(StatusCode::NotFound, format!("no message {text}")));
    };
    Ok(match req.state().queue.flush_one(id, now_ms()).await {
        Ok(Some(deferred)) => {
            log::info!("{id}: flushed through the API");
            json_response(
                StatusCode::Accepted,
                json!({ "id": id, "flushed": deferred }),
            )
        }
        Ok(None) => error(StatusCode::NotFound, format!("no message {id}")),
        Err(e) => error(
            StatusCode::ServiceUnavailable,
            format!("cannot read {id}: {e}"),
        ),
    })
}

async fn metrics(req: Request<State>) -> tide::Result {
    authorized!(req);
    let text = req.state().metrics.render(&req.state().queue.counts());
    let mut r = Response::new(StatusCode::Ok);
    r.set_body(text);
    r.set_content_type("text/plain; version=0.0.4");
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(!constant_time_eq(b"x", b""));
        assert!(constant_time_eq(b"", b""));
    }
}
