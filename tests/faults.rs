//! Fault suite without kills: numbered messages through the whole path
//! (smtplib -> mailman -> postoffice -> MX by DNS -> sink) while one part
//! fails for a while. In every scenario nothing answered 250 is lost and
//! nothing arrives twice. Each prints (and appends to target/tmp/faults.txt)
//! its line: sent, answered 250, delivered, lost, duplicated.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::faults::{assert_one_attempt_each, seq_of, wait_delivered, Path4, Sender, Tally};
use common::stack::{dnsmasq, host_ip, Received, Sink};
use common::{queue_records, spool_files, wait_until, TestDir};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Asserts the promise: every message answered 250, nothing of it lost,
/// nothing duplicated.
fn assert_whole(tally: &Tally, logs: &str) {
    assert_eq!(
        tally.answered, tally.sent,
        "every message is answered 250\n{logs}"
    );
    assert_nothing_lost(tally, logs);
}

/// Nothing answered 250 lost, nothing duplicated (some messages may have
/// been refused, as a full spool must).
fn assert_nothing_lost(tally: &Tally, logs: &str) {
    tally.report();
    assert_eq!(tally.strays, 0, "unknown messages arrived");
    assert_eq!(tally.lost, 0, "lost: {:?}\n{logs}", tally.lost_seqs);
    assert_eq!(tally.duplicated, 0, "duplicates without any kill\n{logs}");
}

/// What `sent` holds for every domain but d0.test (message numbers ending
/// in 0 go there), the domain the scenario makes misbehave.
fn not_to_d0(sent: &BTreeMap<u64, u16>) -> BTreeMap<u64, u16> {
    sent.iter()
        .filter(|(&s, _)| s % 10 != 0)
        .map(|(&s, &c)| (s, c))
        .collect()
}

/// The mailman id in the `Received:` header mailman added.
fn mailman_id(r: &Received) -> Option<String> {
    let text = r.text();
    let at = text.find("(hedwig mailman) with ")?;
    let rest = &text[at..];
    let id = rest.split(" id ").nth(1)?;
    Some(id.split_whitespace().next()?.to_string())
}

#[test]
fn postoffice_unreachable_mailman_spools_then_drains_in_order() {
    const N: u64 = 2000;
    let dir = TestDir::new();
    let mut path = Path4::start(&dir, &[], "");
    path.postoffice.kill9();

    let (sent, attempts) =
        Sender::start(&dir, path.mailman.addr(), 0, N, 8, SECS(60)).finish_counted(SECS(120));
    assert_one_attempt_each(&attempts);
    let answered = sent.values().filter(|&&c| c == 250).count();
    assert_eq!(
        answered as u64, N,
        "mailman takes everything while postoffice is down"
    );
    assert_eq!(
        spool_files(path.mailman.spool()).len() as u64,
        N,
        "all spooled"
    );
    std::thread::sleep(SECS(2));
    assert!(path.sink.received().is_empty());

    path.postoffice.restart();
    let received = wait_delivered(&path.sink, &sent, SECS(120));
    let tally = Tally::count("postoffice unreachable, then back", &sent, &received);
    assert_whole(&tally, &path.logs());
    assert!(
        wait_until(SECS(10), || spool_files(path.mailman.spool()).is_empty()),
        "mailman's spool drained"
    );

    // In order: postoffice's ids (its acceptance order) against mailman's
    // (the spool's order). Hand-offs run 8 at a time, each a batch of up to
    // 32 taken oldest first, and postoffice stages the parts of batches in
    // flight side by side: a message may pass those in flight with it (8 x
    // 32), never more. Draining by timers instead scattered the spool
    // across all 2000.
    let by_rcpt: BTreeMap<String, String> = received
        .iter()
        .map(|r| {
            (
                r.to[0].clone(),
                mailman_id(r).expect("mailman's Received id"),
            )
        })
        .collect();
    let mut accepted: Vec<(String, String)> = Vec::new(); // (postoffice id, mailman id)
    for record in queue_records(&dir.path().join("queue")) {
        let rcpt = record["recipients"][0]["address"].as_str().expect("rcpt");
        accepted.push((
            record["id"].as_str().expect("id").into(),
            by_rcpt[rcpt].clone(),
        ));
    }
    assert_eq!(accepted.len() as u64, N, "a record for every message");
    accepted.sort();
    let mut spool_order: Vec<&String> = accepted.iter().map(|(_, m)| m).collect();
    spool_order.sort();
    let displacement = accepted
        .iter()
        .enumerate()
        .map(|(i, (_, m))| i.abs_diff(spool_order.binary_search(&m).expect("known")))
        .max()
        .unwrap_or(0);
    eprintln!("drain order: largest displacement {displacement} of {N}");
    assert!(
        displacement <= 8 * 32,
        "drained out of order: a message moved {displacement} places"
    );
}

/// A tmpfs of `size` mounted on `path`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs on {} (the fault suite runs as root)",
            path.display()
        );
        Tmpfs(path.to_path_buf())
    }

    /// Fills it up with one file; returns the file.
    fn fill(&self) -> PathBuf {
        let filler = self.0.join("filler");
        // dd stops with "No space left on device": that is the point.
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=4096"])
            .arg(format!("of={}", filler.display()))
            .stderr(std::process::Stdio::null())
            .status();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn mailman_spool_full_answers_452_then_accepts_again() {
    let dir = TestDir::new();
    // Mounted before mailman starts: its spool lives in 1 MiB.
    let _spool = Tmpfs::mount(&dir.path().join("spool"), "1m");
    let mut path = Path4::start(&dir, &[], "");
    path.postoffice.kill9();

    // postoffice is down, so nothing drains: the spool fills. One try each.
    let first = Sender::start(&dir, path.mailman.addr(), 0, 600, 4, SECS(0)).finish(SECS(120));
    let full: Vec<u64> = first
        .iter()
        .filter(|(_, &c)| c != 250)
        .map(|(&s, _)| s)
        .collect();
    let codes: std::collections::BTreeSet<u16> = first.values().copied().collect();
    eprintln!(
        "spool full: {} of 600 answered 250, the rest {codes:?}",
        600 - full.len()
    );
    assert!(!full.is_empty(), "1 MiB cannot hold 600 messages");
    assert_eq!(
        codes,
        [250, 452].into(),
        "a full spool is 452 (and only that)"
    );

    // postoffice back: the spool drains, space returns, mail is taken again.
    path.postoffice.restart();
    let mut sent = first.clone();
    sent.retain(|_, c| *c == 250);
    wait_delivered(&path.sink, &sent, SECS(60));
    let again = Sender::start(&dir, path.mailman.addr(), 1000, 300, 4, SECS(30)).finish(SECS(60));
    assert!(
        again.values().all(|&c| c == 250),
        "accepts again: {again:?}"
    );
    let mut all = first;
    all.extend(again);
    let received = wait_delivered(&path.sink, &all, SECS(60));
    let tally = Tally::count(
        "mailman's spool full (1 MiB tmpfs), then space",
        &all,
        &received,
    );
    assert_nothing_lost(&tally, &path.logs());
}

#[test]
fn postoffice_queue_full_answers_503_and_mailman_keeps_the_message() {
    let dir = TestDir::new();
    let queue = Tmpfs::mount(&dir.path().join("queue"), "2m");
    let path = Path4::start(&dir, &[], "");
    let filler = queue.fill();

    let (sent, attempts) =
        Sender::start(&dir, path.mailman.addr(), 0, 50, 4, SECS(30)).finish_counted(SECS(60));
    assert_one_attempt_each(&attempts);
    assert!(
        sent.values().all(|&c| c == 250),
        "mailman takes them: {sent:?}"
    );
    assert!(
        wait_until(SECS(10), || path.mailman.stderr().contains("HTTP 503")),
        "postoffice answers 503 to the hand-off\n{}",
        path.logs()
    );
    std::thread::sleep(SECS(1));
    assert_eq!(
        spool_files(path.mailman.spool()).len(),
        50,
        "mailman keeps them"
    );
    assert!(path.sink.received().is_empty());

    std::fs::remove_file(filler).expect("free the space");
    let received = wait_delivered(&path.sink, &sent, SECS(60));
    let tally = Tally::count(
        "postoffice's queue full (503), then space",
        &sent,
        &received,
    );
    assert_whole(&tally, &path.logs());
    assert!(wait_until(SECS(10), || spool_files(path.mailman.spool()).is_empty()));
}

#[test]
fn dns_down_defers_then_delivers() {
    let dir = TestDir::new();
    let mut path = Path4::start(&dir, &[], "");
    path.dns.kill9();

    let (sent, attempts) =
        Sender::start(&dir, path.mailman.addr(), 0, 300, 8, SECS(30)).finish_counted(SECS(60));
    assert_one_attempt_each(&attempts);
    assert!(sent.values().all(|&c| c == 250));
    let deferred = wait_until(SECS(30), || {
        let (_, body) = path.postoffice.http("GET", "/v1/queue", None, None);
        let q: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        q["by_state"]["deferred"].as_u64().unwrap_or(0) >= 1
    });
    assert!(
        deferred,
        "no message deferred while DNS is down\n{}",
        path.logs()
    );
    assert!(path.sink.received().is_empty());

    let recs = common::faults::records(host_ip(&dir, 2));
    let recs: Vec<&str> = recs.iter().map(String::as_str).collect();
    path.dns = dnsmasq(&dir, path.dns_addr, &recs);
    let received = wait_delivered(&path.sink, &sent, SECS(90));
    let tally = Tally::count("DNS server down, then back", &sent, &received);
    assert_whole(&tally, &path.logs());
}

#[test]
fn a_stalling_mx_never_blocks_other_domains() {
    let dir = TestDir::new();
    let mut path = Path4::start(&dir, &[], "");
    // d0.test's MX now points at a server that accepts and never speaks.
    let stall_ip = host_ip(&dir, 3);
    let _stall = Sink::start(
        &dir,
        "stall",
        SocketAddr::new(stall_ip.into(), path.port),
        &["--stall"],
    );
    let mut recs = common::faults::records(host_ip(&dir, 2));
    recs.retain(|r| !r.contains("mx.d0.test,127"));
    recs.push(format!("--host-record=mx.d0.test,{stall_ip}"));
    let recs: Vec<&str> = recs.iter().map(String::as_str).collect();
    path.dns.kill9();
    path.dns = dnsmasq(&dir, path.dns_addr, &recs);

    let start = Instant::now();
    let (sent, attempts) =
        Sender::start(&dir, path.mailman.addr(), 0, 1000, 8, SECS(30)).finish_counted(SECS(60));
    assert_one_attempt_each(&attempts);
    assert!(
        sent.values().all(|&c| c == 250),
        "mailman answers 250 to all, d0.test's too"
    );
    let others = not_to_d0(&sent);
    let received = wait_delivered(&path.sink, &others, SECS(60));
    let took = start.elapsed();
    let tally = Tally::count("one MX stalls: the other 9 domains", &others, &received);
    assert_whole(&tally, &path.logs());
    assert!(
        received
            .iter()
            .all(|r| seq_of(r).is_some_and(|s| s % 10 != 0)),
        "nothing for d0.test can have arrived"
    );
    assert!(
        wait_until(SECS(20), || path.postoffice.log().contains("timed out")),
        "the stalled MX's timeout fired\n{}",
        path.logs()
    );
    eprintln!("900 messages to 9 healthy domains delivered in {took:?} beside a stalled one");
}

fn refused_for_a_while(code: &str, scenario: &str) {
    let dir = TestDir::new();
    let path = Path4::start(&dir, &["--refuse-for", "3", code], "");
    let (sent, attempts) =
        Sender::start(&dir, path.mailman.addr(), 0, 500, 8, SECS(30)).finish_counted(SECS(60));
    assert_one_attempt_each(&attempts);
    let received = wait_delivered(&path.sink, &sent, SECS(90));
    let tally = Tally::count(scenario, &sent, &received);
    assert_whole(&tally, &path.logs());
    let log = path.postoffice.log();
    assert!(
        log.lines()
            .any(|l| l.contains("status=deferred") && l.contains(code)),
        "the {code} deferred something first\n{}",
        path.logs()
    );
}

#[test]
fn a_destination_answering_421_for_a_while_gets_everything() {
    refused_for_a_while("421", "destination greets 421 for 3 s, then 250");
}

#[test]
fn a_destination_answering_450_for_a_while_gets_everything() {
    refused_for_a_while("450", "destination answers RCPT 450 for 3 s, then 250");
}

#[test]
fn a_550_sends_exactly_one_dsn_and_never_bounces_a_bounce() {
    let dir = TestDir::new();
    // d0.test refuses every recipient; the DSNs go to sender@origin.test.
    // (A bounce is never bounced: postoffice_retry.rs refuses a DSN too.)
    let path = Path4::start(&dir, &["--rcpt", "550:@d0.test"], "");
    // origin.test: the senders' domain, at the same sink.
    let mut recs = common::faults::records(host_ip(&dir, 2));
    recs.push("--mx-host=origin.test,mx.d1.test,10".into());
    let recs: Vec<&str> = recs.iter().map(String::as_str).collect();
    let mut path = path;
    path.dns.kill9();
    path.dns = dnsmasq(&dir, path.dns_addr, &recs);

    let (sent, attempts) =
        Sender::start(&dir, path.mailman.addr(), 0, 500, 8, SECS(30)).finish_counted(SECS(60));
    assert_one_attempt_each(&attempts);
    assert!(
        sent.values().all(|&c| c == 250),
        "mailman answers 250 to all, d0.test's too"
    );
    let others = not_to_d0(&sent);
    let bounced = sent.len() - others.len();
    wait_delivered(&path.sink, &others, SECS(60));
    let is_dsn = |r: &Received| r.from.is_empty();
    assert!(
        wait_until(SECS(30), || path
            .sink
            .received()
            .iter()
            .filter(|r| is_dsn(r))
            .count()
            >= bounced),
        "DSNs missing\n{}",
        path.logs()
    );
    std::thread::sleep(SECS(2));
    let received = path.sink.received();
    let (dsns, mail): (Vec<Received>, Vec<Received>) = received.into_iter().partition(is_dsn);
    let tally = Tally::count("d0.test answers 550: the other domains", &others, &mail);
    assert_whole(&tally, &path.logs());
    // Exactly one DSN per refused message, to its sender, naming it.
    let mut per_seq: BTreeMap<u64, usize> = BTreeMap::new();
    for d in &dsns {
        assert_eq!(d.to, ["sender@origin.test"]);
        let seq = seq_of_dsn(d).unwrap_or_else(|| panic!("DSN names no X-Seq:\n{}", d.text()));
        assert_eq!(seq % 10, 0, "DSN for a message that was delivered");
        *per_seq.entry(seq).or_default() += 1;
    }
    assert_eq!(per_seq.len(), bounced, "one DSN per refused message");
    assert!(per_seq.values().all(|&n| n == 1), "a message bounced twice");
    eprintln!("550: {bounced} refused, {} DSNs, each once", dsns.len());
}

/// The X-Seq of the message a DSN returns (its text/rfc822-headers part).
fn seq_of_dsn(dsn: &Received) -> Option<u64> {
    let text = dsn.text();
    let at = text.find("X-Seq: ")?;
    text[at + 7..].split_whitespace().next()?.parse().ok()
}
