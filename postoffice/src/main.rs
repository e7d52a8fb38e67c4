//! postoffice: hedwig's mail host. It queues what it receives over HTTP
//! (from mailman, or from applications), looks up each recipient domain's MX
//! and delivers by SMTP, retrying under the delivery policy, and bounces what
//! cannot be delivered.
//!
//! # Layout
//!
//! In the order a message travels:
//! - [`api`]: the HTTP API (tide routes, hyper speaks HTTP/1); [`compose`]
//!   builds JSON messages into MIME.
//! - [`queue`]: durable records and the schedule of next attempts.
//! - [`delivery`]: takes due messages, finds the MX ([`dns`]), speaks SMTP
//!   to it, records outcomes; [`bounce`] writes the DSN for failures.
//! - [`metrics`]: counters for `/metrics`; [`status`]: the status page at `/`.
//! - [`dkim`] signs what delivery sends; [`doctor`] (`postoffice doctor`)
//!   checks that this host can deliver and will be believed.
//! - [`command`]: `postoffice queue`, the operator's commands, through the API.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod api;
mod bounce;
mod command;
mod compose;
mod delivery;
mod dkim;
mod dns;
mod doctor;
mod metrics;
mod queue;
mod status;
#[cfg(test)]
mod testing;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_net::TcpListener;
use futures_lite::StreamExt;
use hedwig::config::Postoffice;

const ABOUT: &str = "postoffice: hedwig's mail host. It queues messages received over HTTP and
delivers them to each recipient domain's MX by SMTP, with retries and bounces.";

/// Milliseconds since 1970: the queue's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn main() -> ExitCode {
    let version = env!("CARGO_PKG_VERSION");
    let section = hedwig::config::Config::into_postoffice;
    // So --check (and start) load each DKIM key, and name a bad one by position.
    hedwig::config::check_keys_with(dkim::key::check);
    let mut args = std::env::args_os().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "doctor") {
        return doctor::main(args.skip(1));
    }
    if args.peek().is_some_and(|a| a == "queue") {
        return command::main(args.skip(1).collect());
    }
    match hedwig::cli::start("postoffice", version, ABOUT, section, |c| c.log_level) {
        Ok(config) => {
            hedwig::cli::limit_blocking_threads(config.blocking_threads);
            hedwig::cli::exit("postoffice", start(config))
        }
        Err(code) => code,
    }
}

/// What is opened before the switch to `user`.
struct Opened {
    tokens: Vec<String>,
    queue: queue::Queue,
    woken: async_channel::Receiver<()>,
    tls: Option<hedwig::http::tls::Acceptor>,
    signer: dkim::Signer,
    listener: std::net::TcpListener,
}

/// Opens what may need root (tokens, the queue, the TLS key, the DKIM keys,
/// the listening socket), becomes `user` while the process has one thread, then runs.
fn start(config: Postoffice) -> Result<(), String> {
    let account = config.user.as_ref().map(|u| u.account()).transpose()?;
    let tokens = config.read_tokens().map_err(|e| format!("tokens: {e}"))?;
    let d = &config.delivery;
    let settings = queue::Settings {
        policy: queue::record::Policy {
            backoff: d.retry.backoff(),
            give_up: d.retry.give_up,
        },
        keep_status: d.keep_status.as_millis() as u64,
        remember_keys: config.remember_keys,
        max_message_size: config.max_message_size,
    };
    let in_queue = |e: std::io::Error| format!("queue {}: {e}", config.queue.display());
    let store = queue::store::Store::open(&config.queue).map_err(in_queue)?;
    if let Some(account) = account.as_ref().filter(|_| hedwig::privilege::is_root()) {
        let dirs =
            ["", "tmp", "queue", "failed", "state", "done", "free"].map(|d| config.queue.join(d));
        let dirs: Vec<&std::path::Path> = dirs
            .iter()
            .filter(|d| d.exists())
            .map(|d| d.as_path())
            .collect();
        hedwig::privilege::hand_over(&dirs, account).map_err(in_queue)?;
    }
    // Nothing is read yet: the scan starts with run(), after the switch to
    // `user` (it needs threads) and while the API already serves.
    let (queue, woken) = queue::Queue::new(store, settings);
    let tls = match &config.tls {
        Some(t) => Some(hedwig::http::tls::Acceptor::new(&t.cert, &t.key)?),
        None => None,
    };
    let signer = dkim::Signer::load(&config.dkim).map_err(|e| format!("dkim: {e}"))?;
    for key in signer.describe() {
        log::info!("DKIM: signing mail from {key}");
    }
    let listener = std::net::TcpListener::bind(config.listen)
        .map_err(|e| format!("listen {}: {e}", config.listen))?;
    if let Some(account) = &account {
        hedwig::privilege::become_user(account)?;
    }
    let opened = Opened {
        tokens,
        queue,
        woken,
        tls,
        signer,
        listener,
    };
    smol::block_on(run(config, opened))
}

/// Starts the delivery loop and the API; stops on SIGTERM/SIGINT.
async fn run(config: Postoffice, opened: Opened) -> Result<(), String> {
    let mut signals =
        async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])
            .map_err(|e| format!("cannot watch signals: {e}"))?;
    let hostname = config.resolved_hostname();
    let metrics = Arc::new(metrics::Metrics::default());
    let resolver = dns::Resolver::new(&config.dns).map_err(|e| format!("dns: {e}"))?;
    let listener = TcpListener::try_from(opened.listener)
        .map_err(|e| format!("listen {}: {e}", config.listen))?;
    log::info!(
        "postoffice {} as {hostname} on {}{}, queue {}",
        env!("CARGO_PKG_VERSION"),
        config.listen,
        if opened.tls.is_some() { " (https)" } else { "" },
        config.queue.display()
    );
    let state = api::State {
        queue: opened.queue.clone(),
        tokens: Arc::new(opened.tokens),
        max_message_size: config.max_message_size,
        max_batch_size: config.max_batch_size,
        metrics: metrics.clone(),
        hostname: hostname.clone().into(),
        body_timeout: config.body_timeout,
        https: opened.tls.is_some(),
    };
    let limits = api::Limits {
        max_header_size: config.max_header_size,
        header_timeout: config.header_timeout,
        body_timeout: config.body_timeout,
        write_timeout: config.write_timeout,
    };
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let stopped = {
        let rx = stop_rx.clone();
        async move {
            let _ = rx.recv().await;
        }
    };
    let api = smol::spawn(api::serve(
        listener,
        state,
        opened.tls,
        limits,
        config.max_connections,
        stopped,
    ));
    // Read what is queued in the background: the API serves meanwhile.
    let scan = {
        let queue = opened.queue.clone();
        smol::spawn(async move { queue.scan(now_ms()).await })
    };
    let clock = Arc::new(delivery::clock::SystemClock);
    let deliverer = delivery::Deliverer::new(
        opened.queue,
        resolver,
        config.delivery.clone(),
        hostname,
        metrics,
        Arc::new(opened.signer),
        clock,
    );
    let delivery = smol::spawn(deliverer.run(opened.woken, stop_rx));
    if let Some(Ok(signal)) = signals.next().await {
        log::info!("received {signal:?}: stopping");
    }
    stop_tx.close();
    api.await;
    delivery.await;
    drop(scan);
    log::info!("stopped");
    Ok(())
}
