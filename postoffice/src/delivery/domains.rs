//! Connections per destination domain, and the messages waiting for one.
//! Each domain's limit is its throttle window ([`super::throttle`]):
//! `per_domain`, halved when the provider throttles, grown back by
//! successes, with a pause after a throttling.
//!
//! A message whose domain has no connection free is not held by a task: its
//! id is parked with the domain (16 bytes) and put back into the queue's
//! schedule when one of the domain's deliveries ends, or, when the domain
//! is paused, due at the end of the pause. So a slow, dead or throttling
//! destination holds only its own connections, and thousands of messages
//! to it cost no task, no record and no message in memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hedwig::id::Id;

use super::clock::Clock;
use super::throttle::{Change, Feedback, Ticket, Wait, Windows};
use crate::queue::Queue;

/// Every domain's window and parked messages, under one lock.
pub struct Domains {
    state: Mutex<State>,
    /// Rings when a connection closes, for a delivery waiting for one.
    freed: event_listener::Event,
    queue: Queue,
    clock: Arc<dyn Clock>,
}

struct State {
    windows: Windows,
    parked: HashMap<String, VecDeque<Id>>,
}

impl std::fmt::Debug for Domains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domains").finish()
    }
}

/// One of a domain's connections, held for one delivery; give it back with
/// [`Slot::close`] and what the session learnt (dropped: neutral). Closing
/// puts the domain's first parked message back into the schedule.
pub struct Slot {
    domain: String,
    ticket: Option<Ticket>,
    domains: Arc<Domains>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("domain", &self.domain)
            .finish()
    }
}

impl Domains {
    /// Windows of at most `per_domain` (pauses doubling from `pause` up to
    /// `max_pause`); parked messages go back to `queue`.
    pub fn new(
        per_domain: usize,
        pause: Duration,
        max_pause: Duration,
        queue: Queue,
        clock: Arc<dyn Clock>,
    ) -> Arc<Domains> {
        Arc::new(Domains {
            state: Mutex::new(State {
                windows: Windows::new(per_domain, pause, max_pause),
                parked: HashMap::new(),
            }),
            freed: event_listener::Event::new(),
            queue,
            clock,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn slot(self: &Arc<Self>, domain: &str, ticket: Ticket) -> Slot {
        Slot {
            domain: domain.to_string(),
            ticket: Some(ticket),
            domains: self.clone(),
        }
    }

    /// A connection to `domain` if its window allows one now.
    pub fn try_enter(self: &Arc<Self>, domain: &str) -> Option<Slot> {
        let ticket = self.lock().windows.try_open(domain, Instant::now()).ok()?;
        Some(self.slot(domain, ticket))
    }

    /// A connection to `domain` if its window allows one now; else message
    /// `id` waits: parked until a connection closes (both under one lock, so
    /// a close meanwhile cannot be missed), or, when the domain is paused,
    /// back in the schedule due when the pause ends.
    pub fn enter_or_park(self: &Arc<Self>, domain: &str, id: Id) -> Option<Slot> {
        let mut state = self.lock();
        match state.windows.try_open(domain, Instant::now()) {
            Ok(ticket) => Some(self.slot(domain, ticket)),
            Err(Wait::Slot) => {
                state
                    .parked
                    .entry(domain.to_string())
                    .or_default()
                    .push_back(id);
                None
            }
            Err(Wait::Until(t)) => {
                drop(state);
                let wait = t.saturating_duration_since(Instant::now()).as_millis() as u64;
                self.queue.put_back(id, self.clock.now() + wait);
                None
            }
        }
    }

    /// A connection to `domain`, waiting for its window.
    pub async fn enter(self: &Arc<Self>, domain: &str) -> Slot {
        loop {
            // Listening before looking, so a close in between is not missed.
            let freed = self.freed.listen();
            let tried = self.lock().windows.try_open(domain, Instant::now());
            match tried {
                Ok(ticket) => return self.slot(domain, ticket),
                Err(Wait::Slot) => freed.await,
                Err(Wait::Until(t)) => {
                    smol::Timer::at(t).await;
                }
            }
        }
    }

    /// Messages parked in all.
    #[cfg(test)]
    pub fn parked(&self) -> usize {
        self.lock().parked.values().map(VecDeque::len).sum()
    }
}

impl Slot {
    /// Gives the connection back with what the session learnt; `why` is
    /// the reply behind it, for the log.
    pub fn close(mut self, feedback: Feedback, why: &str) {
        self.give_back(feedback, why);
    }

    fn give_back(&mut self, feedback: Feedback, why: &str) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let domains = &self.domains;
        let mut state = domains.lock();
        let change = state
            .windows
            .close(&self.domain, ticket, feedback, Instant::now());
        let unparked = match state.parked.get_mut(&self.domain) {
            Some(list) => {
                let id = list.pop_front();
                if list.is_empty() {
                    state.parked.remove(&self.domain);
                }
                id
            }
            None => None,
        };
        drop(state);
        if let Some(id) = unparked {
            domains.queue.put_back(id, domains.clock.now());
        }
        domains.freed.notify(usize::MAX);
        match change {
            Some(Change {
                from,
                to,
                pause: Some(pause),
            }) => log::warn!(
                "{}: throttled ({why}): concurrency {from} -> {to}, new connections pause {}s",
                self.domain,
                pause.as_secs_f64()
            ),
            Some(Change { from, to, .. }) => {
                log::info!("{}: concurrency {from} -> {to}", self.domain)
            }
            None => {}
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.give_back(Feedback::Neutral, "");
    }
}
