//! The status page postoffice serves at `/` (see `api::status` for the
//! route and its Basic authentication): the queue by state and domain, a
//! 24-hour chart, deferral reasons, the last failures, a page per message.
//!
//! - [`history`]: what is remembered of recent deliveries, in fixed memory;
//! - [`chart`]: that history as inline SVG;
//! - [`page`]: the HTML, server-rendered, no script, no external asset.
//!
//! The delivery loop writes to [`Activity`] through the metrics, a short
//! lock per recipient; the page reads a copy, so it never holds up delivery.

pub mod chart;
pub mod history;
pub mod page;

use std::sync::{Mutex, MutexGuard};

use history::{Failure, History, Kind, Reason};

/// The recent past, shared by the delivery loop and the page.
#[derive(Debug, Default)]
pub struct Activity(Mutex<History>);

/// A copy of the recent past for one page.
#[derive(Debug)]
pub struct Snapshot {
    /// [delivered, deferred, bounced] per minute, oldest first.
    pub per_minute: Vec<[u32; 3]>,
    /// The last failures, newest first.
    pub failures: Vec<Failure>,
    /// Top deferral reasons by domain.
    pub reasons: Vec<Reason>,
}

impl Activity {
    fn lock(&self) -> MutexGuard<'_, History> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts an outcome at `now`.
    pub fn count(&self, kind: Kind, now: u64) {
        self.lock().count(kind, now);
    }

    /// Remembers a failed attempt to `domain`.
    pub fn fail(&self, failure: Failure, domain: &str) {
        self.lock().fail(failure, domain);
    }

    /// What the page shows at `now`: ten domains, three reasons each.
    pub fn snapshot(&self, now: u64) -> Snapshot {
        let history = self.lock();
        Snapshot {
            per_minute: history.per_minute(now),
            failures: history.failures(),
            reasons: history.reasons(now, 10, 3),
        }
    }
}
