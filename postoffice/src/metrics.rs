//! Counters for `GET /metrics`, in Prometheus' text format, and the recent
//! past for the status page ([`crate::status::Activity`]), fed by the same calls.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::queue::record::{Record, State};
use crate::queue::Counts;
use crate::status::history::{Failure, Kind};
use crate::status::Activity;

/// Upper bounds of the delivery latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0, 3600.0, 86400.0,
];

/// Counters since start.
#[derive(Debug, Default)]
pub struct Metrics {
    accepted: AtomicU64,
    delivered: AtomicU64,
    deferred: AtomicU64,
    bounced: AtomicU64,
    /// Delivery latency (acceptance to 250) per bucket, plus +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_ms: AtomicU64,
    activity: Activity,
    /// Messages read for delivery and not yet let go, and the most at once.
    held: AtomicU64,
    held_max: AtomicU64,
}

/// A message's bytes read for delivery, counted while held.
#[derive(Debug)]
pub struct Held {
    bytes: Vec<u8>,
    metrics: std::sync::Arc<Metrics>,
}

impl Held {
    /// The message.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.metrics.held.fetch_sub(1, Relaxed);
        // Read into a kept buffer (the spool's read): it goes back there.
        hedwig::spool::buffers::give(std::mem::take(&mut self.bytes));
    }
}

impl Metrics {
    /// Counts `bytes` as a message in memory for as long as it is held.
    pub fn hold(self: &std::sync::Arc<Self>, bytes: Vec<u8>) -> Held {
        let now = self.held.fetch_add(1, Relaxed) + 1;
        self.held_max.fetch_max(now, Relaxed);
        Held {
            bytes,
            metrics: self.clone(),
        }
    }

    /// A message with `recipients` recipients was queued.
    pub fn accepted(&self, _recipients: usize) {
        self.accepted.fetch_add(1, Relaxed);
    }

    /// The recent past, for the status page.
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// A recipient was delivered `latency_ms` after acceptance.
    pub fn delivered(&self, latency_ms: u64) {
        self.delivered.fetch_add(1, Relaxed);
        self.activity.count(Kind::Delivered, crate::now_ms());
        let secs = latency_ms as f64 / 1000.0;
        let bucket = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.latency_sum_ms.fetch_add(latency_ms, Relaxed);
    }

    /// Recipient `i` of `record`, as it stands after an attempt at `now`,
    /// was deferred or bounced: counted, and kept for the status page.
    pub fn failed(&self, record: &Record, i: usize, now: u64) {
        let r = &record.recipients[i];
        let kind = if r.state == State::Bounced {
            self.bounced.fetch_add(1, Relaxed);
            Kind::Bounced
        } else {
            self.deferred.fetch_add(1, Relaxed);
            Kind::Deferred
        };
        self.activity.count(kind, now);
        let text = r.history.last().map_or("", |a| a.text.as_str());
        let failure = Failure {
            at: now,
            id: record.id.to_string(),
            recipient: r.address.to_string(),
            kind,
            text: text.to_string(),
        };
        self.activity.fail(failure, &record.domain(i));
    }

    /// The text exposition, with queue gauges from `counts`.
    pub fn render(&self, counts: &Counts) -> String {
        let mut out = String::new();
        // One sample with its HELP and TYPE lines; `kind` is counter or gauge.
        let metric = |out: &mut String, kind: &str, name: &str, help: &str, v: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            );
        };
        for (name, help, v) in [
            (
                "hedwig_messages_accepted_total",
                "Messages queued.",
                &self.accepted,
            ),
            (
                "hedwig_recipients_delivered_total",
                "Recipients delivered.",
                &self.delivered,
            ),
            (
                "hedwig_recipients_deferred_total",
                "Delivery attempts deferred.",
                &self.deferred,
            ),
            (
                "hedwig_recipients_bounced_total",
                "Recipients bounced.",
                &self.bounced,
            ),
        ] {
            metric(&mut out, "counter", name, help, v.load(Relaxed));
        }
        metric(
            &mut out,
            "gauge",
            "hedwig_queue_messages",
            "Messages not yet finished.",
            counts.messages,
        );
        out.push_str("# HELP hedwig_queue_recipients Recipients in the queue by state.\n# TYPE hedwig_queue_recipients gauge\n");
        for s in State::ALL {
            let _ = writeln!(
                out,
                "hedwig_queue_recipients{{state=\"{}\"}} {}",
                s.name(),
                counts.by_state.get(&s).copied().unwrap_or(0)
            );
        }
        for (name, help, v) in [
            (
                "hedwig_delivery_messages_held",
                "Messages read into memory for delivery now.",
                &self.held,
            ),
            (
                "hedwig_delivery_messages_held_max",
                "The most messages in memory for delivery at once since start.",
                &self.held_max,
            ),
        ] {
            metric(&mut out, "gauge", name, help, v.load(Relaxed));
        }
        let name = "hedwig_delivery_latency_seconds";
        let _ = write!(
            out,
            "# HELP {name} Time from acceptance to delivery.\n# TYPE {name} histogram\n"
        );
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.buckets[BUCKETS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.latency_sum_ms.load(Relaxed) as f64 / 1000.0
        );
        let _ = writeln!(out, "{name}_count {cumulative}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.accepted(2);
        m.delivered(30);
        m.delivered(2000);
        let mut r = Record::new(
            "0000000000001AAAAA".parse().unwrap(),
            None,
            &[hedwig::smtp::address::Address::parse("a@b.test").unwrap()],
            1,
            None,
            0,
        );
        let policy = crate::queue::record::Policy {
            backoff: hedwig::retry::Backoff {
                first: std::time::Duration::from_secs(1),
                max: std::time::Duration::from_secs(1),
            },
            give_up: std::time::Duration::from_secs(1),
        };
        let bounce = crate::queue::record::Outcome::Bounced {
            relay: None,
            error: "550 no".into(),
            reply: None,
        };
        r.apply(0, bounce, 5, &policy);
        m.failed(&r, 0, 5);
        let recent = m.activity().snapshot(5);
        assert_eq!(recent.failures[0].text, "550 no");
        assert_eq!(recent.per_minute[1439], [0, 0, 1]);
        let text = m.render(&Counts::default());
        assert!(text.contains("hedwig_messages_accepted_total 1\n"));
        assert!(text.contains("hedwig_recipients_delivered_total 2\n"));
        assert!(text.contains("hedwig_delivery_latency_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(text.contains("hedwig_delivery_latency_seconds_bucket{le=\"2.5\"} 2\n"));
        assert!(text.contains("hedwig_delivery_latency_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("hedwig_queue_recipients{state=\"deferred\"} 0\n"));
        assert!(text.contains("hedwig_recipients_bounced_total 1\n"));
    }
}
