//! mailman: the docker host's SMTP relay. Containers send to the docker0
//! address on port 25; mailman spools each message durably and hands it to
//! postoffice over HTTP(S).
//!
//! # Layout
//!
//! - `main`: arguments, configuration, start (as root: sockets, spool,
//!   keys; then the switch to `user`) and stop.
//! - [`server`]: the accept loop (allow list, connection limit).
//! - [`connection`]: one SMTP session's socket I/O around `hedwig::smtp`.
//! - [`sendmail`]: `mailman sendmail`, for cron and scripts on the host:
//!   stdin into the drop directory ([`maildrop`]); [`pickup`] moves drops
//!   into the spool.
//! - [`forward`]: drains the spool to postoffice with retries.
//! - [`queue`]: `mailman queue` (and `sendmail -bp`, `mailq`): list, requeue.
//! - [`http`]: the hand-off over HTTP(S), with failover (the one module that knows surf).
//! - [`shutdown`]: the stop signal every task waits on.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod connection;
mod forward;
mod http;
mod maildrop;
mod pickup;
mod queue;
mod schedule;
mod sendmail;
mod server;
mod shutdown;

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use async_net::TcpListener;
use futures_lite::StreamExt;
use hedwig::config::{Listen, Mailman};
use hedwig::smtp::session::SessionConfig;
use hedwig::spool::Spool;

const ABOUT: &str = "mailman: hedwig's SMTP relay for docker hosts. It accepts mail on the docker0
address, spools it durably and hands it to postoffice over HTTP(S).

Commands (see README):
  mailman sendmail [--config PATH] [-t] [-i|-oi] [-f ADDR] [-F NAME] [RCPT...]
                     queue the message on stdin (also as a link named sendmail)
  mailman queue [--config PATH] [--json]      list the spool (also sendmail -bp, mailq)
  mailman queue requeue [--config PATH] ID... | --failed
                     put failed messages back; a running mailman sends them";

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_default();
    let rest: Vec<OsString> = args.collect();
    // `ln -s /usr/local/bin/mailman /usr/sbin/sendmail` (and mailq) work.
    match std::path::Path::new(&program)
        .file_name()
        .and_then(|n| n.to_str())
    {
        Some("sendmail") => return sendmail::main(rest, sendmail::Mode::Deliver),
        Some("mailq") => return sendmail::main(rest, sendmail::Mode::List),
        _ => {}
    }
    match rest.first().and_then(|a| a.to_str()) {
        Some("sendmail") => return sendmail::main(rest[1..].to_vec(), sendmail::Mode::Deliver),
        Some("queue") => return queue::main(rest[1..].to_vec()),
        _ => {}
    }
    let version = env!("CARGO_PKG_VERSION");
    let section = hedwig::config::Config::into_mailman;
    match hedwig::cli::start("mailman", version, ABOUT, section, |c| c.log_level) {
        Ok(config) => {
            hedwig::cli::limit_blocking_threads(config.blocking_threads);
            hedwig::cli::exit("mailman", start(config))
        }
        Err(code) => code,
    }
}

/// Opens what may need root (the spool and its drop directory, the token
/// and CA files, the listening sockets), becomes `user` while the process
/// has one thread, takes what `sendmail` dropped meanwhile, then runs.
fn start(config: Mailman) -> Result<(), String> {
    let account = config.user.as_ref().map(|u| u.account()).transpose()?;
    let spool =
        Spool::open(&config.spool).map_err(|e| format!("spool {}: {e}", config.spool.display()))?;
    maildrop::prepare(&config.spool, account.as_ref())
        .map_err(|e| format!("spool {}: {e}", config.spool.display()))?;
    let token = config
        .postoffice
        .token()
        .map_err(|e| format!("postoffice token: {e}"))?;
    let handoff = http::Handoff::new(&config.postoffice, token)?;
    let mut listeners = Vec::new();
    for listen in &config.listen {
        let addr = resolve(listen)?;
        let l = std::net::TcpListener::bind(addr)
            .map_err(|e| format!("listen {listen} ({addr}): {e}"))?;
        listeners.push(l);
    }
    if let Some(account) = &account {
        hedwig::privilege::become_user(account)?;
    }
    let pickup = Arc::new(pickup::Pickup {
        spool: spool.clone(),
        hostname: config.resolved_hostname(),
        max_message_size: config.max_message_size,
        max_recipients: config.max_recipients,
        max_header: config.max_header_size,
        uid: hedwig::privilege::uid(),
    });
    // Before the forwarder lists the spool, so it finds these too.
    pickup.pass(SystemTime::now(), false);
    smol::block_on(run(config, spool, handoff, listeners, pickup))
}

/// Starts everything, then waits for SIGTERM or SIGINT and stops in order.
async fn run(
    config: Mailman,
    spool: Spool,
    handoff: http::Handoff,
    listeners: Vec<std::net::TcpListener>,
    pickup: Arc<pickup::Pickup>,
) -> Result<(), String> {
    let mut signals =
        async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])
            .map_err(|e| format!("cannot watch signals: {e}"))?;
    let listeners = listeners
        .into_iter()
        .map(TcpListener::try_from)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("listen: {e}"))?;
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
        accepted: accepted_tx.clone(),
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
    let pickup = smol::spawn(pickup::run(pickup, accepted_tx.clone(), shutdown.clone()));
    let forwarder = smol::spawn(forward::run(
        spool,
        handoff,
        accepted_rx,
        config.postoffice.concurrency,
        config.postoffice.retry,
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
    pickup.await;
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
            if !ifaces.iter().any(|i| &i.name == name) {
                let mut names: Vec<&str> = ifaces.iter().map(|i| i.name.as_str()).collect();
                names.sort_unstable();
                names.dedup();
                return Err(format!(
                    "listen {listen}: there is no interface {name} (interfaces: {})",
                    names.join(", ")
                ));
            }
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
