//! Delivery: takes due messages from the queue, groups their recipients by
//! domain, finds each domain's mail servers, and speaks SMTP to them, one
//! transaction per domain carrying all its recipients. Outcomes go back to
//! the queue; failures turn into a DSN to the sender.
//!
//! # Layout
//!
//! - this file: the loop that takes due messages, a permit first.
//! - [`round`]: one message's delivery round, domain by domain.
//! - [`domains`]: connections per domain, and the messages parked for one;
//!   [`throttle`] the per-domain windows a throttling provider shrinks.
//! - [`failure`]: the one place a failure becomes deferred or bounced.
//! - [`smtp`]: the SMTP client's protocol core, no I/O.
//! - [`client`]: its socket layer (connect, STARTTLS, bounded waits).
//! - [`pool`]: idle connections kept for the next message.
//! - [`clock`]: time as a parameter.
//!
//! Bounded everywhere. The loop takes a message only with a task permit
//! (`concurrency` plus READ_AHEAD in all), and a message's bytes are read
//! only once a connection for it is ready: at most `concurrency` messages
//! are in memory, however long the queue. A domain without a free
//! connection (`per_domain`) parks its messages as ids. Every network wait
//! has a timeout, so one slow domain holds only its own slots.

pub mod client;
pub mod clock;
mod domains;
mod failure;
mod pool;
mod round;
pub mod smtp;
mod stream;
mod throttle;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_lock::Semaphore;
use futures_lite::FutureExt;
use hedwig::config::Delivery;

use crate::dkim::Signer;
use crate::dns::Resolve;
use crate::metrics::Metrics;
use crate::queue::Queue;
use clock::Clock;
use domains::Domains;

/// How long in-flight deliveries may finish after a stop.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Messages taken beyond `concurrency`: rounds with a record read, waiting
/// for a connection, so that one is ready as soon as a connection frees.
pub const READ_AHEAD: usize = 16;
/// Finished-record files (a minute of records each) dropped per pass, and
/// how often a pass runs.
const EXPIRE_BATCH: usize = 16;
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// The delivery loop and what it shares between deliveries.
pub struct Deliverer<R> {
    queue: Queue,
    resolver: R,
    clock: Arc<dyn Clock>,
    config: Delivery,
    hostname: String,
    metrics: Arc<Metrics>,
    /// Signs each message as it leaves the queue.
    signer: Arc<Signer>,
    /// Connections in use, all domains together.
    connections: Arc<Semaphore>,
    /// Rounds in progress.
    tasks: Arc<Semaphore>,
    domains: Arc<Domains>,
    pool: Arc<pool::Pool>,
}

impl<R> std::fmt::Debug for Deliverer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("concurrency", &self.config.concurrency)
            .finish()
    }
}

impl<R: Resolve + Send + Sync + 'static> Deliverer<R> {
    /// A deliverer for `queue` under the `config` policy, on `clock`,
    /// signing with `signer`.
    pub fn new(
        queue: Queue,
        resolver: R,
        config: Delivery,
        hostname: String,
        metrics: Arc<Metrics>,
        signer: Arc<Signer>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let domains = Domains::new(
            config.per_domain,
            config.throttle_pause,
            config.retry.max,
            queue.clone(),
            clock.clone(),
        );
        let pool = Arc::new(pool::Pool::new(config.per_domain, config.concurrency));
        Deliverer {
            connections: Arc::new(Semaphore::new(config.concurrency)),
            tasks: Arc::new(Semaphore::new(config.concurrency + READ_AHEAD)),
            domains,
            queue,
            resolver,
            clock,
            config,
            hostname,
            metrics,
            signer,
            pool,
        }
    }

    /// Runs until `stop` closes: wakes when a message is queued (`woken`) or
    /// the next one falls due, never scanning the queue.
    pub async fn run(self, woken: async_channel::Receiver<()>, stop: async_channel::Receiver<()>) {
        let this = Arc::new(self);
        smol::spawn(pool::sweeper(Arc::downgrade(&this.pool))).detach();
        let expiry = smol::spawn(expire(this.queue.clone(), this.clock.clone()));
        let rounds = Arc::new(AtomicUsize::new(0));
        // Resolves (to None) once the stop comes.
        async fn stopped<T>(stop: &async_channel::Receiver<()>) -> Option<T> {
            let _ = stop.recv().await;
            None
        }
        loop {
            // A permit first, then a message: what waits holds nothing.
            let permit = async { Some(this.tasks.acquire_arc().await) }
                .or(stopped(&stop))
                .await;
            let Some(permit) = permit else { break };
            if let Some(job) = this.queue.take(this.clock.now()) {
                rounds.fetch_add(1, Ordering::SeqCst);
                let (this, rounds) = (this.clone(), rounds.clone());
                smol::spawn(async move {
                    this.round(job, permit).await;
                    rounds.fetch_sub(1, Ordering::SeqCst);
                })
                .detach();
                continue;
            }
            drop(permit);
            // Nothing due: sleep until something is queued, falls due, or stop.
            let next = this.queue.next_wake();
            let sleep = async {
                match next {
                    Some(at) => this.clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
                Some(())
            };
            let woke = async { woken.recv().await.ok() }
                .or(sleep)
                .or(stopped(&stop))
                .await;
            if woke.is_none() && stop.is_closed() {
                break;
            }
        }
        drop(expiry);
        let deadline = Instant::now() + STOP_GRACE;
        while rounds.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        // Idle connections end with QUIT too, not a bare close.
        let idle = this.pool.drain();
        futures_util::future::join_all(idle.into_iter().map(client::Client::quit)).await;
    }
}

/// Drops finished records past `keep_status`, a bounded batch at a time.
async fn expire(queue: Queue, clock: Arc<dyn Clock>) {
    loop {
        match queue.expire(clock.now(), EXPIRE_BATCH).await {
            // A full batch: more may be waiting; go on after a breath.
            Ok(n) if n == EXPIRE_BATCH => {
                smol::Timer::after(Duration::from_millis(100)).await;
                continue;
            }
            Ok(_) => {}
            Err(e) => log::error!("cannot drop expired records: {e}"),
        }
        smol::Timer::after(EXPIRE_EVERY).await;
    }
}

#[cfg(test)]
mod tests;
