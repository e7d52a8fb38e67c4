//! The status pages' HTML: one self-contained document each (inline CSS and
//! SVG, no script), refreshing itself every 30 s. Every text that comes from
//! outside (addresses, remote replies) is escaped and cut to a bounded
//! length, so a page stays under 100 KiB whatever the queue holds. Elements
//! carry ids and data attributes so tests (and scrapers) can read numbers
//! without parsing prose.

use std::fmt::Write;

use super::chart;
use super::history::{Failure, Kind, Reason};
use crate::api::rfc3339;
use crate::queue::record::{Record, State};
use crate::queue::Counts;

/// Domains listed in the queue table.
const DOMAINS: usize = 50;
/// Most bytes of escaped outside text: a domain or an address...
const NAME: usize = 100;
/// ...and a reply or an error (the message page shows it whole).
const TEXT: usize = 160;

/// Everything the main page shows.
#[derive(Debug)]
pub struct Overview<'a> {
    /// Our hostname, in the title.
    pub hostname: &'a str,
    /// Now, ms since 1970.
    pub now: u64,
    /// The queue's counts, as `GET /v1/queue` reports them.
    pub counts: &'a Counts,
    /// [delivered, deferred, bounced] per minute, 24 hours, oldest first.
    pub per_minute: &'a [[u32; 3]],
    /// Top deferral reasons.
    pub reasons: &'a [Reason],
    /// The last failures, newest first.
    pub failures: &'a [Failure],
}

/// Escapes text for HTML, whole.
fn esc(text: &str) -> String {
    cut(text, usize::MAX)
}

/// Escapes text for HTML in at most `max` bytes (and an ellipsis).
fn cut(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 8);
    let mut buf = [0u8; 4];
    for c in text.chars() {
        let piece = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' => "&quot;",
            '\'' => "&#39;",
            c if c.is_control() => " ",
            c => c.encode_utf8(&mut buf),
        };
        if out.len() + piece.len() > max {
            out.push('…');
            break;
        }
        out.push_str(piece);
    }
    out
}

fn head(title: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="30">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{}</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;color:#222}}
h1{{font-size:1.4em}} h2{{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ddd}}
table{{border-collapse:collapse}} td,th{{padding:.2em .8em .2em 0;text-align:left;vertical-align:top}}
td.n{{text-align:right;font-variant-numeric:tabular-nums}} .muted{{color:#777}}
.deferred{{color:#a86b00}} .bounced{{color:#b0241d}} .delivered{{color:#1d7a38}}
svg{{width:100%;height:auto}} code{{font-size:.95em}}
</style></head><body>
"#,
        esc(title)
    )
}

const FOOT: &str = "</body></html>\n";

/// The main page.
pub fn index(o: &Overview<'_>) -> String {
    let mut out = head(&format!("hedwig postoffice {}", o.hostname));
    let _ = write!(
        out,
        r#"<h1>postoffice {}</h1><p class="muted">{} UTC; this page refreshes every 30 s.</p>"#,
        esc(o.hostname),
        rfc3339(o.now)
    );
    // The queue, by state and by destination domain.
    let _ = write!(
        out,
        r#"<h2>Queue</h2><p><span id="messages">{}</span> messages not finished.</p><table id="by-state"><tr><th>recipients</th><th></th></tr>"#,
        o.counts.messages
    );
    for s in State::ALL {
        let n = o.counts.by_state.get(&s).copied().unwrap_or(0);
        let _ = write!(
            out,
            r#"<tr><td class="{0}">{0}</td><td class="n" id="state-{0}">{n}</td></tr>"#,
            s.name()
        );
    }
    out.push_str(
        r#"</table><table id="by-domain"><tr><th>domain</th><th>pending recipients</th></tr>"#,
    );
    let mut domains: Vec<(&String, &u64)> = o.counts.by_domain.iter().collect();
    domains.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    for (domain, n) in domains.iter().take(DOMAINS) {
        let d = cut(domain, NAME);
        let _ = write!(
            out,
            r#"<tr class="domain"><td>{d}</td><td class="n">{n}</td></tr>"#
        );
    }
    if domains.len() > DOMAINS {
        let rest: u64 = domains[DOMAINS..].iter().map(|(_, n)| **n).sum();
        let _ = write!(
            out,
            r#"<tr class="muted"><td>{} more domains</td><td class="n">{rest}</td></tr>"#,
            domains.len() - DOMAINS
        );
    }
    if domains.is_empty() {
        out.push_str(r#"<tr class="muted"><td colspan="2">nothing pending</td></tr>"#);
    }
    out.push_str("</table>");
    // The chart.
    out.push_str("<h2>Last 24 hours, recipients per minute</h2>");
    out.push_str(&chart::svg(o.per_minute));
    out.push_str(&chart::legend(o.per_minute));
    // Why deliveries are deferred.
    out.push_str(r#"<h2>Top deferral reasons, last 24 hours</h2><table id="reasons"><tr><th>domain</th><th>deferrals</th><th>reason</th></tr>"#);
    for r in o.reasons {
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td class="n">{}</td><td><code>{}</code></td></tr>"#,
            cut(&r.domain, NAME),
            r.count,
            cut(&r.text, TEXT)
        );
    }
    if o.reasons.is_empty() {
        out.push_str(r#"<tr class="muted"><td colspan="3">no deferrals</td></tr>"#);
    }
    out.push_str("</table>");
    // The last failures, each linking to its message.
    let _ = write!(
        out,
        r#"<h2>Last {} failures</h2><table id="failures"><tr><th>time (UTC)</th><th>message</th><th>recipient</th><th></th><th>reply or error</th></tr>"#,
        o.failures.len()
    );
    for f in o.failures {
        let kind = match f.kind {
            Kind::Bounced => "bounced",
            _ => "deferred",
        };
        let id = cut(&f.id, NAME);
        let _ = write!(
            out,
            r#"<tr class="failure"><td>{}</td><td><a href="messages/{id}">{id}</a></td><td>{}</td><td class="{kind}">{kind}</td><td><code>{}</code></td></tr>"#,
            rfc3339(f.at),
            cut(&f.recipient, NAME),
            cut(&f.text, TEXT)
        );
    }
    out.push_str("</table>");
    out.push_str(FOOT);
    out
}

/// The page of one message: its recipients and every attempt kept.
pub fn message(hostname: &str, r: &Record) -> String {
    let mut out = head(&format!("{} on {hostname}", r.id));
    let from = match r.sender() {
        "" => "<>",
        s => s,
    };
    let _ = write!(
        out,
        r#"<p><a href="../">&larr; postoffice {}</a></p><h1>Message <span id="message-id">{}</span></h1><table><tr><th>from</th><td>{}</td></tr><tr><th>size</th><td>{} bytes</td></tr><tr><th>received</th><td>{} UTC</td></tr></table>"#,
        esc(hostname),
        esc(&r.id.to_string()),
        esc(from),
        r.size,
        rfc3339(r.received_at)
    );
    for rcpt in &r.recipients {
        let state = rcpt.state.name();
        let _ = write!(
            out,
            r#"<h2 class="recipient" data-state="{state}">{} <span class="{state}">{state}</span></h2><p>{} attempts"#,
            esc(rcpt.address.as_str()),
            rcpt.attempts
        );
        if let Some(next) = rcpt.next_attempt.filter(|_| !rcpt.state.is_final()) {
            let _ = write!(out, "; next {} UTC", rfc3339(next));
        }
        out.push_str("</p>");
        let earlier = (rcpt.attempts as usize).saturating_sub(rcpt.history.len());
        if earlier > 0 {
            let _ = write!(
                out,
                r#"<p class="muted">{earlier} earlier attempts are not kept.</p>"#
            );
        }
        if !rcpt.history.is_empty() {
            out.push_str(r#"<table class="attempts"><tr><th>time (UTC)</th><th></th><th>relay</th><th>reply or error</th></tr>"#);
            for a in &rcpt.history {
                let s = a.state.name();
                let _ = write!(
                    out,
                    r#"<tr class="attempt"><td>{}</td><td class="{s}">{s}</td><td>{}</td><td><code>{}</code></td></tr>"#,
                    rfc3339(a.at),
                    esc(&a.relay.as_ref().map_or("-".into(), |r| r.to_string())),
                    esc(&a.text)
                );
            }
            out.push_str("</table>");
        }
    }
    out.push_str(FOOT);
    out
}

/// The page for an id the queue does not know (any more).
pub fn not_found(id: &str) -> String {
    let mut out = head("no such message");
    let _ = write!(
        out,
        r#"<p><a href="../">&larr; back</a></p><h1>No message {}</h1><p>It was never queued, or it finished longer ago than <code>keep_status</code>.</p>"#,
        esc(id)
    );
    out.push_str(FOOT);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::record::{Outcome, Policy};
    use std::time::Duration;

    const T: u64 = 1_700_000_000_000;

    #[test]
    fn escapes_and_bounds_outside_text() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(esc("a\r\nb"), "a  b");
        assert_eq!(cut(&"x".repeat(500), TEXT).chars().count(), TEXT + 1);
        assert_eq!(cut(&"&".repeat(500), 12), "&amp;&amp;…");
        assert_eq!(cut("äöü", 3), "ä…");
    }

    #[test]
    fn the_worst_page_stays_under_100_kib() {
        let mut counts = Counts::default();
        for n in 0..10_000 {
            counts
                .by_domain
                .insert(format!("{n}-{}.example", "d".repeat(60)), n);
        }
        let per_minute: Vec<[u32; 3]> = (0..1440u32)
            .map(|i| [i * 7919 % 1000, i % 97, i % 13])
            .collect();
        let long = "<&>".repeat(1000);
        let reasons: Vec<Reason> = (0..30)
            .map(|n| Reason {
                domain: format!("{n}{long}"),
                count: n,
                text: long.clone(),
            })
            .collect();
        let failures: Vec<Failure> = (0..50)
            .map(|n| Failure {
                at: T + n,
                id: format!("ID{n}"),
                recipient: long.clone(),
                kind: Kind::Bounced,
                text: long.clone(),
            })
            .collect();
        let o = Overview {
            hostname: "po.test",
            now: T,
            counts: &counts,
            per_minute: &per_minute,
            reasons: &reasons,
            failures: &failures,
        };
        let page = index(&o);
        assert!(page.len() < 100 * 1024, "{} bytes", page.len());
        assert!(page.contains(r#"<tr class="muted"><td>9950 more domains</td>"#));
        assert!(!page.contains("<&>"), "escaped");
        assert!(page.contains(r#"<meta http-equiv="refresh" content="30">"#));
        assert!(!page.contains("<script"));
    }

    #[test]
    fn message_page_lists_every_attempt_kept() {
        let policy = Policy {
            backoff: hedwig::retry::Backoff {
                first: Duration::from_secs(60),
                max: Duration::from_secs(60),
            },
            give_up: Duration::from_secs(86400),
        };
        let addr = |a: &str| hedwig::smtp::address::Address::parse(a).unwrap();
        let reply = |t: &str| hedwig::smtp::reply::Reply::from_text(t).unwrap();
        let mut r = Record::new(
            "0000000000001AAAAA".parse().unwrap(),
            None,
            &[addr("a@b.test"), addr("c@d.test")],
            10,
            None,
            T,
        );
        let deferred = Outcome::Deferred {
            relay: Some("mx.b.test[127.0.0.2]:25".parse().unwrap()),
            error: "x".into(),
            reply: Some(reply("450 4.2.0 <busy>")),
        };
        r.apply(0, deferred.clone(), T + 1, &policy);
        r.apply(0, deferred, T + 2, &policy);
        r.apply(
            1,
            Outcome::Delivered {
                relay: "mx.d.test[127.0.0.3]:25".parse().unwrap(),
                reply: reply("250 ok"),
            },
            T + 3,
            &policy,
        );
        let page = message("po.test", &r);
        assert_eq!(page.matches(r#"<tr class="attempt">"#).count(), 3);
        assert!(page.contains("450 4.2.0 &lt;busy&gt;"));
        assert!(
            page.contains(r#"data-state="deferred""#) && page.contains(r#"data-state="delivered""#)
        );
        assert!(page.contains("<td>&lt;&gt;</td>"), "the null sender");
    }
}
