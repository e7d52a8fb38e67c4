//! kill -9 while 500 messages stream in from several clients, restart on the same
//! spool: every message that got 250 arrives intact; a message arrives twice only
//! if postoffice had accepted it before the kill (mailman died before removing it).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mailman::{Config, Mailman};
use common::message::{check_arrived, fnv64, split_message, strip_received};
use common::postoffice::{Answer, Delivery, Postoffice};
use common::smtp::Smtp;
use common::{failed_files, spool_files, wait_until, TestDir};

const TOTAL: usize = 500;
const CLIENTS: usize = 4;
/// Kill once this many messages got 250.
const KILL_AFTER: usize = 200;
/// Bound on the whole sending phase.
const SENDING: Duration = Duration::from_secs(90);

struct Msg {
    from: String,
    to: Vec<String>,
    bytes: Vec<u8>,
}

/// Message `i`: random body of 200 B to 20 KB, its FNV checksum in X-Sum.
fn build(rng: &mut fastrand::Rng, i: usize) -> Msg {
    let mut body = String::new();
    let len = rng.usize(200..20_000);
    while body.len() < len {
        let line: String = (0..rng.usize(0..76)).map(|_| rng.alphanumeric()).collect();
        // Some lines start with a dot, to be stuffed on the wire.
        body.push_str(if rng.u8(..16) == 0 { "." } else { "" });
        body.push_str(&line);
        body.push_str("\r\n");
    }
    let head = format!(
        "From: sender{i}@example.org\r\nSubject: crash {i}\r\nDate: Tue, 1 Jul 2025 10:00:00 +0000\r\n\
         Message-ID: <crash.{i}@example.org>\r\nX-Seq: {i}\r\nX-Sum: {:016x}\r\n\r\n",
        fnv64(body.as_bytes())
    );
    Msg {
        from: format!("sender{i}@example.org"),
        to: (0..=i % 3)
            .map(|r| format!("rcpt{r}.{i}@example.net"))
            .collect(),
        bytes: [head.into_bytes(), body.into_bytes()].concat(),
    }
}

/// Connects (retrying while mailman is down) and says EHLO; None past `deadline`.
fn session(addr: std::net::SocketAddr, deadline: Instant) -> Option<Smtp> {
    while Instant::now() < deadline {
        if let Ok(mut s) = Smtp::connect(addr) {
            let ok = matches!(s.read_reply(), Ok(r) if r.code == 220)
                && s.send(b"EHLO client.test\r\n").is_ok()
                && matches!(s.read_reply(), Ok(r) if r.code == 250);
            if ok {
                return Some(s);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The X-Seq of an arrived hand-off and whether its X-Sum matches its body.
fn identify(d: &Delivery) -> Result<(usize, bool), String> {
    let (_, rest) = strip_received(&d.body)?;
    let (headers, body) = split_message(rest);
    let field = |name: &str| {
        headers.iter().find_map(|h| {
            let h = String::from_utf8_lossy(h);
            h.strip_prefix(name).map(|v| v.trim().to_string())
        })
    };
    let seq = field("X-Seq:")
        .and_then(|v| v.parse().ok())
        .ok_or("no X-Seq")?;
    let sum = field("X-Sum:").ok_or("no X-Sum")?;
    Ok((seq, sum == format!("{:016x}", fnv64(body))))
}

#[test]
fn kill_9_under_load_loses_nothing_acknowledged() {
    let mut rng = common::rng("kill_9_under_load_loses_nothing_acknowledged");
    let messages: Arc<Vec<Msg>> = Arc::new((0..TOTAL).map(|i| build(&mut rng, i)).collect());
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    // Small random delays keep several hand-offs in flight when the kill lands.
    po.set_policy(|_| Answer {
        status: 202,
        delay: Duration::from_micros(fastrand::u64(0..5000)),
    });
    let mut mailman = Mailman::start(&dir, Config::new(&dir, po.addr()));
    let addr = mailman.addr();

    let next = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let deadline = Instant::now() + SENDING;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, acked, messages) = (next.clone(), acked.clone(), messages.clone());
            std::thread::spawn(move || {
                let mut smtp: Option<Smtp> = None;
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= TOTAL {
                        break;
                    }
                    let Some(s) = smtp.take().or_else(|| session(addr, deadline)) else {
                        break;
                    };
                    let mut s = s;
                    let m = &messages[i];
                    let to: Vec<&str> = m.to.iter().map(String::as_str).collect();
                    // Refused (e.g. 421 on the way down) or cut off: message i was
                    // not acknowledged; the next one starts a new session.
                    if let Ok(Ok(id)) = s.try_send_mail(&m.from, &to, &m.bytes) {
                        acked.lock().unwrap().push((id, i));
                        smtp = Some(s);
                    }
                }
            })
        })
        .collect();

    let enough = wait_until(SENDING, || acked.lock().unwrap().len() >= KILL_AFTER);
    assert!(
        enough,
        "only {} messages got 250 within {SENDING:?}",
        acked.lock().unwrap().len()
    );
    mailman.kill9();
    let kill_at = Instant::now();
    let acked_before_kill = acked.lock().unwrap().len();
    // Requests the endpoint reads before the respawn come from the killed process
    // (its last bytes may still be in flight when kill9 returns); later ones from
    // the new one.
    std::thread::sleep(Duration::from_millis(300));
    let respawn_at = Instant::now();
    mailman.restart();
    eprintln!(
        "killed at {}, respawned at {}",
        common::clock(kill_at),
        common::clock(respawn_at)
    );
    for c in clients {
        c.join().expect("client thread");
    }
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{} of {TOTAL} messages got 250 ({acked_before_kill} before the kill); {} hand-offs before the kill",
        acked.len(),
        po.deliveries().iter().filter(|d| d.received_at < respawn_at).count()
    );
    assert!(
        acked.len() > acked_before_kill,
        "no message got 250 after the restart"
    );

    // Every acknowledged message arrives.
    let ids: Vec<String> = acked.iter().map(|(id, _)| id.clone()).collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(
        distinct.len(),
        ids.len(),
        "queued-as IDs repeat across the restart: {ids:?}"
    );
    po.wait_for_keys(&ids, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1500));
    let log = po.deliveries();

    // Every complete request is intact (requests cut short by the kill are
    // answered 400 by the endpoint and do not count as hand-offs), and every
    // acknowledged message arrived under its own key.
    let mut problems = Vec::new();
    let cut_short = log.iter().filter(|d| !d.complete).count();
    eprintln!("{cut_short} hand-off requests were cut short by the kill");
    for d in log.iter().filter(|d| d.complete) {
        match identify(d) {
            Ok((seq, true)) if seq < TOTAL => {
                let m = &messages[seq];
                if let Err(e) = check_arrived(&d.body, &m.bytes) {
                    problems.push(format!(
                        "message {seq} (key {:?}) arrived altered: {e}",
                        d.key
                    ));
                }
                if d.from.as_deref() != Some(m.from.as_str()) || d.to != m.to {
                    problems.push(format!("message {seq} envelope: {}", d.summary()));
                }
                if let Some((id, _)) = acked.iter().find(|(_, s)| *s == seq) {
                    if d.key.as_deref() != Some(id.as_str()) {
                        problems.push(format!(
                            "message {seq} got 250 as {id} but was handed off as {:?}",
                            d.key
                        ));
                    }
                }
            }
            Ok((seq, _)) => problems.push(format!(
                "message {seq} (key {:?}) arrived with a body not matching its X-Sum",
                d.key
            )),
            Err(e) => problems.push(format!("unidentifiable hand-off ({e}): {}", d.summary())),
        }
    }
    for (id, seq) in &acked {
        if !log
            .iter()
            .any(|d| d.accepted() && d.key.as_deref() == Some(id))
        {
            problems.push(format!("message {seq} got 250 as {id} but never arrived"));
        }
    }

    // Duplicates: at most one 2xx per key per process, and two only when the
    // killed process's request had reached postoffice and was answered 2xx: it
    // died before it could remove the spool file (or read the answer).
    let mut per_key: BTreeMap<&str, Vec<&Delivery>> = BTreeMap::new();
    for d in log.iter().filter(|d| d.accepted()) {
        per_key.entry(d.key()).or_default().push(d);
    }
    let mut allowed = Vec::new();
    for (key, ds) in &per_key {
        let first = ds.iter().filter(|d| d.received_at < respawn_at).count();
        let second = ds.len() - first;
        if first > 1 || second > 1 {
            let shown: Vec<String> = ds
                .iter()
                .map(|d| d.summary().chars().take(160).collect())
                .collect();
            problems.push(format!(
                "{key} accepted {first} times from the killed mailman and {second} from the restarted one:\n  {}",
                shown.join("\n  ")
            ));
        } else if first == 1 && second == 1 {
            // How long before the kill postoffice had answered: negative if the
            // answer went out after the kill and was never read.
            let answered = ds[0].answered_at.unwrap();
            let before = if answered <= kill_at {
                format!("{:?} before the kill", kill_at - answered)
            } else {
                format!("{:?} after the kill", answered - kill_at)
            };
            allowed.push(format!("{key} (answered {before})"));
        }
    }
    eprintln!(
        "{} duplicates of messages postoffice had accepted from the killed mailman: {allowed:#?}",
        allowed.len()
    );

    let clean = wait_until(Duration::from_secs(5), || {
        spool_files(mailman.spool()).is_empty()
    });
    if !clean {
        problems.push(format!(
            "spool not empty at the end: {:?}",
            spool_files(mailman.spool())
        ));
    }
    if !failed_files(mailman.spool()).is_empty() {
        problems.push(format!(
            "messages in failed/: {:?}",
            failed_files(mailman.spool())
        ));
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
