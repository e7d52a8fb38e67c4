//! `lookup_mx` against dnsmasq, a DNS server hickory had no hand in writing.
//!
//! Skipped, with a notice, where `/usr/sbin/dnsmasq` is missing (Debian: dnsmasq-base).

use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Resolve, Resolver};
use hedwig::config::Dns;

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// A dnsmasq child serving `dm.test` on loopback; killed when dropped.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Dnsmasq {
    fn start(ip: &str) -> Option<Self> {
        if !Path::new(DNSMASQ).exists() {
            println!("notice: {DNSMASQ} missing, skipping dnsmasq test");
            return None;
        }
        // A port free right now; dnsmasq takes it a moment later.
        let port = UdpSocket::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(DNSMASQ)
            .args([
                "--no-daemon",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
            ])
            .args(["--conf-file=/dev/null", "--pid-file=", "--cache-size=0"])
            .arg(format!("--port={port}"))
            .arg(format!("--listen-address={ip}"))
            // Answer for dm.test from local data only: unknown names are NXDOMAIN.
            .arg("--local=/dm.test/")
            .args([
                "--mx-host=multi.dm.test,mx1.dm.test,10",
                "--mx-host=multi.dm.test,mx2.dm.test,20",
            ])
            .args([
                "--mx-host=multi.dm.test,mx3.dm.test,20",
                "--mx-host=nullmx.dm.test,.,0",
            ])
            .args([
                "--host-record=mx1.dm.test,127.0.0.71,::1",
                "--host-record=mx2.dm.test,127.0.0.72",
            ])
            .args([
                "--host-record=mx3.dm.test,127.0.0.73",
                "--host-record=implicit.dm.test,127.0.0.74",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dnsmasq");
        let addr: SocketAddr = (ip.parse::<IpAddr>().unwrap(), port).into();
        let server = Self { child, addr };
        // dnsmasq listens on TCP too; once that accepts, UDP is up as well.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "dnsmasq did not start on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn lookup_mx_against_dnsmasq() {
    let Some(server) = Dnsmasq::start("127.0.0.70") else {
        return;
    };
    let dns = Resolver::with_limits(
        &Dns::Nameservers(vec![server.addr]),
        Duration::from_secs(1),
        1,
    )
    .unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    smol::block_on(async {
        let mut second = std::collections::HashSet::new();
        for _ in 0..50 {
            let targets = dns.lookup_mx("multi.dm.test").await.unwrap();
            assert_eq!(targets[0].host, "mx1.dm.test");
            assert_eq!(targets[0].addrs, [ip("::1"), ip("127.0.0.71")]);
            let prefs: Vec<u16> = targets.iter().map(|t| t.preference).collect();
            assert_eq!(prefs, [10, 20, 20]);
            second.insert(targets[1].host.clone());
        }
        assert_eq!(second.len(), 2, "equal preferences shuffled");

        let implicit = dns.lookup_mx("implicit.dm.test").await.unwrap();
        assert_eq!(
            (implicit[0].preference, implicit[0].addrs.clone()),
            (0, vec![ip("127.0.0.74")])
        );
        let nx = dns.lookup_mx("nope.dm.test").await.unwrap_err();
        assert_eq!(
            nx.to_string(),
            "permanent dns failure: nope.dm.test does not exist"
        );
        let null = dns.lookup_mx("nullmx.dm.test").await.unwrap_err();
        assert_eq!(
            null.to_string(),
            "permanent dns failure: nullmx.dm.test accepts no mail (null mx)"
        );
        // Outside --local, with no upstream, dnsmasq refuses: temporary.
        let refused = dns.lookup_mx("elsewhere.example").await.unwrap_err();
        assert!(!refused.is_permanent(), "{refused}");
    });
}
