//! Clients outside `allow` get 554 5.7.1 and are disconnected; clients inside are
//! served.

mod common;

use std::time::Duration;

use common::mailman::{Config, Mailman};
use common::postoffice::Postoffice;
use common::smtp::Smtp;
use common::TestDir;

#[test]
fn client_outside_allow_is_refused_and_closed() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let mut config = Config::new(&dir, po.addr());
    config.allow = vec!["10.0.0.0/8".into()];
    let mailman = Mailman::start_expecting(&dir, config, "554 ");

    // Connections to 127.0.0.x come from 127.0.0.1, which 10.0.0.0/8 does not cover.
    let mut smtp = Smtp::connect(mailman.addr()).expect("connect");
    let greeting = smtp.reply();
    assert!(
        greeting.is(554, "5.7.1"),
        "client 127.0.0.1 outside 10.0.0.0/8: got `{greeting}`"
    );
    smtp.closed_within(Duration::from_secs(5))
        .expect("mailman must close after 554 5.7.1");
    assert!(po.deliveries().is_empty());
}

#[test]
fn client_inside_a_narrow_allow_is_served() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let mut config = Config::new(&dir, po.addr());
    config.allow = vec!["10.0.0.0/8".into(), "127.0.0.1/32".into()];
    let mailman = Mailman::start(&dir, config);
    let mut smtp = Smtp::ehlo(mailman.addr());
    smtp.expect("MAIL FROM:<a@example.org>", 250, "2.1.0");
    smtp.expect("QUIT", 221, "2.0.0");
}
