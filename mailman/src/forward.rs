//! The forwarder drains the spool to postoffice: several hand-offs in flight,
//! oldest first, retries with doubling backoff while postoffice is down or
//! answers 5xx/429, `failed/` for a permanent refusal. A spool file is removed
//! only after postoffice's 2xx.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use hedwig::spool::Spool;
use smol::Timer;

use crate::http::{Handoff, Outcome};
use crate::shutdown::Shutdown;

/// Messages waiting for their next attempt, earliest first, then oldest id
/// first. Time is a parameter, so this is tested without sleeping.
#[derive(Debug, Default)]
pub struct Schedule {
    due: BTreeSet<(Instant, String)>,
    failures: HashMap<String, u32>,
}

impl Schedule {
    /// Adds a message to try at `at`.
    pub fn add(&mut self, id: String, at: Instant) {
        self.due.insert((at, id));
    }

    /// Takes the most urgent message due by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<String> {
        let first = self.due.first()?;
        if first.0 > now {
            return None;
        }
        self.due.pop_first().map(|(_, id)| id)
    }

    /// When the next message falls due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.first().map(|(at, _)| *at)
    }

    /// Records a failed attempt and schedules the next one; returns the wait.
    pub fn retry(&mut self, id: String, now: Instant, first: Duration, max: Duration) -> Duration {
        let failures = self.failures.entry(id.clone()).or_default();
        *failures += 1;
        let wait = hedwig::retry::backoff(first, max, *failures);
        self.add(id, now + wait);
        wait
    }

    /// Forgets a message that is done with.
    pub fn done(&mut self, id: &str) {
        self.failures.remove(id);
    }
}

/// What woke the forwarder.
enum Wake {
    New(String),
    Finished(String, Outcome),
    Timer,
    Stop,
}

/// Runs until shutdown: takes ids from `accepted` (and the spool's content at
/// start) and hands them off through `handoff`, `concurrency` at a time.
pub async fn run(
    spool: Spool,
    handoff: Handoff,
    accepted: async_channel::Receiver<String>,
    concurrency: usize,
    retry: (Duration, Duration),
    shutdown: Shutdown,
) {
    let mut schedule = Schedule::default();
    let start = Instant::now();
    match spool.list() {
        Ok(ids) => {
            if !ids.is_empty() {
                log::info!("resuming {} spooled messages", ids.len());
            }
            for id in ids {
                schedule.add(id, start);
            }
        }
        Err(e) => log::error!("cannot list spool: {e}"),
    }
    let (done_tx, done_rx) = async_channel::unbounded();
    let mut in_flight = 0usize;
    loop {
        // Start as many hand-offs as allowed.
        let now = Instant::now();
        while in_flight < concurrency {
            let Some(id) = schedule.pop_due(now) else {
                break;
            };
            in_flight += 1;
            let (spool, handoff, done_tx) = (spool.clone(), handoff.clone(), done_tx.clone());
            smol::spawn(async move {
                let outcome = handoff.send(&spool, &id).await;
                let _ = done_tx.send((id, outcome)).await;
            })
            .detach();
        }
        // Sleep until a new message, a finished hand-off, the next due time, or shutdown.
        let timer_at = if in_flight < concurrency {
            schedule.next_due()
        } else {
            None
        };
        let wake = async { accepted.recv().await.map_or(Wake::Stop, Wake::New) }
            .or(async {
                done_rx
                    .recv()
                    .await
                    .map_or(Wake::Stop, |(id, o)| Wake::Finished(id, o))
            })
            .or(async {
                match timer_at {
                    Some(at) => Timer::at(at).await,
                    None => std::future::pending().await,
                };
                Wake::Timer
            })
            .or(async {
                shutdown.wait().await;
                Wake::Stop
            })
            .await;
        match wake {
            Wake::New(id) => schedule.add(id, Instant::now()),
            Wake::Finished(id, outcome) => {
                in_flight -= 1;
                finish(&spool, &mut schedule, id, outcome, retry);
            }
            Wake::Timer => {}
            Wake::Stop => return,
        }
    }
}

/// Acts on one hand-off's outcome.
fn finish(
    spool: &Spool,
    schedule: &mut Schedule,
    id: String,
    outcome: Outcome,
    retry: (Duration, Duration),
) {
    match outcome {
        Outcome::Accepted => {
            schedule.done(&id);
            if let Err(e) = spool.remove(&id) {
                // Sent again after a restart; postoffice answers the repeat by its key.
                log::error!("{id}: delivered but cannot remove spool file: {e}");
            }
        }
        Outcome::Retry(why) => {
            let wait = schedule.retry(id.clone(), Instant::now(), retry.0, retry.1);
            log::warn!("{id}: hand-off deferred ({why}); next try in {wait:?}");
        }
        Outcome::Refused(why) => {
            schedule.done(&id);
            match spool.fail(&id) {
                Ok(path) => log::error!(
                    "{id}: refused by postoffice ({why}); kept in {}",
                    path.display()
                ),
                Err(e) => {
                    log::error!("{id}: refused by postoffice ({why}); cannot move to failed/: {e}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn schedule_orders_by_due_then_id() {
        let t = Instant::now();
        let mut s = Schedule::default();
        s.add("B".into(), t);
        s.add("A".into(), t);
        s.add("C".into(), t + S);
        assert_eq!(s.pop_due(t).as_deref(), Some("A"));
        assert_eq!(s.pop_due(t).as_deref(), Some("B"));
        assert_eq!(s.pop_due(t), None);
        assert_eq!(s.next_due(), Some(t + S));
        assert_eq!(s.pop_due(t + S).as_deref(), Some("C"));
    }

    #[test]
    fn retries_wait_longer_each_time_until_done() {
        let t = Instant::now();
        let mut s = Schedule::default();
        assert_eq!(s.retry("A".into(), t, S, 4 * S), S);
        s.pop_due(t + S).unwrap();
        assert_eq!(s.retry("A".into(), t, S, 4 * S), 2 * S);
        s.pop_due(t + 2 * S).unwrap();
        assert_eq!(s.retry("A".into(), t, S, 4 * S), 4 * S);
        s.pop_due(t + 4 * S).unwrap();
        assert_eq!(s.retry("A".into(), t, S, 4 * S), 4 * S);
        s.done("A");
        s.pop_due(t + 4 * S).unwrap();
        assert_eq!(s.retry("A".into(), t, S, 4 * S), S);
    }
}
