//! mailman: the docker host's SMTP relay. Containers send to the docker0
//! address on port 25; mailman spools each message durably and hands it to
//! postoffice over HTTP(S).
//!
//! # Layout
//!
//! - `main`: arguments, configuration, start and stop.
//! - [`server`]: the accept loop (allow list, connection limit).
//! - [`connection`]: one SMTP session's socket I/O around `hedwig::smtp`.
//! - [`forward`]: drains the spool to postoffice with retries.
//! - [`http`]: the hand-off over HTTP(S), with failover (the one module that knows surf).
//! - [`shutdown`]: the stop signal every task waits on.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod connection;
mod forward;
mod http;
mod schedule;
mod server;
mod shutdown;

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use async_net::TcpListener;
use futures_lite::StreamExt;
use hedwig::config::{Listen, Mailman};
use hedwig::smtp::session::SessionConfig;
use hedwig::spool::Spool;

const ABOUT: &str = "mailman: hedwig's SMTP relay for docker hosts. It accepts mail on the docker0
address, spools it durably and hands it to postoffice over HTTP(S).";

fn main() -> ExitCode {
    let version = env!("CARGO_PKG_VERSION");
    let section = hedwig::config::Config::into_mailman;
    match hedwig::cli::start("mailman", version, ABOUT, section, |c| c.log_level) {
        Ok(config) => hedwig::cli::exit("mailman", smol::block_on(run(config))),
        Err(code) => code,
    }
}

/// Starts everything, then waits for SIGTERM or SIGINT and stops in order.
async fn run(config: Mailman) -> Result<(), String> {
    let mut signals =
        async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])
            .map_err(|e| format!("cannot watch signals: {e}"))?;
    let spool =
        Spool::open(&config.spool).map_err(|e| format!("spool {}: {e}", config.spool.display()))?;
    let token = config
        .postoffice
        .token()
        .map_err(|e| format!("postoffice token: {e}"))?;
    let retry = (config.postoffice.retry.first, config.postoffice.retry.max);
    let handoff = http::Handoff::new(
        &config.postoffice.urls,
        token,
        config.postoffice.timeout,
        config.postoffice.ca_file.as_deref(),
        config.postoffice.concurrency,
        retry,
    )?;
    let mut listeners = Vec::new();
    for listen in &config.listen {
        let addr = resolve(listen)?;
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("listen {listen} ({addr}): {e}"))?;
        listeners.push(l);
    }
    let hostname = config.resolved_hostname();
    let (trigger, shutdown) = shutdown::new();
    let (accepted_tx, accepted_rx) = async_channel::unbounded();
    let shared = Arc::new(connection::Shared {
        session: SessionConfig {
            hostname: hostname.clone(),
            max_message_size: config.max_message_size,
            max_recipients: config.max_recipients,
            max_errors: config.max_errors,
        },
        max_line: config.max_line_length,
        max_header: config.max_header_size,
        timeout: config.timeout,
        data_timeout: config.data_timeout,
        spool: spool.clone(),
        accepted: accepted_tx,
        shutdown: shutdown.clone(),
        masquerade: config.masquerade.as_ref().map(|m| {
            let names = [hostname.clone(), hedwig::config::system_hostname()];
            hedwig::masquerade::Rule::new(&m.domain, m.rewrite_from_header, &names)
        }),
    });
    let limits = Arc::new(server::Limits {
        allow: config.allow.clone(),
        max_connections: config.max_connections,
    });
    log::info!(
        "mailman {} as {hostname} on {:?}, spool {}, postoffice {}",
        env!("CARGO_PKG_VERSION"),
        server::describe(&listeners),
        config.spool.display(),
        config.postoffice.urls.join(", ")
    );
    let forwarder = smol::spawn(forward::run(
        spool,
        handoff,
        accepted_rx,
        config.postoffice.concurrency,
        retry,
        shutdown.clone(),
    ));
    let server = smol::spawn(server::run(
        listeners,
        shared,
        limits,
        config.shutdown_timeout,
    ));
    if let Some(Ok(signal)) = signals.next().await {
        log::info!("received {signal:?}: stopping");
    }
    trigger.fire();
    server.await;
    forwarder.await;
    log::info!("stopped");
    Ok(())
}

/// Turns a listen entry into a socket address; `docker0:25` becomes the
/// interface's IPv4 address, read now because it exists only on the host.
fn resolve(listen: &Listen) -> Result<SocketAddr, String> {
    match listen {
        Listen::Addr(addr) => Ok(*addr),
        Listen::Interface { name, port } => {
            let ifaces = if_addrs::get_if_addrs()
                .map_err(|e| format!("listen {listen}: cannot list interfaces: {e}"))?;
            ifaces
                .iter()
                .filter(|i| &i.name == name)
                .find_map(|i| match i.ip() {
                    IpAddr::V4(v4) => Some(SocketAddr::new(IpAddr::V4(v4), *port)),
                    IpAddr::V6(_) => None,
                })
                .ok_or_else(|| format!("listen {listen}: interface {name} has no IPv4 address"))
        }
    }
}
