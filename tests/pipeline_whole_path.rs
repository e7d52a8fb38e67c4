//! The whole path: msmtp -> mailman -> postoffice -> the MX dnsmasq names ->
//! a sink. What arrives is what msmtp sent, byte for byte, apart from the
//! trace header mailman adds (and Date/Message-ID only where missing).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::clients::msmtp;
use common::mailman::{Config, Mailman};
use common::message::{check_arrived, crlf, strip_received};
use common::stack::{dnsmasq, free_port, host_ip, Postoffice, Sink};
use common::TestDir;

#[test]
fn msmtp_to_mailman_to_postoffice_to_mx() {
    let dir = TestDir::new();
    let port = free_port(&dir);
    let dns_addr = SocketAddr::new(host_ip(&dir, 1).into(), port);
    let mx_ip = host_ip(&dir, 2);
    let _dns = dnsmasq(
        &dir,
        dns_addr,
        &[
            "--mx-host=dest.test,mx.dest.test,10",
            &format!("--host-record=mx.dest.test,{mx_ip}"),
        ],
    );
    let sink = Sink::start(&dir, "mx", SocketAddr::new(mx_ip.into(), port), &[]);
    let po = Postoffice::start(
        &dir,
        dir.free_addr(),
        &format!("dns: Nameservers([\"{dns_addr}\"]), delivery: (port: {port}, starttls: Never)"),
    );
    let mailman = Mailman::start(&dir, Config::new(&dir, po.addr));

    // Two messages: one with its own Date and Message-ID, one without; lines
    // starting with a dot; 8-bit text.
    let full = crlf(
        "From: app@origin.test\nTo: a@dest.test\nDate: Tue, 1 Jul 2025 10:00:00 +0000\n\
         Message-ID: <one@origin.test>\nSubject: whole path\nContent-Type: text/plain; charset=utf-8\n\n\
         .leading dot\n..two dots\nGrüße\n",
    );
    let bare = crlf("From: app@origin.test\nSubject: no date\n\nbody\n");
    for (message, to) in [
        (&full, vec!["a@dest.test", "b@dest.test"]),
        (&bare, vec!["c@dest.test"]),
    ] {
        let sent = msmtp(
            dir.path(),
            mailman.addr(),
            "app@origin.test",
            &to,
            &String::from_utf8_lossy(message)
                .replace("\r\n", "\n")
                .into_bytes(),
        );
        assert!(sent.ok, "msmtp failed:\n{}", sent.transcript);
    }

    let got = sink.wait_for(2, Duration::from_secs(20));
    assert_eq!(
        got.len(),
        2,
        "sink received {} messages\n{}\n{}",
        got.len(),
        po.log(),
        mailman.stderr()
    );
    let one = got
        .iter()
        .find(|r| r.text().contains("Subject: whole path"))
        .expect("first message");
    let two = got
        .iter()
        .find(|r| r.text().contains("Subject: no date"))
        .expect("second message");
    // One transaction per domain carrying both recipients.
    assert_eq!(one.from, "app@origin.test");
    assert_eq!(one.to, ["a@dest.test", "b@dest.test"]);
    assert_eq!(two.to, ["c@dest.test"]);
    // On top, postoffice's trace (from mailman's address, over HTTP, naming
    // the one recipient only when there is one); below it, mailman's.
    for (got, sent, rcpt) in [(one, &full, None), (two, &bare, Some("c@dest.test"))] {
        let (trace, rest) = strip_received(&got.bytes).expect("postoffice's Received");
        let trace = String::from_utf8_lossy(trace);
        assert!(
            trace.starts_with("Received: from 127.")
                && trace.contains("\r\n\tby po.test (hedwig postoffice) with HTTP id ")
                && trace.contains("for <") == rcpt.is_some(),
            "postoffice's trace: {trace:?}"
        );
        if let Some(rcpt) = rcpt {
            assert!(trace.contains(&format!("for <{rcpt}>")), "{trace:?}");
        }
        check_arrived(rest, sent).unwrap_or_else(|e| panic!("{e}\n{}", got.text()));
    }
    assert!(po.log().contains("relay=mx.dest.test["), "{}", po.log());
}
