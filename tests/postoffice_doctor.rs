//! `postoffice doctor` against dnsmasq serving the records right, missing and
//! wrong, one test per check: port 25, reverse DNS, SPF, DKIM, DMARC and the
//! hostname. The findings name the record to publish; exit 1 on any FAIL.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::dkim::{make_key, TestKey};
use common::stack::{binary, dnsmasq, free_port, host_ip, Proc, Sink};
use common::TestDir;

/// What one doctor run printed, and its exit code.
struct Report {
    code: Option<i32>,
    out: String,
}

impl Report {
    /// The one line of the check `check` (e.g. "spf example.org").
    #[track_caller]
    fn line(&self, check: &str) -> &str {
        let lines: Vec<&str> = self
            .out
            .lines()
            .filter(|l| {
                l.get(5..)
                    .is_some_and(|rest| rest.starts_with(&format!("{check}:")))
            })
            .collect();
        assert_eq!(lines.len(), 1, "one line for {check}:\n{}", self.out);
        lines[0]
    }
}

/// A DNS TXT option for dnsmasq, split into strings of at most 255 bytes
/// (dnsmasq takes commas between strings, and quotes literally).
fn txt(name: &str, record: &str) -> String {
    let chunks: Vec<String> = record
        .as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    format!("--txt-record={name},{}", chunks.join(","))
}

/// The public address mail leaves from, in the tests' DNS.
const SENDER: &str = "192.0.2.25";

struct Rig {
    dir: TestDir,
    key: TestKey,
    /// The MX of the probe domain: a sink on an address of its own.
    mx: SocketAddr,
}

impl Rig {
    fn new() -> Rig {
        let dir = TestDir::new();
        let key = make_key(&dir, "example.org", "hedwig2026", false);
        let mx = SocketAddr::new(host_ip(&dir, 1).into(), free_port(&dir));
        Rig { dir, key, mx }
    }

    /// Records that make every check pass for 192.0.2.25 sending as po.test.
    fn good(&self) -> Vec<String> {
        vec![
            // Names dnsmasq does not know in these are NXDOMAIN, not REFUSED.
            "--local=/test/".into(),
            "--local=/org/".into(),
            "--local=/net/".into(),
            "--local=/com/".into(),
            "--local=/arpa/".into(),
            format!("--host-record=mx.probe.test,{}", self.mx.ip()),
            "--mx-host=probe.test,mx.probe.test,10".into(),
            "--host-record=po.test,192.0.2.25".into(),
            txt("example.org", "v=spf1 ip4:192.0.2.25 -all"),
            txt(&self.key.name(), &self.key.record),
            txt("_dmarc.example.org", "v=DMARC1; p=quarantine"),
        ]
    }

    /// Runs doctor with `records` in DNS and `args`, sending from --ip
    /// 192.0.2.25 (only looked up, never connected to; dnsmasq answers
    /// "localhost" for 127.0.0.1 whatever it is told).
    fn run(&self, records: &[String], args: &[&str]) -> Report {
        self.run_raw(records, &[&["--ip", SENDER], args].concat())
    }

    /// Runs doctor with `records` in DNS and exactly `args`.
    fn run_raw(&self, records: &[String], args: &[&str]) -> Report {
        let dns = SocketAddr::new(self.dir.ip.into(), free_port(&self.dir));
        let records: Vec<&str> = records.iter().map(String::as_str).collect();
        let _dnsmasq: Proc = dnsmasq(&self.dir, dns, &records);
        let config = self.dir.path().join("doctor.ron");
        let text = format!(
            "(postoffice: (tokens: [\"t\"], hostname: \"po.test\", dns: Nameservers([\"{dns}\"]),\n\
             delivery: (port: {port}), dkim: [{key}]))\n",
            port = self.mx.port(),
            key = self.key.ron()
        );
        std::fs::write(&config, text).unwrap();
        let mut cmd = Command::new(binary("postoffice"));
        cmd.arg("doctor")
            .arg("--config")
            .arg(&config)
            .args(["--probe", "probe.test"]);
        let out = cmd.args(args).output().expect("run postoffice doctor");
        Report {
            code: out.status.code(),
            out: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    fn sink(&self) -> Sink {
        Sink::start(&self.dir, "mx", self.mx, &[])
    }
}

#[test]
fn all_right_is_all_ok_and_exit_0() {
    let rig = Rig::new();
    let _mx = rig.sink();
    let r = rig.run(&rig.good(), &[]);
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(
        !r.out.contains("FAIL ") && !r.out.contains("warn "),
        "{}",
        r.out
    );
    assert!(
        r.out
            .contains("postoffice doctor: 0 FAIL, 0 warn, 6 checks"),
        "{}",
        r.out
    );
}

#[test]
fn port_25_reached_or_blocked() {
    let rig = Rig::new();
    let port = format!("port {}", rig.mx.port());
    {
        let _mx = rig.sink();
        let r = rig.run(&rig.good(), &[]);
        let line = r.line(&port);
        assert!(line.starts_with("ok   "), "{line}");
        assert!(
            line.contains(&format!("mx.probe.test[{}]", rig.mx.ip())),
            "{line}"
        );
        assert!(
            line.contains("answered \"220 sink.test ESMTP sink\""),
            "{line}"
        );
    }
    let r = rig.run(&rig.good(), &[]);
    assert_eq!(r.code, Some(1), "{}", r.out);
    let line = r.line(&port);
    assert!(line.starts_with("FAIL "), "{line}");
    assert!(
        line.contains("many clouds block outbound port 25"),
        "{line}"
    );
}

#[test]
fn source_address_that_is_not_public_is_a_warning() {
    let rig = Rig::new();
    let _mx = rig.sink();
    // Without --ip the probe's source address is taken, and loopback is nobody's public address.
    let r = rig.run_raw(&rig.good(), &[]);
    assert_eq!(
        r.line("address 127.0.0.1"),
        "warn address 127.0.0.1: not a public address (NAT?): receivers see another; name it with --ip to check its records"
    );
    assert!(!r.out.contains("rdns "), "no address to check:\n{}", r.out);
    assert_eq!(
        r.line("spf example.org"),
        "warn spf example.org: \"v=spf1 ip4:192.0.2.25 -all\": no sending address known to check it against (name it with --ip)"
    );
    assert_eq!(r.code, Some(0), "{}", r.out);
}

#[test]
fn reverse_dns_right_missing_wrong_and_not_the_hostname() {
    let rig = Rig::new();
    let _mx = rig.sink();
    let others: Vec<String> = rig
        .good()
        .into_iter()
        .filter(|r| !r.contains("po.test"))
        .collect();
    // Missing: no PTR at all.
    let r = rig.run(&others, &[]);
    let line = r.line("rdns 192.0.2.25");
    assert_eq!(
        line,
        "FAIL rdns 192.0.2.25: no PTR record (Gmail refuses mail from such addresses); ask whoever owns the address (the hosting provider) for: 25.2.0.192.in-addr.arpa. PTR po.test."
    );
    assert_eq!(r.code, Some(1));
    // Wrong: the PTR names a host that does not resolve back.
    let mut wrong = others.clone();
    wrong.push("--ptr-record=25.2.0.192.in-addr.arpa,mail.example.org".into());
    wrong.push("--host-record=mail.example.org,192.0.2.99".into());
    let r = rig.run(&wrong, &[]);
    assert!(r.line("rdns 192.0.2.25").starts_with(
        "FAIL rdns 192.0.2.25: PTR mail.example.org does not resolve back to 192.0.2.25 (no forward-confirmed reverse DNS); publish: mail.example.org. A 192.0.2.25"
    ), "{}", r.out);
    // Confirmed, but not the hostname: a warning.
    let mut other_name = others.clone();
    other_name.push("--host-record=mail.example.org,192.0.2.25".into());
    let r = rig.run(&other_name, &[]);
    assert!(r.line("rdns 192.0.2.25").starts_with("warn rdns 192.0.2.25: PTR mail.example.org, which resolves back, but hostname is po.test: set postoffice.hostname: \"mail.example.org\""), "{}", r.out);
}

#[test]
fn spf_right_through_include_and_mx_missing_and_wrong() {
    let rig = Rig::new();
    let _mx = rig.sink();
    let without: Vec<String> = rig
        .good()
        .into_iter()
        .filter(|r| !r.contains("v=spf1"))
        .collect();
    let mut nested = without.clone();
    nested.push(txt(
        "example.org",
        "v=spf1 mx:mx.example.org/32 include:_spf.example.net ~all",
    ));
    nested.push(txt("_spf.example.net", "v=spf1 a:out.example.net -all"));
    nested.push("--host-record=out.example.net,192.0.2.25".into());
    let r = rig.run(&nested, &[]);
    assert_eq!(
        r.line("spf example.org"),
        "ok   spf example.org: \"v=spf1 mx:mx.example.org/32 include:_spf.example.net ~all\" permits 192.0.2.25"
    );
    let r = rig.run(&without, &[]);
    assert_eq!(
        r.line("spf example.org"),
        "FAIL spf example.org: no SPF record; publish: example.org. TXT \"v=spf1 ip4:192.0.2.25 -all\""
    );
    let mut wrong = without.clone();
    wrong.push(txt("example.org", "v=spf1 ip4:192.0.2.1 -all"));
    let r = rig.run(&wrong, &[]);
    assert_eq!(
        r.line("spf example.org"),
        "FAIL spf example.org: \"v=spf1 ip4:192.0.2.1 -all\" does not permit 192.0.2.25 (fail); publish: example.org. TXT \"v=spf1 ip4:192.0.2.1 ip4:192.0.2.25 -all\""
    );
    assert_eq!(r.code, Some(1));
}

#[test]
fn dkim_right_missing_and_wrong_key() {
    let rig = Rig::new();
    let _mx = rig.sink();
    let name = rig.key.name();
    let check = format!("dkim {name}");
    let r = rig.run(&rig.good(), &[]);
    assert_eq!(
        r.line(&check),
        format!(
            "ok   {check}: the published key is {}'s (rsa-sha256)",
            rig.key.path.display()
        )
    );
    let without: Vec<String> = rig
        .good()
        .into_iter()
        .filter(|r| !r.contains("_domainkey"))
        .collect();
    let r = rig.run(&without, &[]);
    assert_eq!(
        r.line(&check),
        format!(
            "FAIL {check}: no key record, so no receiver can verify the signature; publish: {name}. TXT \"{}\"",
            rig.key.record
        )
    );
    let other = make_key(&rig.dir, "example.org", "other", false);
    let mut wrong = without.clone();
    wrong.push(txt(&name, &other.record));
    let r = rig.run(&wrong, &[]);
    assert!(
        r.line(&check)
            .starts_with(&format!("FAIL {check}: the published key is not ")),
        "{}",
        r.out
    );
    // A domain named with --domain that no key covers.
    let r = rig.run(&rig.good(), &["--domain", "shop.example.com"]);
    assert!(
        r.line("dkim shop.example.com").starts_with(
            "FAIL dkim shop.example.com: no key configured, so its mail goes unsigned"
        ),
        "{}",
        r.out
    );
    // One that a parent's key covers.
    let r = rig.run(&rig.good(), &["--domain", "news.example.org"]);
    assert_eq!(
        r.line("dkim news.example.org"),
        "ok   dkim news.example.org: signed as d=example.org (aligned with news.example.org under DMARC's relaxed rule)"
    );
}

#[test]
fn dmarc_present_inherited_and_missing() {
    let rig = Rig::new();
    let _mx = rig.sink();
    let r = rig.run(&rig.good(), &["--domain", "news.example.org"]);
    assert_eq!(
        r.line("dmarc example.org"),
        "ok   dmarc example.org: \"v=DMARC1; p=quarantine\""
    );
    assert_eq!(
        r.line("dmarc news.example.org"),
        "ok   dmarc news.example.org: \"v=DMARC1; p=quarantine\" (from _dmarc.example.org)"
    );
    let without: Vec<String> = rig
        .good()
        .into_iter()
        .filter(|r| !r.contains("DMARC"))
        .collect();
    let r = rig.run(&without, &[]);
    assert_eq!(
        r.line("dmarc example.org"),
        "warn dmarc example.org: no DMARC record (Gmail and Yahoo require one from bulk senders); publish: _dmarc.example.org. TXT \"v=DMARC1; p=none; rua=mailto:postmaster@example.org\""
    );
    assert_eq!(r.code, Some(0), "a warning is not a failure:\n{}", r.out);
}

#[test]
fn hostname_needs_an_mx_or_address() {
    let rig = Rig::new();
    let _mx = rig.sink();
    let r = rig.run(&rig.good(), &[]);
    assert_eq!(
        r.line("hostname po.test"),
        "ok   hostname po.test: address 192.0.2.25 (no MX: mail to it goes there)"
    );
    let mut with_mx = rig.good();
    with_mx.push("--mx-host=po.test,mx.example.org,10".into());
    let r = rig.run(&with_mx, &[]);
    assert_eq!(
        r.line("hostname po.test"),
        "ok   hostname po.test: MX mx.example.org: replies to bounces can come back"
    );
    let without: Vec<String> = rig
        .good()
        .into_iter()
        .filter(|r| !r.contains("po.test"))
        .collect();
    let r = rig.run(&without, &[]);
    assert_eq!(
        r.line("hostname po.test"),
        "FAIL hostname po.test: no MX or address, so receivers cannot check the EHLO name and replies to bounces go nowhere; publish: po.test. A 192.0.2.25"
    );
}
