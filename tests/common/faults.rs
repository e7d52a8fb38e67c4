//! The fault suite's harness: the whole path (Python's smtplib -> mailman ->
//! postoffice -> the MX dnsmasq names -> sink.py) with uniquely numbered
//! messages, and the count of what arrived per message: sent, answered 250,
//! delivered, lost, duplicated.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::mailman::{Config, Mailman};
use super::stack::{dnsmasq, free_port, host_ip, Postoffice, Proc, Received, Sink};
use super::{wait_until, TestDir};

/// Domains the messages go to: d0.test .. d9.test.
pub const DOMAINS: usize = 10;
/// postoffice's delivery concurrency in the fault suite: with the sender's
/// sessions, the bound on duplicates one kill may cause.
pub const DELIVERY_CONCURRENCY: usize = 20;
/// After the last message arrives, how long no further arrival must come
/// before duplicates are counted.
pub const QUIET: Duration = Duration::from_secs(3);

/// The DNS server's records: every dN.test has its MX at `mx`.
pub fn records(mx: Ipv4Addr) -> Vec<String> {
    let mut r: Vec<String> = (0..DOMAINS)
        .map(|d| format!("--mx-host=d{d}.test,mx.d{d}.test,10"))
        .collect();
    r.extend((0..DOMAINS).map(|d| format!("--host-record=mx.d{d}.test,{mx}")));
    r
}

/// The whole path, every process real.
pub struct Path4 {
    pub dns: Proc,
    pub dns_addr: SocketAddr,
    pub sink: Sink,
    pub postoffice: Postoffice,
    pub mailman: Mailman,
    /// The SMTP port of every MX (sink.py's).
    pub port: u16,
}

/// postoffice's section for the fault suite: the test's DNS, short retries
/// and timeouts so a scenario ends in seconds, `extra` appended.
pub fn postoffice_body(dns: SocketAddr, port: u16, extra: &str) -> String {
    format!(
        "dns: Nameservers([\"{dns}\"]), delivery: (port: {port}, starttls: Never, \
         concurrency: {DELIVERY_CONCURRENCY}, \
         connect_timeout: \"2s\", command_timeout: \"3s\", \
         retry: (first: \"200ms\", max: \"1s\", give_up: \"10m\"){extra})"
    )
}

impl Path4 {
    /// Starts dnsmasq, a sink with `sink_options`, postoffice and mailman.
    pub fn start(dir: &TestDir, sink_options: &[&str], delivery_extra: &str) -> Path4 {
        let port = free_port(dir);
        let dns_addr = SocketAddr::new(host_ip(dir, 1).into(), port);
        let mx = host_ip(dir, 2);
        let recs = records(mx);
        let recs: Vec<&str> = recs.iter().map(String::as_str).collect();
        let dns = dnsmasq(dir, dns_addr, &recs);
        let sink = Sink::start(dir, "mx", SocketAddr::new(mx.into(), port), sink_options);
        let postoffice = Postoffice::start(
            dir,
            dir.free_addr(),
            &postoffice_body(dns_addr, port, delivery_extra),
        );
        let mailman = Mailman::start(dir, Config::new(dir, postoffice.addr));
        Path4 {
            dns,
            dns_addr,
            sink,
            postoffice,
            mailman,
            port,
        }
    }

    /// The logs of postoffice and mailman, for a failure message.
    pub fn logs(&self) -> String {
        format!(
            "--- postoffice\n{}\n--- mailman\n{}",
            tail(&self.postoffice.log(), 60),
            tail(&self.mailman.stderr(), 60)
        )
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// tests/peers/send.py running in the background.
pub struct Sender {
    proc: Proc,
    out: PathBuf,
}

impl Sender {
    /// Sends messages `first..first+count` to `server` over `sessions`
    /// connections, retrying each unanswered one for `retry_for`.
    pub fn start(
        dir: &TestDir,
        server: SocketAddr,
        first: u64,
        count: u64,
        sessions: u32,
        retry_for: Duration,
    ) -> Sender {
        let out = dir.path().join(format!("sent-{first}.txt"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/send.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .arg(server.to_string())
            .arg(&out)
            .arg(first.to_string())
            .arg(count.to_string())
            .args(["--sessions", &sessions.to_string()])
            .args(["--domains", &DOMAINS.to_string()])
            .args(["--retry-for", &retry_for.as_secs().to_string()]);
        let proc = Proc::spawn(dir.path(), &format!("send-{first}"), &mut cmd);
        Sender { proc, out }
    }

    /// Whether it is still sending.
    pub fn running(&mut self) -> bool {
        self.proc.alive()
    }

    /// Waits for the end (at most `limit`); every message's last reply code.
    pub fn finish(self, limit: Duration) -> BTreeMap<u64, u16> {
        self.finish_counted(limit).0
    }

    /// [`Sender::finish`], with how many attempts each message took.
    pub fn finish_counted(mut self, limit: Duration) -> (BTreeMap<u64, u16>, BTreeMap<u64, u32>) {
        let ended = wait_until(limit, || !self.proc.alive());
        assert!(
            ended,
            "send.py still running after {limit:?}:\n{}",
            self.proc.log()
        );
        let text = std::fs::read_to_string(&self.out)
            .unwrap_or_else(|e| panic!("send.py wrote no results ({e}):\n{}", self.proc.log()));
        let mut codes = BTreeMap::new();
        let mut attempts = BTreeMap::new();
        for line in text.lines() {
            let mut f = line.split(' ');
            let seq = f.next().and_then(|s| s.parse().ok()).expect("seq");
            codes.insert(seq, f.next().and_then(|s| s.parse().ok()).expect("code"));
            attempts.insert(
                seq,
                f.next().and_then(|s| s.parse().ok()).expect("attempts"),
            );
        }
        (codes, attempts)
    }
}

/// The `X-Seq:` number of a message the sink received.
pub fn seq_of(message: &Received) -> Option<u64> {
    let text = message.text();
    let header = text.split("\r\n\r\n").next()?;
    header
        .lines()
        .find_map(|l| l.strip_prefix("X-Seq: "))
        .and_then(|n| n.trim().parse().ok())
}

/// What one scenario sent and what arrived.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub scenario: String,
    pub sent: usize,
    pub answered: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicated: usize,
    /// Messages answered 250 that never arrived.
    pub lost_seqs: Vec<u64>,
    /// Arrivals of numbers never sent (must be none).
    pub strays: usize,
}

impl Tally {
    /// Counts `sent` (seq -> last reply code) against what `received` holds.
    pub fn count(scenario: &str, sent: &BTreeMap<u64, u16>, received: &[Received]) -> Tally {
        let mut arrivals: BTreeMap<u64, usize> = BTreeMap::new();
        let mut strays = 0;
        for r in received {
            match seq_of(r) {
                Some(seq) if sent.contains_key(&seq) => *arrivals.entry(seq).or_default() += 1,
                _ => strays += 1,
            }
        }
        let answered: BTreeSet<u64> = sent
            .iter()
            .filter(|(_, &code)| code == 250)
            .map(|(&s, _)| s)
            .collect();
        let lost_seqs: Vec<u64> = answered
            .iter()
            .filter(|s| !arrivals.contains_key(s))
            .copied()
            .collect();
        Tally {
            scenario: scenario.to_string(),
            sent: sent.len(),
            answered: answered.len(),
            delivered: arrivals.len(),
            lost: lost_seqs.len(),
            duplicated: arrivals.values().map(|n| n - 1).sum(),
            lost_seqs,
            strays,
        }
    }

    /// Whether everything answered 250 has arrived.
    pub fn complete(sent: &BTreeMap<u64, u16>, received: &[Received]) -> bool {
        Tally::count("", sent, received).lost == 0
    }

    /// Prints the line and appends it to target/tmp/faults.txt, the report
    /// the README's fault table is made from.
    pub fn report(&self) {
        eprintln!("{self}");
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("faults.txt");
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{self}");
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "| {} | {} | {} | {} | {} | {} |",
            self.scenario, self.sent, self.answered, self.delivered, self.lost, self.duplicated
        )
    }
}

/// Waits until everything answered 250 has arrived at `sink` (or `limit`),
/// then until nothing more arrives for [`QUIET`], so a late duplicate is
/// counted too.
pub fn wait_delivered(sink: &Sink, sent: &BTreeMap<u64, u16>, limit: Duration) -> Vec<Received> {
    wait_until(limit, || Tally::complete(sent, &sink.received()));
    let mut seen = sink.received().len();
    loop {
        std::thread::sleep(QUIET);
        let now = sink.received().len();
        if now == seen {
            return sink.received();
        }
        seen = now;
    }
}

/// Asserts that mailman answered every message at the sender's first
/// attempt (where mailman is healthy, nothing needs a retry).
pub fn assert_one_attempt_each(attempts: &BTreeMap<u64, u32>) {
    let retried: Vec<(&u64, &u32)> = attempts.iter().filter(|(_, &n)| n != 1).collect();
    assert!(
        retried.is_empty(),
        "{} messages needed more than one attempt: {:?}",
        retried.len(),
        &retried[..retried.len().min(20)]
    );
}
