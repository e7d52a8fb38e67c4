//! The forwarder drains the spool to postoffice: several hand-offs in flight,
//! oldest first, each taking what is waiting up to a batch (http.rs sends a
//! batch as one request), pausing with doubling backoff while postoffice is down or
//! answers 5xx/429 (see schedule.rs), `failed/` for a permanent refusal. A
//! spool file is removed only after postoffice's 2xx.
//!
//! What it holds per spooled message is its id (16 bytes): a spool of
//! 100,000 messages waiting for postoffice costs a few MiB. The spool is
//! listed in the background, so mailman takes mail from its first second
//! however much is spooled.

use std::time::Instant;

use futures_lite::FutureExt;
use hedwig::id::Id;
use hedwig::retry::Backoff;
use hedwig::spool::Spool;
use smol::Timer;

use crate::http::{Handoff, Outcome};
use crate::schedule::Schedule;
use crate::shutdown::Shutdown;

/// What woke the forwarder.
enum Wake {
    New(Id),
    Listed(Vec<Id>),
    Finished(Vec<(Id, Outcome)>),
    Timer,
    Stop,
}

/// Runs until shutdown: takes ids from `accepted` (and the spool's content at
/// start) and hands them off through `handoff`, `concurrency` at a time.
pub async fn run(
    spool: Spool,
    handoff: Handoff,
    accepted: async_channel::Receiver<Id>,
    concurrency: usize,
    retry: Backoff,
    shutdown: Shutdown,
) {
    let mut schedule = Schedule::default();
    // What was spooled before this start, listed on the blocking pool while
    // new mail is already taken and handed off.
    let listing = {
        let spool = spool.clone();
        smol::spawn(async move { spool.list().await })
    };
    let mut listing = Some(listing);
    // Ids announced while the listing runs: it may hold them too.
    let mut announced = std::collections::HashSet::new();
    let (done_tx, done_rx) = async_channel::unbounded();
    let mut in_flight = 0usize;
    loop {
        // Start as many hand-offs as allowed, each taking up to a batch of
        // what is waiting: a burst goes in one exchange, a lone message at
        // once and alone.
        let now = Instant::now();
        while in_flight < concurrency {
            let ids = schedule.pop_batch(now, in_flight, handoff.batch());
            if ids.is_empty() {
                break;
            }
            in_flight += 1;
            let (spool, handoff, done_tx) = (spool.clone(), handoff.clone(), done_tx.clone());
            smol::spawn(async move {
                let outcomes = handoff.send_many(&spool, ids).await;
                let _ = done_tx.send(outcomes).await;
            })
            .detach();
        }
        // Sleep until a new message, a finished hand-off, the listing, the
        // next due time, or shutdown.
        let timer_at = if in_flight < concurrency {
            schedule.next_due(now, in_flight)
        } else {
            None
        };
        let wake = async { accepted.recv().await.map_or(Wake::Stop, Wake::New) }
            .or(async { done_rx.recv().await.map_or(Wake::Stop, Wake::Finished) })
            .or(async {
                match listing.as_mut() {
                    Some(task) => match task.await {
                        Ok(ids) => Wake::Listed(ids),
                        Err(e) => {
                            log::error!("cannot list spool: {e}");
                            Wake::Listed(Vec::new())
                        }
                    },
                    None => std::future::pending().await,
                }
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
            Wake::New(id) => {
                // A group commit answers its sessions together: take all
                // it announced, so they can share a hand-off.
                for id in std::iter::once(id).chain(std::iter::from_fn(|| accepted.try_recv().ok()))
                {
                    if listing.is_some() {
                        announced.insert(id);
                    }
                    schedule.add(id);
                }
            }
            Wake::Listed(ids) => {
                listing = None;
                if !ids.is_empty() {
                    log::info!("resuming {} spooled messages", ids.len());
                }
                // A message accepted since the start may be listed too, and
                // be in flight or handed off already: it came as New.
                for id in ids {
                    if !announced.contains(&id) {
                        schedule.add(id);
                    }
                }
                announced = Default::default();
            }
            Wake::Finished(outcomes) => {
                in_flight -= 1;
                finish(&spool, &mut schedule, outcomes, retry);
            }
            Wake::Timer => {}
            Wake::Stop => return,
        }
    }
}

/// Acts on one hand-off's outcomes; file work goes on in the background
/// (the messages are out of the schedule already), the removals of a batch
/// in one commit.
fn finish(spool: &Spool, schedule: &mut Schedule, outcomes: Vec<(Id, Outcome)>, retry: Backoff) {
    let mut removals = Vec::new();
    for (id, outcome) in outcomes {
        match outcome {
            Outcome::Accepted => {
                schedule.succeeded(id);
                removals.push(id);
            }
            Outcome::Retry(why) => {
                let wait = schedule.failed(id, Instant::now(), retry);
                log::warn!("{id}: hand-off deferred ({why}); next try in {wait:?}");
            }
            Outcome::Refused(why) => {
                schedule.forget(id);
                let spool = spool.clone();
                smol::spawn(async move {
                    match spool.fail(id).await {
                        Ok(path) => log::error!(
                            "{id}: refused by postoffice ({why}); kept in {}",
                            path.display()
                        ),
                        Err(e) => log::error!(
                            "{id}: refused by postoffice ({why}); cannot move to failed/: {e}"
                        ),
                    }
                })
                .detach();
            }
        }
    }
    if removals.is_empty() {
        return;
    }
    let spool = spool.clone();
    smol::spawn(async move {
        let changes = removals.iter().map(|&id| spool.removal(id)).collect();
        if let Err(e) = spool.committer().commit_all(changes).await {
            // Sent again after a restart; postoffice answers the repeat by its key.
            let ids: Vec<String> = removals.iter().map(Id::to_string).collect();
            log::error!(
                "{}: handed off but cannot remove spool files: {e}",
                ids.join(",")
            );
        }
    })
    .detach();
}
