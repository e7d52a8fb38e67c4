//! Delivery: takes due messages from the queue, groups their recipients by
//! domain, finds each domain's mail servers, and speaks SMTP to them, one
//! transaction per domain carrying all its recipients. Outcomes go back to
//! the queue; failures turn into a DSN to the sender.
//!
//! Bounded everywhere: `concurrency` connections in all, `per_domain` per
//! destination domain, and every network wait has a timeout, so one slow
//! domain holds only its own slots and never the queue.

pub mod client;
mod pool;
mod stream;
mod throttle;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_lock::Semaphore;
use futures_lite::FutureExt;
use hedwig::config::{Delivery, StartTls};
use hedwig::envelope::Envelope;
use hedwig::smtp::address::Address;
use hedwig::smtp::reply::Reply;
use smol::Timer;

use crate::bounce;
use crate::dkim::Signer;
use crate::dns::{DnsError, Resolve, Target};
use crate::metrics::Metrics;
use crate::now_ms;
use crate::queue::record::{Outcome, Record, State};
use crate::queue::Queue;

/// How long in-flight deliveries may finish after a stop.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The delivery loop and what it shares between deliveries.
#[derive(Debug)]
pub struct Deliverer<R> {
    queue: Queue,
    resolver: R,
    config: Delivery,
    hostname: String,
    metrics: Arc<Metrics>,
    signer: Arc<Signer>,
    global: Arc<Semaphore>,
    throttle: Arc<throttle::Throttle>,
    pool: Arc<pool::Pool>,
}

impl<R: Resolve + Send + Sync + 'static> Deliverer<R> {
    /// A deliverer for `queue` under the `config` policy.
    pub fn new(
        queue: Queue,
        resolver: R,
        config: Delivery,
        hostname: String,
        metrics: Arc<Metrics>,
        signer: Arc<Signer>,
    ) -> Self {
        let global = Arc::new(Semaphore::new(config.concurrency));
        let throttle =
            throttle::Throttle::new(config.per_domain, config.throttle_pause, config.retry.max);
        Deliverer {
            queue,
            resolver,
            config,
            hostname,
            metrics,
            signer,
            global,
            throttle: Arc::new(throttle),
            pool: Arc::default(),
        }
    }

    /// Runs until `stop` closes: wakes when a message is queued (`woken`) or
    /// the next one falls due, never scanning the queue.
    pub async fn run(self, woken: async_channel::Receiver<()>, stop: async_channel::Receiver<()>) {
        let this = Arc::new(self);
        smol::spawn(pool::sweeper(Arc::downgrade(&this.pool))).detach();
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        loop {
            let now = now_ms();
            this.queue.expire(now);
            for (record, due) in this.queue.take_due(now) {
                log::debug!("{}: due for {} recipients", record.id, due.len());
                let (this, in_flight) = (this.clone(), in_flight.clone());
                in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                smol::spawn(async move {
                    this.deliver(record, due).await;
                    in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                })
                .detach();
            }
            let next = this.queue.next_wake();
            let stopped = async {
                let _ = woken.recv().await;
                false
            }
            .or(async {
                match next {
                    Some(at) => Timer::at(instant_at(at)).await,
                    None => std::future::pending().await,
                };
                false
            })
            .or(async {
                let _ = stop.recv().await;
                true
            })
            .await;
            if stopped {
                break;
            }
        }
        let deadline = std::time::Instant::now() + STOP_GRACE;
        while in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0
            && std::time::Instant::now() < deadline
        {
            Timer::after(Duration::from_millis(20)).await;
        }
        // Idle connections end with QUIT too, not a bare close.
        let idle = this.pool.drain();
        futures_util::future::join_all(idle.into_iter().map(client::Client::quit)).await;
    }

    /// One delivery round for one message: every due recipient, by domain.
    async fn deliver(self: Arc<Self>, record: Record, due: Vec<usize>) {
        let id = record.id.clone();
        let queue = self.queue.clone();
        let (owned, signer) = (id.clone(), self.signer.clone());
        // Signed as it leaves the queue, with the keys configured now.
        let read = move || {
            let m = queue.message(&owned)?;
            Ok::<_, std::io::Error>(signer.signed(&owned, m, SystemTime::now()))
        };
        let message = match smol::unblock(read).await {
            Ok(m) => Arc::new(m),
            Err(e) => {
                log::error!("{id}: cannot read queued message: {e}");
                let outcomes = due
                    .iter()
                    .map(|&i| {
                        (
                            i,
                            Outcome::Deferred {
                                relay: None,
                                error: format!("queue file: {e}"),
                                reply: None,
                            },
                        )
                    })
                    .collect();
                self.record(record, outcomes).await;
                return;
            }
        };
        let mut by_domain: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for i in due {
            by_domain.entry(record.domain(i)).or_default().push(i);
        }
        let rounds = by_domain.into_iter().map(|(domain, rcpts)| {
            let (this, record, message) = (self.clone(), record.clone(), message.clone());
            smol::spawn(async move {
                this.deliver_domain(&record, &domain, &rcpts, &message)
                    .await
            })
        });
        let mut outcomes = Vec::new();
        for round in rounds.collect::<Vec<_>>() {
            outcomes.extend(round.await);
        }
        self.record(record, outcomes).await;
    }

    /// Writes a round's outcomes, after queuing the DSN for what bounced, so a
    /// crash in between can repeat a bounce but never lose one.
    async fn record(&self, record: Record, outcomes: Vec<(usize, Outcome)>) {
        let now = now_ms();
        let id = record.id.clone();
        let mut after = record.clone();
        for (i, o) in outcomes.clone() {
            after.apply(i, o, now, &self.queue.policy());
        }
        let bounced: Vec<usize> = outcomes
            .iter()
            .map(|(i, _)| *i)
            .filter(|&i| after.recipients[i].state == State::Bounced)
            .collect();
        for &(i, _) in &outcomes {
            match after.recipients[i].state {
                State::Delivered => self
                    .metrics
                    .delivered(now.saturating_sub(record.received_at)),
                State::Deferred | State::Bounced => self.metrics.failed(&after, i, now),
                State::Queued => {}
            }
        }
        if !bounced.is_empty() {
            self.bounce(&after, &bounced).await;
        }
        let queue = self.queue.clone();
        if let Err(e) = smol::unblock(move || queue.finish(&id, outcomes, now)).await {
            log::error!(
                "{}: cannot record delivery state, will try again: {e}",
                record.id
            );
        }
    }

    /// Queues a DSN to the sender for the recipients that bounced; never for
    /// a bounce (null sender), never when bounces are off.
    async fn bounce(&self, record: &Record, bounced: &[usize]) {
        if record.from.is_empty() || !self.config.bounces {
            log::info!(
                "{}: no bounce for {} recipients (null sender or bounces off)",
                record.id,
                bounced.len()
            );
            return;
        }
        let queue = self.queue.clone();
        let owned = record.id.clone();
        let original = smol::unblock(move || queue.message(&owned))
            .await
            .unwrap_or_default();
        let failed: Vec<bounce::Failed<'_>> = bounced
            .iter()
            .map(|&i| {
                let r = &record.recipients[i];
                bounce::Failed {
                    recipient: &r.address,
                    status: bounce::status_of(r.reply.as_deref(), r.last_error.as_deref()),
                    diagnostic: r.reply.as_deref(),
                    remote_mta: r.relay.as_deref().map(|x| x.split('[').next().unwrap_or(x)),
                    reason: r.last_error.as_deref().unwrap_or("delivery failed"),
                }
            })
            .collect();
        let arrival = UNIX_EPOCH + Duration::from_millis(record.received_at);
        let orig = bounce::Original {
            id: &record.id,
            from: &record.from,
            arrival,
            message: &original,
        };
        let now = SystemTime::now();
        let message_id = format!("{}@{}", hedwig::id::new(now), self.hostname);
        let (envelope, dsn) = bounce::dsn(&self.hostname, &orig, &failed, now, &message_id);
        let queue = self.queue.clone();
        match smol::unblock(move || queue.add(&envelope, None, &dsn, now_ms())).await {
            Ok((dsn_id, _)) => {
                log::info!("{}: sender non-delivery notification: {dsn_id}", record.id)
            }
            Err(e) => log::error!("{}: cannot queue the bounce: {e:?}", record.id),
        }
    }

    /// The mail servers for `domain` and their port: a configured route, or MX.
    async fn targets(&self, domain: &str) -> Result<(Vec<Target>, u16), DnsError> {
        if let Some(route) = self.config.route_for(domain) {
            let addrs = self.resolver.lookup_host(&route.host).await?;
            return Ok((
                vec![Target {
                    host: route.host.clone(),
                    preference: 0,
                    addrs,
                }],
                route.port,
            ));
        }
        Ok((self.resolver.lookup_mx(domain).await?, self.config.port))
    }

    /// One domain's recipients of one message, with one log line per
    /// recipient and attempt, greppable like Postfix's.
    async fn deliver_domain(
        &self,
        record: &Record,
        domain: &str,
        rcpts: &[usize],
        message: &[u8],
    ) -> Vec<(usize, Outcome)> {
        let (outcomes, tls) = self.attempt_domain(record, domain, rcpts, message).await;
        let delay = now_ms().saturating_sub(record.received_at) as f64 / 1000.0;
        let tls = if tls { "yes" } else { "no" };
        for (i, outcome) in &outcomes {
            let (status, relay, text) = match outcome {
                Outcome::Delivered { relay, reply } => ("delivered", Some(relay), reply),
                Outcome::Deferred {
                    relay,
                    error,
                    reply,
                } => ("deferred", relay.as_ref(), reply.as_ref().unwrap_or(error)),
                Outcome::Bounced {
                    relay,
                    error,
                    reply,
                } => ("bounced", relay.as_ref(), reply.as_ref().unwrap_or(error)),
            };
            log::info!(
                "{}: to=<{}> relay={} delay={delay:.1}s tls={tls} status={status} ({text})",
                record.id,
                record.recipients[*i].address,
                relay.map_or("none", |r| r.as_str()),
            );
        }
        outcomes
    }

    /// Tries each server in order until one answers the transaction; returns
    /// the outcomes and whether TLS was used.
    async fn attempt_domain(
        &self,
        record: &Record,
        domain: &str,
        rcpts: &[usize],
        message: &[u8],
    ) -> (Vec<(usize, Outcome)>, bool) {
        // The domain's window first, then a global slot: a throttled domain waits on its own.
        let slot = self.throttle.open(domain).await;
        let _slot = self.global.acquire().await;
        let all =
            |make: &dyn Fn() -> Outcome| rcpts.iter().map(|&i| (i, make())).collect::<Vec<_>>();
        let (targets, port) = match self.targets(domain).await {
            Ok(t) => t,
            Err(e) if e.is_permanent() => {
                let bounced = || Outcome::Bounced {
                    relay: None,
                    error: e.to_string(),
                    reply: None,
                };
                return (all(&bounced), false);
            }
            Err(e) => {
                let deferred = || Outcome::Deferred {
                    relay: None,
                    error: e.to_string(),
                    reply: None,
                };
                return (all(&deferred), false);
            }
        };
        let from = if record.from.is_empty() {
            None
        } else {
            Address::parse(&record.from).ok()
        };
        let to: Vec<Address> = rcpts
            .iter()
            .filter_map(|&i| Address::parse(&record.recipients[i].address).ok())
            .collect();
        let envelope = Envelope { from, to };
        let mut last: Option<(String, String)> = None;
        let mut throttled: Option<String> = None;
        for target in &targets {
            for ip in &self.config.ip.order(&target.addrs) {
                let addr = SocketAddr::new(*ip, port);
                let relay = format!("{}[{}]:{}", target.host, ip, port);
                match self
                    .transaction(&target.host, addr, &envelope, message)
                    .await
                {
                    Ok((replies, tls)) => {
                        let feedback = feedback_of(&replies);
                        slot.close(feedback.0, &feedback.1);
                        let outcomes = rcpts
                            .iter()
                            .zip(replies)
                            .map(|(&i, reply)| (i, outcome(&relay, reply)))
                            .collect();
                        return (outcomes, tls);
                    }
                    Err(e) if e.is_permanent() => {
                        let reply = e
                            .reply()
                            .map(Reply::to_string)
                            .map(|s| s.trim_end().replace("\r\n", " "));
                        let error = e.to_string();
                        let bounced = || Outcome::Bounced {
                            relay: Some(relay.clone()),
                            error: error.clone(),
                            reply: reply.clone(),
                        };
                        return (all(&bounced), false);
                    }
                    // This server failed: the next one may do better (RFC 5321 section 5.1).
                    Err(e) => {
                        if let Some((throttle::Feedback::Throttled, why)) =
                            e.reply().map(|r| feedback_of(std::slice::from_ref(r)))
                        {
                            throttled = Some(why);
                        }
                        last = Some((relay, e.to_string()));
                    }
                }
            }
        }
        let (relay, error) = last.map_or((None, "no server to try".to_string()), |(r, e)| {
            (Some(r), e)
        });
        if let Some(why) = throttled {
            slot.close(throttle::Feedback::Throttled, &why);
        }
        let deferred = || Outcome::Deferred {
            relay: relay.clone(),
            error: error.clone(),
            reply: None,
        };
        (all(&deferred), false)
    }

    /// Connects, sends, quits. Returns one reply per recipient and whether TLS was used.
    async fn transaction(
        &self,
        host: &str,
        addr: SocketAddr,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<(Vec<Reply>, bool), client::Error> {
        let timeouts = client::Timeouts {
            connect: self.config.connect_timeout,
            command: self.config.command_timeout,
            data_end: self.config.command_timeout.max(Duration::from_secs(600)),
        };
        let policy = match self.config.starttls {
            StartTls::Never => client::TlsPolicy::Never,
            StartTls::Opportunistic => client::TlsPolicy::Opportunistic,
            StartTls::Required => client::TlsPolicy::Required,
        };
        // A kept connection first; if the server dropped it meanwhile, a fresh one.
        if let Some(mut c) = self.pool.take(addr, host, Instant::now()) {
            match c.send(envelope, message).await {
                Err(client::Error::Io(e)) => {
                    log::debug!("{host}[{addr}]: kept connection failed ({e}); reconnecting")
                }
                Ok(replies) => {
                    let tls = c.tls();
                    pool::close_all(self.pool.put(addr, host, c, Instant::now()));
                    return Ok((replies, tls));
                }
                Err(e) => {
                    pool::close_all([c]);
                    return Err(e);
                }
            }
        }
        let mut c = client::Client::connect(addr, host, &self.hostname, policy, timeouts).await?;
        let replies = match c.send(envelope, message).await {
            Ok(r) => r,
            // Refused, but still talking: say QUIT rather than just close.
            Err(e) if !matches!(e, client::Error::Io(_)) => {
                pool::close_all([c]);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let tls = c.tls();
        pool::close_all(self.pool.put(addr, host, c, Instant::now()));
        Ok((replies, tls))
    }
}

/// What a session's replies say about the provider: throttling if any
/// reply throttled, success if any was positive; with the reply, for the log.
fn feedback_of(replies: &[Reply]) -> (throttle::Feedback, String) {
    let one_line = |r: &Reply| r.to_string().trim_end().replace("\r\n", " ");
    let feedback: Vec<throttle::Feedback> = replies.iter().map(throttle::Feedback::of).collect();
    if let Some(i) = feedback
        .iter()
        .position(|f| *f == throttle::Feedback::Throttled)
    {
        (throttle::Feedback::Throttled, one_line(&replies[i]))
    } else if feedback.contains(&throttle::Feedback::Success) {
        (throttle::Feedback::Success, String::new())
    } else {
        (throttle::Feedback::Neutral, String::new())
    }
}

/// A remote reply for one recipient, sorted.
fn outcome(relay: &str, reply: Reply) -> Outcome {
    let text = reply.to_string().trim_end().replace("\r\n", " ");
    if reply.is_positive() {
        Outcome::Delivered {
            relay: relay.to_string(),
            reply: text,
        }
    } else if reply.is_permanent() {
        Outcome::Bounced {
            relay: Some(relay.to_string()),
            error: format!("remote said {}", reply.code),
            reply: Some(text),
        }
    } else {
        Outcome::Deferred {
            relay: Some(relay.to_string()),
            error: format!("remote said {}", reply.code),
            reply: Some(text),
        }
    }
}

/// The monotonic instant for a wall-clock time in ms since 1970.
fn instant_at(ms: u64) -> std::time::Instant {
    let now = now_ms();
    std::time::Instant::now() + Duration::from_millis(ms.saturating_sub(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_sort_into_outcomes() {
        let r = |code| Reply::new(code, hedwig::smtp::reply::Status(2, 0, 0), "x");
        assert!(matches!(outcome("mx", r(250)), Outcome::Delivered { .. }));
        assert!(matches!(outcome("mx", r(450)), Outcome::Deferred { .. }));
        assert!(matches!(outcome("mx", r(550)), Outcome::Bounced { .. }));
    }
}
