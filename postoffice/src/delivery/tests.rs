//! The delivery loop against real SMTP servers (Postfix's smtp-sink), with
//! a queue on a real directory and a table for DNS.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hedwig::envelope::Envelope;
use hedwig::retry::Backoff;
use hedwig::smtp::address::Address;

use super::clock::{Clock, SystemClock, TestClock};
use super::*;
use crate::dkim::Signer;
use crate::dns::table::StaticResolver;
use crate::queue::record::Policy;
use crate::queue::{store::Store, Settings};

/// smtp-sink on a free loopback port, counting what it is sent.
struct Sink {
    child: Child,
    counts: std::path::PathBuf,
    port: u16,
}

impl Sink {
    /// `extra` are smtp-sink options (`-w 1`: a second before answering DATA).
    fn start(dir: &std::path::Path, name: &str, extra: &[&str]) -> Sink {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let counts = dir.join(format!("{name}.counts"));
        let out = std::fs::File::create(&counts).unwrap();
        let sink = ["/usr/sbin/smtp-sink", "smtp-sink"]
            .into_iter()
            .find(|p| Command::new(p).arg("-h").output().is_ok())
            .expect("smtp-sink (Debian package postfix) is installed by scripts/test");
        let mut cmd = Command::new(sink);
        cmd.arg("-c");
        // As root, smtp-sink insists on dropping to a user.
        if std::env::var("USER").as_deref() == Ok("root") || is_root() {
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd
            .args(extra)
            .arg(format!("127.0.0.1:{port}"))
            .arg("256")
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink starts");
        // Ready when it accepts.
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "smtp-sink did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Sink {
            child,
            counts,
            port,
        }
    }

    /// Messages received so far (smtp-sink -c: "... mesg=N\r" after each).
    fn messages(&self) -> u64 {
        let mut text = String::new();
        let _ = std::fs::File::open(&self.counts).and_then(|mut f| f.read_to_string(&mut text));
        text.split('\r')
            .filter_map(|rec| rec.split("mesg=").nth(1)?.trim().parse().ok())
            .next_back()
            .unwrap_or(0)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn settings(first: Duration) -> Settings {
    Settings {
        policy: Policy {
            backoff: Backoff { first, max: first },
            give_up: Duration::from_secs(86_400),
        },
        keep_status: 60_000,
        remember_keys: 100,
        max_message_size: 1 << 20,
    }
}

fn config(concurrency: usize, per_domain: usize, port: u16) -> Delivery {
    Delivery {
        port,
        starttls: hedwig::config::StartTls::Never,
        concurrency,
        per_domain,
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(10),
        ..Delivery::default()
    }
}

fn to(domain: &str, n: usize) -> Envelope {
    Envelope {
        from: None,
        to: vec![Address::parse(&format!("r{n}@{domain}")).unwrap()],
    }
}

/// Queues `count` messages to `domain`, concurrently (they share commits).
async fn fill(queue: &Queue, domain: &str, count: usize) {
    let tasks: Vec<_> = (0..count)
        .map(|n| {
            let (queue, envelope) = (queue.clone(), to(domain, n));
            smol::spawn(async move {
                let body = format!("Subject: {n}\r\n\r\n{}\r\n", "x".repeat(2000));
                let now = SystemClock.now();
                queue
                    .add(&envelope, None, |_| String::new(), body.as_bytes(), now)
                    .await
                    .unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
}

/// Whether this process runs as root (uid 0 owns /proc/self).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn thousands_due_to_a_slow_sink_hold_no_more_messages_than_connections() {
    let dir = tempfile::tempdir().unwrap();
    // slow.test answers each DATA after a second; fast.test at once. Both
    // sinks on one port each, so the domains are told apart by port: a
    // route for fast.test.
    let slow = Sink::start(dir.path(), "slow", &["-w", "1"]);
    let fast = Sink::start(dir.path(), "fast", &[]);
    let (queue, woken) = Queue::new(
        Store::open(&dir.path().join("q")).unwrap(),
        settings(Duration::from_secs(60)),
    );
    smol::block_on(queue.scan(0));
    smol::block_on(fill(&queue, "slow.test", 2000));
    smol::block_on(fill(&queue, "fast.test", 20));
    let dns = StaticResolver::new().mx("slow.test", &[("mx.slow.test", 10, &[LOCALHOST])]);
    let mut config = config(4, 2, slow.port);
    config.routes.insert(
        "fast.test".into(),
        format!("127.0.0.1:{}", fast.port).parse().unwrap(),
    );
    let metrics = Arc::new(Metrics::default());
    let deliverer = Deliverer::new(
        queue.clone(),
        dns,
        config,
        "po.test".into(),
        metrics.clone(),
        Arc::new(Signer::load(&[]).unwrap()),
        Arc::new(SystemClock),
    );
    let domains = deliverer.domains.clone();
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let run = smol::spawn(deliverer.run(woken, stop_rx));
    // The fast domain is not held up by 2,000 messages before it.
    let started = Instant::now();
    while fast.messages() < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "fast.test starved: {}",
            fast.messages()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let parked = domains.parked();
    let text = metrics.render(&queue.counts());
    stop_tx.close();
    smol::block_on(run);
    let held_max: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("hedwig_delivery_messages_held_max "))
        .and_then(|n| n.parse().ok())
        .expect("the gauge is rendered");
    assert!(held_max >= 1, "something was delivered");
    assert!(
        held_max <= 4,
        "{held_max} messages in memory with 4 connections"
    );
    assert!(
        slow.messages() <= 2 * 4,
        "slow.test took {} in ~3 s with 2 connections",
        slow.messages()
    );
    assert!(
        parked > 1900,
        "the slow domain's messages wait as ids: {parked} parked"
    );
}

#[test]
fn a_deferred_message_is_tried_again_when_the_clock_says() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on this port: every attempt is deferred.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hour = Duration::from_secs(3600);
    let (queue, woken) = Queue::new(Store::open(dir.path()).unwrap(), settings(hour));
    smol::block_on(queue.scan(0));
    let clock = TestClock::at(1_000_000);
    let envelope = to("down.test", 0);
    let (id, _) =
        smol::block_on(queue.add(&envelope, None, |_| String::new(), &b"x\r\n"[..], 1_000_000))
            .unwrap();
    let dns = StaticResolver::new().mx("down.test", &[("mx.down.test", 10, &[LOCALHOST])]);
    let deliverer = Deliverer::new(
        queue.clone(),
        dns,
        config(2, 2, port),
        "po.test".into(),
        Arc::default(),
        Arc::new(Signer::load(&[]).unwrap()),
        Arc::new(clock.clone()),
    );
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let run = smol::spawn(deliverer.run(woken, stop_rx));
    let attempts = || smol::block_on(queue.get(id)).unwrap().unwrap().recipients[0].attempts;
    let wait_for = |n: u32| {
        let until = Instant::now() + Duration::from_secs(10);
        while attempts() < n {
            assert!(Instant::now() < until, "attempt {n} never came");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(1);
    let record = smol::block_on(queue.get(id)).unwrap().unwrap();
    assert_eq!(
        record.recipients[0].next_attempt,
        Some(1_000_000 + 3_600_000)
    );
    // An hour on the test clock: tried again at once, no hour of sleep.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(attempts(), 1, "not before its time");
    clock.set(1_000_000 + 3_600_000);
    wait_for(2);
    stop_tx.close();
    smol::block_on(run);
}
