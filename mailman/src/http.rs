//! The hand-off to postoffice over HTTP(S): surf's API on `hedwig::http`'s
//! hyper client (one TLS connector built at start, a keep-alive pool of
//! `concurrency` connections, `TCP_NODELAY`), the contract of
//! `hedwig::handoff`, and failover over the configured URLs.
//!
//! Failover: the URLs are tried in order. One that fails (unreachable,
//! timed out, 5xx, 429, 401) is put in backoff (doubling from `retry.first`
//! to `retry.max`) and skipped while it lasts, the next one taking the
//! message at once; when its backoff ends, the next hand-off tries it first
//! again, and once it answers it is used as before. While every URL is in
//! backoff they are all still tried, in order.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, FutureExt};
use hedwig::config::Upstream;
use hedwig::handoff::{self, batch};
use hedwig::http::client::Stale;
use hedwig::id::Id;
use hedwig::retry::Backoff;
use hedwig::spool::{Body, Spool};

pub use hedwig::handoff::Outcome;

/// How much of an answer's body is read (and logged, on one line).
const MAX_ANSWER: u64 = 64 << 10;
/// How much of a batch's answer is read: a result per part, up to
/// `batch::MAX_PARTS` of them.
const MAX_BATCH_ANSWER: u64 = 1 << 20;

/// A client for postoffice's message endpoint; cheap to clone.
#[derive(Clone, Debug)]
pub struct Handoff {
    client: surf::Client,
    targets: Arc<Mutex<Vec<Target>>>,
    token: Arc<str>,
    timeout: Duration,
    retry: Backoff,
    batch: usize,
    batch_size: usize,
}

/// One postoffice URL and its health.
#[derive(Debug)]
struct Target {
    url: String,
    endpoint: String,
    batch_endpoint: String,
    failures: u32,
    until: Option<Instant>,
}

/// Why one attempt at one URL did not get an answer.
enum Failure {
    /// A pooled connection turned out closed: try again on a new one.
    Stale,
    /// Anything else, for the log.
    Other(String),
}

impl Handoff {
    /// A client for `upstream`'s URLs (in order) with `token` (read by the
    /// caller, who names the file in its error), each
    /// exchange bounded by its timeout, trusting its `ca_file` besides the
    /// system's CAs, keeping up to `concurrency` connections per URL open; a
    /// failing URL waits `retry` before it is preferred again.
    pub fn new(upstream: &Upstream, token: String) -> Result<Handoff, String> {
        let client = hedwig::http::Client::new(
            upstream.ca_file.as_deref(),
            upstream.timeout,
            upstream.concurrency,
        )?;
        let targets = upstream
            .urls
            .iter()
            .map(|url| Target {
                url: url.clone(),
                endpoint: format!("{}{}", url.trim_end_matches('/'), handoff::PATH),
                batch_endpoint: format!("{}{}", url.trim_end_matches('/'), batch::PATH),
                failures: 0,
                until: None,
            })
            .collect();
        Ok(Handoff {
            client: surf::Client::with_http_client(client),
            targets: Arc::new(Mutex::new(targets)),
            token: token.into(),
            timeout: upstream.timeout,
            retry: upstream.retry,
            batch: upstream.batch,
            batch_size: upstream.batch_size,
        })
    }

    /// Most messages one hand-off takes.
    pub fn batch(&self) -> usize {
        self.batch
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Target>> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The URLs to try now, as (index, endpoint): those not in backoff in
    /// their order, then those in backoff, soonest back first.
    fn order(&self, now: Instant) -> Vec<(usize, String, String)> {
        let targets = self.lock();
        let mut order: Vec<usize> = (0..targets.len()).collect();
        // Stable: the healthy keep the configured order.
        order.sort_by_key(|&i| targets[i].until.filter(|u| *u > now));
        order
            .into_iter()
            .map(|i| (i, targets[i].url.clone(), targets[i].endpoint.clone()))
            .collect()
    }

    /// Records whether URL `i` answered.
    fn answered(&self, i: usize, ok: bool) {
        let mut targets = self.lock();
        let t = &mut targets[i];
        if ok {
            if t.failures > 0 {
                log::info!("postoffice {} answers again", t.url);
            }
            t.failures = 0;
            t.until = None;
        } else {
            t.failures = t.failures.saturating_add(1);
            let wait = self.retry.wait(t.failures);
            t.until = Some(Instant::now() + wait);
        }
    }

    /// Hands spooled message `id` off, streaming its bytes from the spool
    /// file, to the first URL that takes it.
    pub async fn send(&self, spool: &Spool, id: Id) -> Outcome {
        let mut failed = Vec::new();
        let order = self.order(Instant::now());
        let last = order.len().saturating_sub(1);
        for (n, (i, url, endpoint)) in order.into_iter().enumerate() {
            let outcome = self.send_to(&endpoint, spool, id).await;
            self.answered(i, !matches!(outcome, Outcome::Retry(_)));
            match outcome {
                Outcome::Retry(why) => {
                    if n < last {
                        log::warn!("{id}: postoffice {url} failed ({why}); trying the next one");
                    }
                    failed.push(format!("{url}: {why}"));
                }
                done => return done,
            }
        }
        Outcome::Retry(failed.join("; "))
    }

    /// Hands off `ids` together where they can go together: read in one
    /// trip to the blocking pool as long as they fit in `batch_size` bytes
    /// in all and sent in one `POST /v1/batch`, any other alone. One
    /// outcome per id.
    pub async fn send_many(&self, spool: &Spool, ids: Vec<Id>) -> Vec<(Id, Outcome)> {
        if let [id] = ids[..] {
            return vec![(id, self.send(spool, id).await)];
        }
        let mut done = Vec::with_capacity(ids.len());
        let mut parts = Vec::new();
        let mut alone = Vec::new();
        for (id, read) in spool.read_batch(ids, self.batch_size as u64).await {
            match read {
                Err(e) => done.push((id, Outcome::Refused(format!("cannot read spool file: {e}")))),
                Ok(Some((head, bytes))) => parts.push((id, head, bytes)),
                Ok(None) => alone.push(id),
            }
        }
        if parts.len() == 1 {
            alone.extend(parts.pop().map(|(id, ..)| id));
        }
        if !parts.is_empty() {
            let mut body = Vec::with_capacity(parts.len() * 3);
            let mut batched = Vec::with_capacity(parts.len());
            for (id, head, bytes) in parts {
                let line = batch::part_line(&id.to_string(), &head.envelope, bytes.len());
                batched.push((id, bytes.len() as u64));
                body.push(Piece::Bytes(line.into_bytes()));
                body.push(Piece::Kept(bytes));
                body.push(Piece::Bytes(batch::PART_END.to_vec()));
            }
            match self.send_batch(&batched, body).await {
                Some(outcomes) => done.extend(batched.iter().map(|(id, _)| *id).zip(outcomes)),
                // Not taken as a batch (an older postoffice, a proxy that
                // refuses the path): each goes alone and has its own answer.
                None => alone.extend(batched.iter().map(|(id, _)| *id)),
            }
        }
        for id in alone {
            done.push((id, self.send(spool, id).await));
        }
        done
    }

    /// One batch to the first URL that answers it: an outcome per part, or
    /// None when postoffice refused the batch as such (its parts are then
    /// sent alone, each judged on its own).
    async fn send_batch(&self, parts: &[(Id, u64)], body: Vec<Piece>) -> Option<Vec<Outcome>> {
        let body = Arc::new(Pieces(body));
        let mut failed = Vec::new();
        let order = self.order(Instant::now());
        let last = order.len().saturating_sub(1);
        for (n, (i, url, _)) in order.into_iter().enumerate() {
            let endpoint = self.lock()[i].batch_endpoint.clone();
            let mut outcome = Outcome::Retry("connections closed before an answer".into());
            for _ in 0..2 {
                match self.post_batch(&endpoint, parts, &body).await {
                    Ok(Ok(outcomes)) => {
                        self.answered(i, true);
                        return Some(outcomes);
                    }
                    Ok(Err(o)) => outcome = o,
                    Err(Failure::Stale) => continue,
                    Err(Failure::Other(why)) => outcome = Outcome::Retry(why),
                }
                break;
            }
            self.answered(i, !matches!(outcome, Outcome::Retry(_)));
            match outcome {
                Outcome::Retry(why) => {
                    if n < last {
                        log::warn!(
                            "batch of {}: postoffice {url} failed ({why}); trying the next one",
                            parts.len()
                        );
                    }
                    failed.push(format!("{url}: {why}"));
                }
                Outcome::Refused(why) => {
                    log::warn!(
                        "batch of {}: refused by postoffice {url} ({why}); sending each alone",
                        parts.len()
                    );
                    return None;
                }
                Outcome::Accepted => unreachable!("a batch's 2xx is read part by part"),
            }
        }
        let why = failed.join("; ");
        Some(parts.iter().map(|_| Outcome::Retry(why.clone())).collect())
    }

    /// One batch exchange: the parts' outcomes on a 200 whose answer has
    /// one result per part, else the batch's own outcome (never Accepted).
    async fn post_batch(
        &self,
        endpoint: &str,
        parts: &[(Id, u64)],
        body: &Arc<Pieces>,
    ) -> Result<Result<Vec<Outcome>, Outcome>, Failure> {
        let started = Instant::now();
        let (status, answer) = self
            .exchange(
                self.client
                    .post(endpoint)
                    .header(handoff::AUTHORIZATION, handoff::bearer(&self.token))
                    .content_type(batch::CONTENT_TYPE)
                    .body(surf::Body::from_reader(
                        PiecesReader::new(body.clone()),
                        Some(body.len()),
                    )),
                MAX_BATCH_ANSWER,
            )
            .await?;
        let latency = started.elapsed().as_secs_f64() * 1000.0;
        let results = match (status, serde_json::from_slice::<batch::Answer>(&answer)) {
            (200, Ok(a)) if a.results.len() == parts.len() => a.results,
            (200, _) => {
                // Some parts may be queued: their keys make the retry safe.
                let why = format!(
                    "unreadable batch answer: {}",
                    summary(&String::from_utf8_lossy(&answer))
                );
                return Ok(Err(Outcome::Retry(why)));
            }
            (status, _) => {
                let why = summary(&String::from_utf8_lossy(&answer));
                return Ok(Err(match handoff::outcome(status, &why) {
                    Outcome::Accepted => {
                        Outcome::Retry(format!("unexpected HTTP {status} to a batch"))
                    }
                    other => other,
                }));
            }
        };
        let n = parts.len();
        let outcomes = parts
            .iter()
            .zip(results)
            .map(|((id, size), r)| {
                let response = r.id.or(r.error).unwrap_or_default();
                log::info!(
                    "{id}: hand-off status={} latency={latency:.1}ms size={size} batch={n} response={}",
                    r.status,
                    one_line(&response)
                );
                handoff::outcome(r.status, &response)
            })
            .collect();
        Ok(Ok(outcomes))
    }

    /// One hand-off to one URL, sent again at once on a new connection when
    /// a pooled one turns out closed.
    async fn send_to(&self, endpoint: &str, spool: &Spool, id: Id) -> Outcome {
        for _ in 0..2 {
            match self.post(endpoint, spool, id).await {
                Ok(outcome) => return outcome,
                Err(Failure::Stale) => continue,
                Err(Failure::Other(why)) => return Outcome::Retry(why),
            }
        }
        Outcome::Retry("connections closed before an answer".into())
    }

    async fn post(&self, endpoint: &str, spool: &Spool, id: Id) -> Result<Outcome, Failure> {
        let (head, body, len) = match spool.open_message(id).await {
            Ok(x) => x,
            Err(e) => return Ok(Outcome::Refused(format!("cannot read spool file: {e}"))),
        };
        let url = format!("{endpoint}?{}", handoff::query(&head.envelope));
        // A small message was read whole with its head; a big one streams.
        let body = match body {
            Body::Bytes(bytes) => {
                let len = bytes.len();
                let body = Arc::new(Pieces(vec![Piece::Kept(bytes)]));
                surf::Body::from_reader(PiecesReader::new(body), Some(len))
            }
            Body::File(file) => {
                let file = smol::fs::File::from(file);
                let reader = futures_lite::io::BufReader::with_capacity(64 << 10, file);
                surf::Body::from_reader(reader, Some(len as usize))
            }
        };
        let started = Instant::now();
        let request = self
            .client
            .post(url)
            .header(handoff::AUTHORIZATION, handoff::bearer(&self.token))
            .header(handoff::IDEMPOTENCY_KEY, id.to_string())
            .content_type(handoff::CONTENT_TYPE)
            .body(body);
        let (status, body) = self.exchange(request, MAX_ANSWER).await?;
        let body = summary(&String::from_utf8_lossy(&body));
        log::info!(
            "{id}: hand-off status={status} latency={:.1}ms size={len} response={body}",
            started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(handoff::outcome(status, &body))
    }

    /// Sends `request` and reads up to `max` bytes of its answer, all within
    /// the timeout.
    async fn exchange(
        &self,
        request: surf::RequestBuilder,
        max: u64,
    ) -> Result<(u16, Vec<u8>), Failure> {
        let exchange = async {
            let mut response = request.await.map_err(|e| match e.downcast_ref::<Stale>() {
                Some(_) => Failure::Stale,
                None => Failure::Other(format!("postoffice unreachable: {e}")),
            })?;
            let mut body = Vec::new();
            let read = response.take_body().take(max).read_to_end(&mut body).await;
            read.map_err(|e| Failure::Other(format!("answer cut off: {e}")))?;
            Ok((u16::from(response.status()), body))
        };
        let limit = self.timeout;
        exchange
            .or(async {
                smol::Timer::after(limit).await;
                Err(Failure::Other(format!("no answer within {limit:?}")))
            })
            .await
    }
}

/// One piece of a request body.
enum Piece {
    /// A part line or a part's end.
    Bytes(Vec<u8>),
    /// A message, in one of the spool's kept buffers.
    Kept(Vec<u8>),
}

impl Piece {
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Bytes(b) | Piece::Kept(b) => b,
        }
    }
}

/// A request body as the pieces it is made of: a message read whole (one
/// piece), or a batch (part lines, messages, CRLFs), sent one after the
/// other, never copied into one buffer: at 256 KiB that buffer would be a
/// fresh allocation per hand-off, a page fault per 4 KiB of it under musl
/// (the static binaries). Shared, it is kept for a second try (a stale
/// connection, the next URL); the messages' buffers go back to the spool's
/// pool (`hedwig::spool::buffers`) when the last reader is done.
struct Pieces(Vec<Piece>);

impl Pieces {
    fn len(&self) -> usize {
        self.0.iter().map(|p| p.bytes().len()).sum()
    }
}

impl Drop for Pieces {
    fn drop(&mut self) {
        for piece in self.0.drain(..) {
            if let Piece::Kept(buf) = piece {
                hedwig::spool::buffers::give(buf);
            }
        }
    }
}

/// Reads [`Pieces`] from the start.
struct PiecesReader {
    pieces: Arc<Pieces>,
    /// The piece being read, and how far.
    at: (usize, usize),
}

impl PiecesReader {
    fn new(pieces: Arc<Pieces>) -> PiecesReader {
        PiecesReader { pieces, at: (0, 0) }
    }

    /// What is left of the current piece, past the empty ones.
    fn rest(&mut self) -> &[u8] {
        let pieces = &self.pieces.0;
        while self.at.0 < pieces.len() && self.at.1 == pieces[self.at.0].bytes().len() {
            self.at = (self.at.0 + 1, 0);
        }
        pieces
            .get(self.at.0)
            .map_or(&[], |p| &p.bytes()[self.at.1..])
    }
}

impl futures_lite::AsyncBufRead for PiecesReader {
    fn poll_fill_buf(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<&[u8]>> {
        std::task::Poll::Ready(Ok(self.get_mut().rest()))
    }

    fn consume(mut self: std::pin::Pin<&mut Self>, amt: usize) {
        self.at.1 += amt;
    }
}

impl futures_lite::AsyncRead for PiecesReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let rest = self.rest();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.at.1 += n;
        std::task::Poll::Ready(Ok(n))
    }
}

/// What an answer's body says, in one line for the log: the JSON error (or
/// the JSON itself), the title of an HTML page (a proxy's error page),
/// else the start of the text with its whitespace collapsed; never more
/// than 200 characters.
fn summary(body: &str) -> String {
    let body = body.trim();
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(body) {
        return one_line(json["error"].as_str().unwrap_or(&json.to_string()));
    }
    if body.starts_with('<') {
        let title = body
            .find("<title>")
            .and_then(|i| body[i + 7..].split("</title>").next())
            .map(|t| format!(" {:?}", one_line(t)))
            .unwrap_or_default();
        return format!("HTML page{title} ({} bytes)", body.len());
    }
    one_line(body)
}

fn one_line(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let line = words.join(" ");
    match line.char_indices().nth(200) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line,
    }
}

#[cfg(test)]
mod summary_tests {
    use super::summary;

    #[test]
    fn answers_become_one_short_line() {
        assert_eq!(summary(r#"{"id": "X1"}"#), r#"{"id":"X1"}"#);
        assert_eq!(summary("{\"error\": \"bad\\nthing\"}"), "bad thing");
        let page = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
        let want = format!(
            "HTML page \"502 Bad Gateway\" ({} bytes)",
            page.trim().len()
        );
        assert_eq!(summary(page), want);
        assert_eq!(summary("<p>no title"), "HTML page (11 bytes)");
        assert_eq!(summary("line one\n  line two"), "line one line two");
        assert_eq!(summary(&"x".repeat(300)).len(), 203);
    }
}

#[cfg(test)]
mod pieces_tests {
    use super::*;
    use futures_lite::AsyncBufReadExt;

    fn pieces() -> Arc<Pieces> {
        let bytes = |b: &[u8]| Piece::Bytes(b.to_vec());
        Arc::new(Pieces(vec![
            bytes(b"K1 3 q\r\n"),
            Piece::Kept(b"abc".to_vec()),
            bytes(b""),
            bytes(b"\r\n"),
            Piece::Kept(Vec::new()),
            bytes(b"end"),
        ]))
    }

    #[test]
    fn a_batch_reads_as_its_pieces_one_after_the_other() {
        let want = b"K1 3 q\r\nabc\r\nend";
        let body = pieces();
        assert_eq!(body.len(), want.len());
        smol::block_on(async {
            // In small reads, and again from the start (a second try).
            for _ in 0..2 {
                let mut reader = PiecesReader::new(body.clone());
                let (mut got, mut buf) = (Vec::new(), [0; 2]);
                loop {
                    let n = reader.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                assert_eq!(got, want);
            }
            // As lines, through the buffered face hyper's body uses.
            let mut lines = Vec::new();
            let mut reader = PiecesReader::new(body.clone());
            let mut line = String::new();
            while reader.read_line(&mut line).await.unwrap() > 0 {
                lines.push(std::mem::take(&mut line));
            }
            assert_eq!(lines, ["K1 3 q\r\n", "abc\r\n", "end"]);
        });
    }
}
