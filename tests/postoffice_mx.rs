//! MX selection per RFC 5321 section 5.1 against dnsmasq: preference order,
//! the next MX when the first refuses connections, implicit MX, null MX and
//! NXDOMAIN bounced at once (with a DSN to the sender's MX), SERVFAIL deferred.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::stack::{dnsmasq, free_port, host_ip, Postoffice, Sink};
use common::TestDir;

const MESSAGE: &[u8] = b"Subject: mx test\r\n\r\nhello\r\n";

#[test]
fn mx_order_fallback_implicit_null_nxdomain_servfail() {
    let dir = TestDir::new();
    let port = free_port(&dir);
    let ip = |k| host_ip(&dir, k);
    let dns_addr = SocketAddr::new(ip(1).into(), port);
    // mx1 (preference 10) has no server: connections are refused. mx2 (20) takes mail.
    let records = [
        "--mx-host=multi.test,mx1.multi.test,10".to_string(),
        "--mx-host=multi.test,mx2.multi.test,20".to_string(),
        format!("--host-record=mx1.multi.test,{}", ip(2)),
        format!("--host-record=mx2.multi.test,{}", ip(3)),
        format!("--host-record=implicit.test,{}", ip(4)),
        // Authoritative for it, so an MX query gets "no data", not REFUSED.
        "--local=/implicit.test/".to_string(),
        "--mx-host=sender.test,mx.sender.test,10".to_string(),
        format!("--host-record=mx.sender.test,{}", ip(5)),
        "--mx-host=nullmx.test,.,0".to_string(),
        "--local=/nx.test/".to_string(),
        // Queries for servfail.test go to a server that is not there.
        format!("--server=/servfail.test/{}#{}", ip(6), port),
    ];
    let records: Vec<&str> = records.iter().map(String::as_str).collect();
    let _dns = dnsmasq(&dir, dns_addr, &records);
    let mx2 = Sink::start(&dir, "mx2", SocketAddr::new(ip(3).into(), port), &[]);
    let implicit = Sink::start(&dir, "implicit", SocketAddr::new(ip(4).into(), port), &[]);
    let sender_mx = Sink::start(&dir, "sender", SocketAddr::new(ip(5).into(), port), &[]);
    let po = Postoffice::start(
        &dir,
        dir.free_addr(),
        &format!(
            "dns: Nameservers([\"{dns_addr}\"]), delivery: (port: {port}, starttls: Never, connect_timeout: \"2s\", \
             retry: (first: \"30s\", max: \"1m\", give_up: \"1h\"))"
        ),
    );

    let multi = po.post_raw("s@sender.test", &["a@multi.test"], MESSAGE);
    let implicit_id = po.post_raw("s@sender.test", &["b@implicit.test"], MESSAGE);
    let null = po.post_raw("s@sender.test", &["c@nullmx.test"], MESSAGE);
    let nx = po.post_raw("s@sender.test", &["d@nx.test"], MESSAGE);
    let servfail = po.post_raw("s@sender.test", &["e@servfail.test"], MESSAGE);

    let r = po.wait_state(&multi, "delivered", Duration::from_secs(20));
    assert!(
        r["recipients"][0]["relay"]
            .as_str()
            .unwrap()
            .starts_with("mx2.multi.test["),
        "{r:#}"
    );
    assert_eq!(
        mx2.wait_for(1, Duration::from_secs(5))[0].to,
        ["a@multi.test"]
    );

    po.wait_state(&implicit_id, "delivered", Duration::from_secs(20));
    assert_eq!(
        implicit.wait_for(1, Duration::from_secs(5))[0].to,
        ["b@implicit.test"]
    );

    for id in [&null, &nx] {
        let r = po.wait_state(id, "bounced", Duration::from_secs(20));
        assert_eq!(r["recipients"][0]["attempts"], 1, "bounced at once: {r:#}");
    }
    // One DSN per bounced message, to the sender's MX, from the null sender.
    let dsns = sender_mx.wait_for(2, Duration::from_secs(20));
    assert_eq!(dsns.len(), 2, "{}", po.log());
    for dsn in &dsns {
        assert_eq!(dsn.from, "");
        assert_eq!(dsn.to, ["s@sender.test"]);
        assert!(dsn.text().contains("multipart/report"), "{}", dsn.text());
    }
    assert!(dsns
        .iter()
        .any(|d| d.text().contains("Final-Recipient: rfc822; c@nullmx.test")));
    assert!(dsns
        .iter()
        .any(|d| d.text().contains("Final-Recipient: rfc822; d@nx.test")));

    let r = po.wait_state(&servfail, "deferred", Duration::from_secs(30));
    let error = r["recipients"][0]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("temporary dns failure"), "{r:#}");
    assert!(r["recipients"][0]["next_attempt"].is_string(), "{r:#}");
}
