//! `lookup_mx` through the real resolver against real DNS servers on loopback
//! (hickory-server's catalog, and tiny responders for what a zone cannot say).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::rdata::{A, MX};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use super::test_server::{reply_to, FnServer, ZoneServer};
use super::{DnsError, Resolve, Resolver, Target};
use hedwig::config::Dns;

const ZONE: &str = "
$TTL 300
@        IN SOA ns hostmaster 1 3600 600 86400 60
@        IN NS  ns
ns       IN A   127.0.0.52
multi    IN MX  5  first.multi
multi    IN MX  10 eq-a.multi
multi    IN MX  10 eq-b.multi
multi    IN MX  20 last.multi
first.multi IN AAAA ::1
first.multi IN A 127.0.0.11
eq-a.multi  IN A 127.0.0.12
eq-b.multi  IN A 127.0.0.13
last.multi  IN A 127.0.0.14
implicit IN A   127.0.0.20
nullmx   IN MX  0 .
txtonly  IN TXT \"no mail here\"
partial  IN MX  10 ghost.partial
partial  IN MX  20 real.partial
real.partial IN A 127.0.0.21
dangling IN MX  10 ghost.dangling
";

/// The test zone with `big` added: 100 MX hosts, about 2.3 kB, too many for one UDP answer.
fn zone() -> String {
    let mut zone = ZONE.to_string();
    for i in 0..100 {
        zone.push_str(&format!(
            "big IN MX {i} host{i:02}.big\nhost{i:02}.big IN A 127.0.1.{i}\n"
        ));
    }
    zone
}

fn resolver(servers: &[SocketAddr]) -> Resolver {
    // Short waits: every server here is on loopback and answers at once or never.
    Resolver::with_limits(
        &Dns::Nameservers(servers.to_vec()),
        Duration::from_millis(300),
        1,
    )
    .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn mx_hosts_in_preference_order_with_ties_shuffled() {
    let server = ZoneServer::start([127, 0, 0, 52], "hedwig.test.", &zone());
    let dns = resolver(&[server.addr]);
    smol::block_on(async {
        let mut orders = HashSet::new();
        for _ in 0..100 {
            let targets = dns.lookup_mx("multi.hedwig.test").await.unwrap();
            let prefs: Vec<u16> = targets.iter().map(|t| t.preference).collect();
            assert_eq!(prefs, [5, 10, 10, 20]);
            assert_eq!(targets[0].host, "first.multi.hedwig.test");
            assert_eq!(
                targets[0].addrs,
                [ip("::1"), ip("127.0.0.11")],
                "ipv6 first"
            );
            assert_eq!(targets[3].addrs, [ip("127.0.0.14")]);
            orders.insert(targets[1].host.clone());
        }
        assert_eq!(
            orders.len(),
            2,
            "both equal-preference hosts came first sometimes"
        );
    });
}

#[test]
fn implicit_mx_nxdomain_null_mx_and_missing_addresses() {
    let server = ZoneServer::start([127, 0, 0, 54], "hedwig.test.", &zone());
    let dns = resolver(&[server.addr]);
    smol::block_on(async {
        let implicit = dns.lookup_mx("Implicit.Hedwig.Test.").await.unwrap();
        let expected = Target {
            host: "implicit.hedwig.test".into(),
            preference: 0,
            addrs: vec![ip("127.0.0.20")],
        };
        assert_eq!(implicit, [expected]);

        let nx = dns.lookup_mx("nope.hedwig.test").await.unwrap_err();
        assert_eq!(
            nx,
            DnsError::Permanent("nope.hedwig.test does not exist".into())
        );
        let null = dns.lookup_mx("nullmx.hedwig.test").await.unwrap_err();
        assert_eq!(
            null,
            DnsError::Permanent("nullmx.hedwig.test accepts no mail (null mx)".into())
        );
        let txt = dns.lookup_mx("txtonly.hedwig.test").await.unwrap_err();
        assert!(txt.is_permanent(), "{txt}");
        let dangling = dns.lookup_mx("dangling.hedwig.test").await.unwrap_err();
        assert_eq!(
            dangling.to_string(),
            "permanent dns failure: no mail server for dangling.hedwig.test has an address"
        );

        let partial = dns.lookup_mx("partial.hedwig.test").await.unwrap();
        assert_eq!(partial.len(), 1);
        assert_eq!(partial[0].host, "real.partial.hedwig.test");
    });
}

#[test]
fn truncated_answer_is_retried_over_tcp() {
    let server = ZoneServer::start([127, 0, 0, 55], "hedwig.test.", &zone());
    let dns = resolver(&[server.addr]);
    smol::block_on(async {
        let targets = dns.lookup_mx("big.hedwig.test").await.unwrap();
        assert_eq!(targets.len(), super::mx::MAX_HOSTS);
        assert_eq!(targets[0].host, "host00.big.hedwig.test");
        assert_eq!(targets[0].addrs, [ip("127.0.1.0")]);
    });
    assert!(
        server.tcp_queries.load(Ordering::SeqCst) >= 1,
        "mx answer came over tcp"
    );
}

#[test]
fn servfail_refused_and_silence_are_temporary() {
    let servfail = FnServer::start([127, 0, 0, 56], |q| {
        let mut reply = reply_to(q);
        reply.metadata.response_code = ResponseCode::ServFail;
        reply
    });
    let zone = ZoneServer::start([127, 0, 0, 56], "hedwig.test.", &zone());
    // Bound and never read: queries vanish, as with a dead server.
    let silent = std::net::UdpSocket::bind("127.0.0.57:0").unwrap();
    smol::block_on(async {
        let err = resolver(&[servfail.addr])
            .lookup_mx("broken.test")
            .await
            .unwrap_err();
        assert_eq!(err, DnsError::Temporary("MX broken.test: servfail".into()));
        // hickory-server refuses names outside its zones.
        let err = resolver(&[zone.addr])
            .lookup_mx("elsewhere.example")
            .await
            .unwrap_err();
        assert_eq!(
            err,
            DnsError::Temporary("MX elsewhere.example: refused".into())
        );
        let started = Instant::now();
        let err = resolver(&[silent.local_addr().unwrap()])
            .lookup_mx("x.test")
            .await
            .unwrap_err();
        assert!(!err.is_permanent(), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "bounded by the timeout"
        );
    });
}

#[test]
fn address_servfail_makes_the_whole_lookup_temporary() {
    // MX answers fine, but every address query fails: a retry may succeed.
    let server = FnServer::start([127, 0, 0, 58], |q| {
        let mut reply = reply_to(q);
        let query = &q.queries[0];
        if query.query_type() == RecordType::MX {
            let exchange = Name::from_ascii("mx.flaky.test.").unwrap();
            reply.answers.push(Record::from_rdata(
                query.name().clone(),
                60,
                RData::MX(MX::new(10, exchange)),
            ));
        } else {
            reply.metadata.response_code = ResponseCode::ServFail;
        }
        reply
    });
    let err = smol::block_on(resolver(&[server.addr]).lookup_mx("flaky.test")).unwrap_err();
    assert!(!err.is_permanent(), "{err}");
}

#[test]
fn answers_are_cached_for_their_ttl() {
    // One-second TTLs: a second lookup at once hits the cache, one after expiry does not.
    let mx_queries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = mx_queries.clone();
    let server = FnServer::start([127, 0, 0, 59], move |q| {
        let mut reply = reply_to(q);
        let query = &q.queries[0];
        let name = query.name().clone();
        match query.query_type() {
            RecordType::MX => {
                seen.fetch_add(1, Ordering::SeqCst);
                let exchange = Name::from_ascii("mx.cache.test.").unwrap();
                reply.answers.push(Record::from_rdata(
                    name,
                    1,
                    RData::MX(MX::new(10, exchange)),
                ));
            }
            RecordType::A => {
                reply
                    .answers
                    .push(Record::from_rdata(name, 1, RData::A(A::new(127, 0, 0, 9))))
            }
            _ => {}
        }
        reply
    });
    let dns = resolver(&[server.addr]);
    smol::block_on(async {
        for _ in 0..3 {
            assert_eq!(
                dns.lookup_mx("cache.test").await.unwrap()[0].addrs,
                [ip("127.0.0.9")]
            );
        }
        assert_eq!(mx_queries.load(Ordering::SeqCst), 1);
        smol::Timer::after(Duration::from_millis(1100)).await;
        dns.lookup_mx("cache.test").await.unwrap();
        assert_eq!(mx_queries.load(Ordering::SeqCst), 2);
    });
}

#[test]
fn ip_literal_needs_no_dns() {
    // No server at all: the literal is answered without a query.
    let dns = resolver(&["127.0.0.60:9".parse().unwrap()]);
    let targets = smol::block_on(dns.lookup_mx("[127.0.0.1]")).unwrap();
    assert_eq!(
        targets,
        [Target {
            host: "[127.0.0.1]".into(),
            preference: 0,
            addrs: vec![ip("127.0.0.1")]
        }]
    );
    let err = smol::block_on(dns.lookup_mx("[not an ip]")).unwrap_err();
    assert!(err.is_permanent());
}

#[test]
fn no_tokio_runtime_is_started() {
    // hickory-server (a dev-dependency) links tokio; make sure nothing here runs it.
    let server = ZoneServer::start([127, 0, 0, 61], "hedwig.test.", &zone());
    smol::block_on(resolver(&[server.addr]).lookup_mx("multi.hedwig.test")).unwrap();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let comm = std::fs::read_to_string(task.unwrap().path().join("comm")).unwrap_or_default();
        assert!(!comm.starts_with("tokio"), "tokio thread running: {comm}");
    }
}
