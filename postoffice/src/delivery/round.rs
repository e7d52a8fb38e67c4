//! One message's delivery round: its record read, its due recipients
//! grouped by domain, each group delivered over one connection (a free one
//! now, or parked until one frees), the outcomes recorded, and a DSN queued
//! for what bounced.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_lock::SemaphoreGuardArc;
use hedwig::config::StartTls;
use hedwig::envelope::Envelope;
use hedwig::id::Id;
use hedwig::smtp::reply::Reply;

use super::client::{self, Client};
use super::domains::Slot;
use super::failure::{self, Failure};
use super::smtp::TlsPolicy;
use super::throttle::Feedback;
use super::{pool, Deliverer};
use crate::bounce;
use crate::dns::{DnsError, Resolve, Target};
use crate::metrics::Held;
use crate::queue::record::{Outcome, Record, Relay, State};
use crate::queue::Job;

/// Outcomes of one round, by recipient index.
type Outcomes = Vec<(usize, Outcome)>;

/// What a session's replies say about the provider: throttling if any
/// reply throttled, success if any was positive; with the reply, for the log.
fn feedback_of(replies: &[Reply]) -> (Feedback, String) {
    let feedback: Vec<Feedback> = replies.iter().map(Feedback::of).collect();
    match feedback.iter().position(|f| *f == Feedback::Throttled) {
        Some(i) => (
            Feedback::Throttled,
            replies[i].to_lines().replace('\n', " "),
        ),
        None if feedback.contains(&Feedback::Success) => (Feedback::Success, String::new()),
        None => (Feedback::Neutral, String::new()),
    }
}

impl<R: Resolve + Send + Sync + 'static> Deliverer<R> {
    /// One delivery round for message `job`, holding `_permit` throughout.
    pub(super) async fn round(self: Arc<Self>, job: Job, _permit: SemaphoreGuardArc) {
        let now = self.clock.now();
        // A connection free now: the message is read with its record, in
        // one trip to the disk, and goes with the first domain's delivery.
        // Else only the record; each delivery reads the message once it has
        // its connection. Either way no message is in memory without one.
        let prefetch = self.connections.clone().try_acquire_arc();
        let loaded = match &prefetch {
            Some(_) => self
                .queue
                .record_and_message(job.id, self.signing(job.id))
                .await
                .map(|(r, bytes)| (r, Some(self.metrics.hold(bytes)))),
            None => self.queue.record(job.id).await.map(|r| (r, None)),
        };
        let (before, message) = match loaded {
            Ok((r, m)) => (Arc::new(r), m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Deleted, or finished by a round before a restart.
                self.queue.forget(job.id);
                return;
            }
            Err(e) => {
                log::error!(
                    "{}: cannot read queued message, will try again: {e}",
                    job.id
                );
                let first = self.queue.policy().backoff.first.as_millis() as u64;
                self.queue.put_back(job.id, now + first);
                return;
            }
        };
        // Due before its record says: a flush.
        let flushed = before.next_due().is_some_and(|n| n > job.due);
        let due = before.due(now, flushed);
        if due.is_empty() {
            self.queue
                .put_back(job.id, before.next_due().unwrap_or(now));
            return;
        }
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for i in due {
            groups.entry(before.domain(i)).or_default().push(i);
        }
        // Groups whose domain has a connection free go now; if none has,
        // the message is parked with the first domain and this task ends.
        let mut ready = Vec::new();
        let mut waiting = Vec::new();
        for (domain, rcpts) in groups {
            match self.domains.try_enter(&domain) {
                Some(slot) => ready.push((domain, rcpts, slot)),
                None => waiting.push((domain, rcpts)),
            }
        }
        if ready.is_empty() {
            let (domain, rcpts) = waiting.remove(0);
            match self.domains.enter_or_park(&domain, job.id) {
                Some(slot) => ready.push((domain, rcpts, slot)),
                None => return,
            }
        }
        // A message going to several domains waits for the busy ones (no
        // slot yet) while it is delivered to the others.
        let mut prefetched = prefetch.zip(message);
        let groups = ready
            .into_iter()
            .map(|(domain, rcpts, slot)| (domain, rcpts, Some(slot), prefetched.take()))
            .chain(waiting.into_iter().map(|(d, r)| (d, r, None, None)));
        let mut tasks = Vec::new();
        for (domain, rcpts, slot, read) in groups {
            let (this, record) = (self.clone(), before.clone());
            tasks.push(smol::spawn(async move {
                let slot = match slot {
                    Some(slot) => slot,
                    None => this.domains.enter(&domain).await,
                };
                this.deliver_domain(&record, &domain, &rcpts, slot, read)
                    .await
            }));
        }
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.extend(task.await);
        }
        self.record(&before, outcomes).await;
    }

    /// Writes a round's outcomes, after queuing the DSN for what bounced, so a
    /// crash in between can repeat a bounce but never lose one.
    async fn record(&self, before: &Record, outcomes: Outcomes) {
        let now = self.clock.now();
        let mut after = before.clone();
        for (i, o) in outcomes.iter().cloned() {
            after.apply(i, o, now, &self.queue.policy());
        }
        let mut bounced = Vec::new();
        for &(i, _) in &outcomes {
            match after.recipients[i].state {
                State::Delivered => self
                    .metrics
                    .delivered(now.saturating_sub(before.received_at)),
                State::Deferred => self.metrics.failed(&after, i, now),
                State::Bounced => {
                    self.metrics.failed(&after, i, now);
                    bounced.push(i);
                }
                State::Queued => {}
            }
        }
        if !bounced.is_empty() {
            self.bounce(&after, &bounced).await;
        }
        if let Err(e) = self.queue.finish(before, after, now).await {
            log::error!(
                "{}: cannot record delivery state, will try again: {e}",
                before.id
            );
        }
    }

    /// Queues a DSN to the sender for the recipients that bounced; never for
    /// a bounce (null sender), never when bounces are off.
    async fn bounce(&self, record: &Record, bounced: &[usize]) {
        if record.from.is_none() || !self.config.bounces {
            log::info!(
                "{}: no bounce for {} recipients (null sender or bounces off)",
                record.id,
                bounced.len()
            );
            return;
        }
        let original = self
            .queue
            .message(record.id, |m| m)
            .await
            .unwrap_or_default();
        let lines: Vec<(String, Option<String>)> = bounced
            .iter()
            .map(|&i| {
                let r = &record.recipients[i];
                let reply = r.reply.as_ref().map(|x| x.to_lines().replace('\n', " "));
                (r.address.to_string(), reply)
            })
            .collect();
        let failed: Vec<bounce::Failed<'_>> = bounced
            .iter()
            .zip(&lines)
            .map(|(&i, (address, reply))| {
                let r = &record.recipients[i];
                bounce::Failed {
                    recipient: address,
                    status: bounce::status_of(reply.as_deref(), r.last_error.as_deref()),
                    diagnostic: reply.as_deref(),
                    remote_mta: r.relay.as_ref().map(|x| x.host.as_str()),
                    reason: r.last_error.as_deref().unwrap_or("delivery failed"),
                }
            })
            .collect();
        let id = record.id.to_string();
        let orig = bounce::Original {
            id: &id,
            from: record.sender(),
            arrival: UNIX_EPOCH + Duration::from_millis(record.received_at),
            message: &original,
        };
        let now_ms = self.clock.now();
        let now = UNIX_EPOCH + Duration::from_millis(now_ms);
        let message_id = format!("{}@{}", hedwig::id::new(now), self.hostname);
        let (envelope, dsn) = bounce::dsn(&self.hostname, &orig, &failed, now, &message_id);
        let added = self
            .queue
            .add(&envelope, None, |_| String::new(), dsn.as_slice(), now_ms)
            .await;
        match added {
            Ok((dsn_id, _)) => {
                log::info!("{}: sender non-delivery notification: {dsn_id}", record.id)
            }
            Err(e) => log::error!("{}: cannot queue the bounce: {e}", record.id),
        }
    }

    /// One domain's recipients of one message, holding one of the domain's
    /// connections (`_slot`), with one log line per recipient and attempt,
    /// greppable like Postfix's. `read`: a connection permit and the message,
    /// when they came with the record.
    async fn deliver_domain(
        &self,
        record: &Record,
        domain: &str,
        rcpts: &[usize],
        slot: Slot,
        read: Option<(SemaphoreGuardArc, Held)>,
    ) -> Outcomes {
        let (outcomes, tls, feedback) = self.attempt_domain(record, domain, rcpts, read).await;
        // What the provider said about our rate goes into its window.
        slot.close(feedback.0, &feedback.1);
        let delay = self.clock.now().saturating_sub(record.received_at) as f64 / 1000.0;
        let tls = if tls { "yes" } else { "no" };
        for (i, outcome) in &outcomes {
            let one_line = |r: &Reply| r.to_lines().replace('\n', " ");
            let (status, relay, text) = match outcome {
                Outcome::Delivered { relay, reply } => ("delivered", Some(relay), one_line(reply)),
                Outcome::Deferred {
                    relay,
                    error,
                    reply,
                } => (
                    "deferred",
                    relay.as_ref(),
                    reply.as_ref().map_or(error.clone(), one_line),
                ),
                Outcome::Bounced {
                    relay,
                    error,
                    reply,
                } => (
                    "bounced",
                    relay.as_ref(),
                    reply.as_ref().map_or(error.clone(), one_line),
                ),
            };
            let relay = relay.map_or("none".to_string(), Relay::to_string);
            log::info!(
                "{}: to=<{}> relay={relay} delay={delay:.1}s tls={tls} status={status} ({text})",
                record.id,
                record.recipients[*i].address,
            );
        }
        outcomes
    }

    /// The mail servers for `domain` and their port: a configured route, or MX.
    async fn targets(&self, domain: &str) -> Result<(Vec<Target>, u16), DnsError> {
        if let Some(route) = self.config.route_for(domain) {
            let addrs = self.resolver.lookup_host(&route.host).await?;
            let target = Target {
                host: route.host.clone(),
                preference: 0,
                addrs,
            };
            return Ok((vec![target], route.port));
        }
        Ok((self.resolver.lookup_mx(domain).await?, self.config.port))
    }

    /// Tries each server in order until one answers the transaction, with
    /// one of the connections in all; returns the outcomes, whether TLS was
    /// used, and what the replies say about the provider's appetite.
    async fn attempt_domain(
        &self,
        record: &Record,
        domain: &str,
        rcpts: &[usize],
        read: Option<(SemaphoreGuardArc, Held)>,
    ) -> (Outcomes, bool, (Feedback, String)) {
        let neutral = || (Feedback::Neutral, String::new());
        let (_connection, mut message) = match read {
            Some((permit, message)) => (permit, Some(message)),
            None => (self.connections.clone().acquire_arc().await, None),
        };
        let all = |o: Outcome| rcpts.iter().map(|&i| (i, o.clone())).collect::<Vec<_>>();
        let (targets, port) = match self.targets(domain).await {
            Ok(t) => t,
            Err(e) => return (all(failure::outcome(&Failure::Dns(e))), false, neutral()),
        };
        let to = rcpts
            .iter()
            .map(|&i| record.recipients[i].address.clone())
            .collect();
        let envelope = Envelope {
            from: record.from.clone(),
            to,
        };
        // Read (if not yet) once the first connection is ready, shared by
        // the servers tried.
        let mut last = Failure::NoServer;
        // A server that asked to slow down, when none took the message.
        let mut throttled = None;
        for target in &targets {
            for ip in self.config.ip.order(&target.addrs) {
                let relay = Relay {
                    host: target.host.clone(),
                    ip,
                    port,
                };
                match self
                    .transaction(record, &relay, &envelope, &mut message)
                    .await
                {
                    Ok((replies, tls)) => {
                        let feedback = feedback_of(&replies);
                        let outcomes = rcpts
                            .iter()
                            .zip(replies)
                            .map(|(&i, reply)| (i, failure::reply_outcome(&relay, reply)))
                            .collect();
                        return (outcomes, tls, feedback);
                    }
                    // The next server may do better (RFC 5321 section 5.1); a
                    // refusal for good, or a queue file we cannot read, ends it.
                    Err(f) if failure::try_next_server(&f) => {
                        if let Some((Feedback::Throttled, why)) =
                            failure::reply_of(&f).map(|r| feedback_of(std::slice::from_ref(r)))
                        {
                            throttled = Some(why);
                        }
                        last = f;
                    }
                    Err(f) => return (all(failure::outcome(&f)), false, neutral()),
                }
            }
        }
        let feedback = match throttled {
            Some(why) => (Feedback::Throttled, why),
            None => neutral(),
        };
        (all(failure::outcome(&last)), false, feedback)
    }

    /// Gets a connection (a kept one, else a new one) and sends on it.
    /// Returns one reply per recipient and whether TLS was used.
    async fn transaction(
        &self,
        record: &Record,
        relay: &Relay,
        envelope: &Envelope,
        message: &mut Option<Held>,
    ) -> Result<(Vec<Reply>, bool), Failure> {
        let addr = SocketAddr::new(relay.ip, relay.port);
        // A kept connection first; if the server dropped it meanwhile, a fresh one.
        if let Some(c) = self.pool.take(addr, &relay.host, Instant::now()) {
            match self.send_on(c, record, relay, envelope, message).await {
                Err(Failure::Smtp(_, client::Error::Io(e))) => {
                    log::debug!("{relay}: kept connection failed ({e}); reconnecting")
                }
                other => return other,
            }
        }
        let policy = self.tls_policy();
        let c = Client::connect(addr, &relay.host, &self.hostname, policy, self.timeouts())
            .await
            .map_err(|e| Failure::Smtp(relay.clone(), e))?;
        self.send_on(c, record, relay, envelope, message).await
    }

    /// Reads the message bytes if not yet read (only now that a connection
    /// is ready: a message waits for its connection as an id), sends, and
    /// keeps the connection for the next message.
    async fn send_on(
        &self,
        mut c: Client,
        record: &Record,
        relay: &Relay,
        envelope: &Envelope,
        message: &mut Option<Held>,
    ) -> Result<(Vec<Reply>, bool), Failure> {
        let addr = SocketAddr::new(relay.ip, relay.port);
        if message.is_none() {
            match self.queue.message(record.id, self.signing(record.id)).await {
                Ok(bytes) => *message = Some(self.metrics.hold(bytes)),
                Err(e) => {
                    // Nothing was sent: the connection is clean for another message.
                    pool::close_all(self.pool.put(addr, &relay.host, c, Instant::now()));
                    return Err(Failure::QueueFile(e));
                }
            }
        }
        let bytes = message.as_ref().expect("read above").bytes();
        let replies = match c.send(envelope, bytes).await {
            Ok(r) => r,
            // Refused, but still talking: say QUIT rather than just close.
            Err(e @ client::Error::Smtp(_)) => {
                pool::close_all([c]);
                return Err(Failure::Smtp(relay.clone(), e));
            }
            Err(e) => return Err(Failure::Smtp(relay.clone(), e)),
        };
        let tls = c.tls();
        pool::close_all(self.pool.put(addr, &relay.host, c, Instant::now()));
        Ok((replies, tls))
    }

    /// What reading message `id` for delivery does to its bytes: a DKIM
    /// signature on top, with the keys configured now (on the blocking pool,
    /// where the message is read).
    fn signing(&self, id: Id) -> impl FnOnce(Vec<u8>) -> Vec<u8> + Send + 'static {
        let signer = self.signer.clone();
        move |bytes| signer.signed(&id.to_string(), bytes, SystemTime::now())
    }

    fn tls_policy(&self) -> TlsPolicy {
        match self.config.starttls {
            StartTls::Never => TlsPolicy::Never,
            StartTls::Opportunistic => TlsPolicy::Opportunistic,
            StartTls::Required => TlsPolicy::Required,
        }
    }

    fn timeouts(&self) -> client::Timeouts {
        client::Timeouts {
            connect: self.config.connect_timeout,
            command: self.config.command_timeout,
            data_end: self.config.command_timeout.max(Duration::from_secs(600)),
        }
    }
}
