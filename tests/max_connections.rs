//! Past max_connections, clients get 421 4.7.0 and are closed; a freed slot is
//! served again.

mod common;

use std::time::Duration;

use common::mailman::{Config, Mailman};
use common::postoffice::Postoffice;
use common::smtp::Smtp;
use common::{wait_until, TestDir};

#[test]
fn connections_past_the_limit_get_421() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let mut config = Config::new(&dir, po.addr());
    config.max_connections = 3;
    let mailman = Mailman::start(&dir, config);

    let mut held: Vec<Smtp> = (0..3).map(|_| Smtp::ehlo(mailman.addr())).collect();
    for extra in 0..2 {
        let mut smtp = Smtp::connect(mailman.addr()).expect("connect");
        let reply = smtp.reply();
        assert!(
            reply.is(421, "4.7.0"),
            "connection {} with max_connections 3: got `{reply}`",
            4 + extra
        );
        smtp.closed_within(Duration::from_secs(5))
            .expect("closed after 421 4.7.0");
    }
    // The sessions held are unaffected.
    for smtp in &mut held {
        smtp.expect("NOOP", 250, "2.0.0");
    }
    // Free one slot; a new client gets in (once mailman has noticed).
    held.pop().unwrap().expect("QUIT", 221, "2.0.0");
    let served = wait_until(Duration::from_secs(3), || {
        let mut smtp = Smtp::connect(mailman.addr()).expect("connect");
        smtp.reply().code == 220
    });
    assert!(served, "no client served after a slot was freed");
}
