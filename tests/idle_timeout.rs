//! A session idle for longer than `timeout` gets 421 4.4.2 and is closed.

mod common;

use std::time::{Duration, Instant};

use common::mailman::{Config, Mailman};
use common::postoffice::Postoffice;
use common::smtp::Smtp;
use common::TestDir;

#[test]
fn idle_sessions_time_out_with_421() {
    let dir = TestDir::new();
    let po = Postoffice::start(&dir);
    let mut config = Config::new(&dir, po.addr());
    config.timeout = "1s".into();
    let mailman = Mailman::start(&dir, config);

    let mut silent = Smtp::open(mailman.addr());
    let mut mid_transaction = Smtp::ehlo(mailman.addr());
    mid_transaction.expect("MAIL FROM:<a@example.org>", 250, "2.1.0");
    let start = Instant::now();
    for (name, smtp) in [
        ("after the greeting", &mut silent),
        ("after MAIL", &mut mid_transaction),
    ] {
        smtp.set_read_timeout(Duration::from_secs(5));
        let reply = smtp
            .read_reply()
            .unwrap_or_else(|e| panic!("idle {name}: no 421 within 5 s: {e}"));
        assert!(
            reply.is(421, "4.4.2"),
            "idle {name}: expected `421 4.4.2`, got `{reply}`"
        );
        smtp.closed_within(Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("idle {name}: {e}"));
    }
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "timed out after {waited:?}, before the 1s timeout"
    );

    // A session that keeps talking is not cut off.
    let mut chatty = Smtp::ehlo(mailman.addr());
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(400));
        chatty.expect("NOOP", 250, "2.0.0");
    }
}
