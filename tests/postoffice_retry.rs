//! Outcomes per recipient: 450 then 250 is retried and delivered; 550 bounces
//! that recipient only, with exactly one DSN to the sender; a bounce's own
//! failure (null sender) never makes a DSN.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::stack::{free_port, host_ip, Postoffice, Sink};
use common::TestDir;

#[test]
fn deferred_then_delivered_bounced_once_and_never_a_bounce_of_a_bounce() {
    let dir = TestDir::new();
    let port = free_port(&dir);
    let dest = SocketAddr::new(host_ip(&dir, 1).into(), port);
    let sender = SocketAddr::new(host_ip(&dir, 2).into(), port);
    // The destination answers 450 to slow@ and 550 to bad@ in its first
    // transaction, and 250 to slow@ after that.
    let mx = Sink::start(
        &dir,
        "dest",
        dest,
        &[
            "--rcpt",
            "450:slow@dest.test",
            "--rcpt",
            "550:bad@dest.test",
            "--after",
            "1",
        ],
    );
    let sender_mx = Sink::start(&dir, "sender", sender, &[]);
    let refuse = SocketAddr::new(host_ip(&dir, 3).into(), port);
    let _refuser = Sink::start(
        &dir,
        "refuser",
        refuse,
        &["--rcpt", "550:nobody@refuse.test"],
    );
    let po = Postoffice::start(
        &dir,
        dir.free_addr(),
        &format!(
            "delivery: (starttls: Never, retry: (first: \"1s\", max: \"2s\", give_up: \"1h\"), \
             routes: {{\"dest.test\": \"{dest}\", \"sender.test\": \"{sender}\", \"refuse.test\": \"{refuse}\"}})"
        ),
    );

    let id = po.post_raw(
        "s@sender.test",
        &["good@dest.test", "slow@dest.test", "bad@dest.test"],
        b"Subject: r\r\n\r\nx\r\n",
    );
    // After the first round: one delivered, one deferred, one bounced.
    let mut round = serde_json::Value::Null;
    let settled = common::wait_until(Duration::from_secs(10), || {
        round = po.status(&id);
        round["recipients"][0]["state"] == "delivered"
    });
    assert!(settled, "{round:#}\n{}", po.log());
    let states: Vec<&str> = (0..3)
        .map(|i| round["recipients"][i]["state"].as_str().unwrap())
        .collect();
    assert!(
        states == ["delivered", "deferred", "bounced"]
            || states == ["delivered", "delivered", "bounced"],
        "{round:#}"
    );
    assert!(
        round["recipients"][2]["reply"]
            .as_str()
            .unwrap()
            .starts_with("550 5.1.1"),
        "{round:#}"
    );

    // The retry delivers slow@ a second or so later.
    let done = po.wait_state_of(&id, 1, "delivered", Duration::from_secs(10));
    assert!(
        done["recipients"][1]["attempts"].as_u64().unwrap() >= 2,
        "{done:#}"
    );
    let got = mx.wait_for(2, Duration::from_secs(5));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].to, ["good@dest.test"]);
    assert_eq!(got[1].to, ["slow@dest.test"]);

    // Exactly one DSN, naming only bad@.
    let dsns = sender_mx.wait_for(1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));
    let dsns_later = sender_mx.received();
    assert_eq!(
        dsns_later.len(),
        1,
        "one DSN only: {:#?}",
        dsns_later.iter().map(|d| d.text()).collect::<Vec<_>>()
    );
    let text = dsns[0].text();
    assert!(
        text.contains("Final-Recipient: rfc822; bad@dest.test"),
        "{text}"
    );
    assert!(
        !text.contains("Final-Recipient: rfc822; slow@dest.test"),
        "{text}"
    );
    assert!(
        !text.contains("Final-Recipient: rfc822; good@dest.test"),
        "{text}"
    );
    assert_eq!(dsns[0].from, "");

    // A message from the null sender that bounces makes no DSN.
    let bounce = po.post_raw(
        "",
        &["nobody@refuse.test"],
        b"Subject: a bounce\r\n\r\nx\r\n",
    );
    po.wait_state(&bounce, "bounced", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        sender_mx.received().len(),
        1,
        "a bounce was bounced:\n{}",
        po.log()
    );
    assert!(
        po.log().contains(&format!("{bounce}: no bounce")),
        "{}",
        po.log()
    );
}
