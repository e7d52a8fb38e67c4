//! The forwarder drains the spool to postoffice: several hand-offs in flight,
//! oldest first, pausing with doubling backoff while postoffice is down or
//! answers 5xx/429 (see schedule.rs), `failed/` for a permanent refusal. A spool file is removed
//! only after postoffice's 2xx.

use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use hedwig::spool::Spool;
use smol::Timer;

use crate::http::{Handoff, Outcome};
use crate::schedule::Schedule;
use crate::shutdown::Shutdown;

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
    match spool.list() {
        Ok(ids) => {
            if !ids.is_empty() {
                log::info!("resuming {} spooled messages", ids.len());
            }
            for id in ids {
                schedule.add(id);
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
            let Some(id) = schedule.pop_due(now, in_flight) else {
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
            schedule.next_due(now, in_flight)
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
            Wake::New(id) => schedule.add(id),
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
            schedule.succeeded(&id);
            if let Err(e) = spool.remove(&id) {
                // Sent again after a restart; postoffice answers the repeat by its key.
                log::error!("{id}: delivered but cannot remove spool file: {e}");
            }
        }
        Outcome::Retry(why) => {
            let wait = schedule.failed(id.clone(), Instant::now(), retry.0, retry.1);
            log::warn!("{id}: hand-off deferred ({why}); next try in {wait:?}");
        }
        Outcome::Refused(why) => {
            schedule.forget(&id);
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
