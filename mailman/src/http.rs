//! The hand-off to postoffice over HTTP(S). This is the only module that
//! knows surf (unmaintained, pinned): replacing it touches nothing else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hedwig::handoff;
use hedwig::spool::Spool;

/// What one hand-off came to.
#[derive(Debug)]
pub enum Outcome {
    /// postoffice answered 2xx: it has the message.
    Accepted,
    /// Down, 5xx or 429: try again later.
    Retry(String),
    /// Any other 4xx: postoffice will never take it.
    Refused(String),
}

/// A client for postoffice's message endpoint; cheap to clone.
#[derive(Clone, Debug)]
pub struct Handoff {
    client: surf::Client,
    endpoint: String,
    token: Arc<str>,
}

impl Handoff {
    /// A client posting to `url` with `token`, each exchange bounded by
    /// `timeout`, trusting `ca_file` besides the system's CAs.
    pub fn new(
        url: &str,
        token: String,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Handoff, String> {
        // No keep-alive: under concurrent first requests http-client's pooled
        // path (deadpool) was seen to leave a request hanging until the
        // timeout; a connection per hand-off costs one TCP handshake.
        let mut config = surf::Config::new()
            .set_timeout(Some(timeout))
            .set_http_keep_alive(false);
        if let Some(path) = ca_file {
            let pem =
                std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            let cert = async_native_tls::Certificate::from_pem(&pem)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            let connector = async_native_tls::TlsConnector::new().add_root_certificate(cert);
            config = config.set_tls_config(Some(Arc::new(connector)));
        }
        let client: surf::Client = config.try_into().map_err(|e| format!("http client: {e}"))?;
        let endpoint = format!("{}{}", url.trim_end_matches('/'), handoff::PATH);
        Ok(Handoff {
            client,
            endpoint,
            token: token.into(),
        })
    }

    /// Posts spooled message `id`, streaming its bytes from the spool file.
    pub async fn send(&self, spool: &Spool, id: &str) -> Outcome {
        let spool = spool.clone();
        let owned_id = id.to_string();
        let opened = smol::unblock(move || spool.open_message(&owned_id)).await;
        let (head, file, len) = match opened {
            Ok(x) => x,
            Err(e) => return Outcome::Refused(format!("cannot read spool file: {e}")),
        };
        let url = format!("{}?{}", self.endpoint, handoff::query(&head.envelope));
        let reader = futures_lite::io::BufReader::new(smol::fs::File::from(file));
        let started = Instant::now();
        let request = self
            .client
            .post(url)
            .header("Authorization", format!("Bearer {}", self.token))
            .header(handoff::IDEMPOTENCY_KEY, id)
            .content_type(handoff::CONTENT_TYPE)
            .body(surf::Body::from_reader(reader, Some(len as usize)));
        let mut response = match request.await {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(format!("postoffice unreachable: {e}")),
        };
        let status = u16::from(response.status());
        let body = response.body_string().await.unwrap_or_default();
        let latency = started.elapsed();
        let body = body.trim();
        log::info!(
            "{id}: hand-off status={status} latency={}ms size={len} response={body}",
            latency.as_millis()
        );
        match status {
            200..=299 => Outcome::Accepted,
            429 | 500..=599 => Outcome::Retry(format!("HTTP {status}")),
            400..=499 => Outcome::Refused(format!("HTTP {status}: {body}")),
            // Redirects and the like: nothing to follow; keep the message and retry.
            _ => Outcome::Retry(format!("unexpected HTTP {status}")),
        }
    }
}
