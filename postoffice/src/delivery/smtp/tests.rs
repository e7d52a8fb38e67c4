//! The client core driven with byte literals, as a server would answer.

use super::*;
use hedwig::smtp::address::Address;

/// Parses every reply in `bytes`.
fn replies(bytes: &[u8]) -> Vec<Reply> {
    let mut r = Replies::default();
    r.feed(bytes);
    std::iter::from_fn(|| r.next())
        .map(|x| x.unwrap())
        .collect()
}

fn one(bytes: &[u8]) -> Reply {
    replies(bytes).pop().unwrap()
}

fn envelope(to: &[&str]) -> Envelope {
    Envelope {
        from: Some(Address::parse("s@src.test").unwrap()),
        to: to.iter().map(|a| Address::parse(a).unwrap()).collect(),
    }
}

fn write<T>(bytes: &[u8]) -> Action<T> {
    Action::Write(bytes.to_vec())
}

const MESSAGE: &[u8] = b"Subject: x\r\n\r\nhi\r\n";

#[test]
fn replies_come_whole_whatever_the_chunks() {
    let mut r = Replies::default();
    r.feed(b"250-mx.test hello\r\n250-PIPE");
    assert!(r.next().is_none());
    r.feed(b"LINING\r\n250 SIZE 1000\r\n354 go");
    let ehlo = r.next().unwrap().unwrap();
    assert_eq!(ehlo.code, 250);
    assert_eq!(ehlo.lines, ["mx.test hello", "PIPELINING", "SIZE 1000"]);
    assert!(r.next().is_none(), "354 line not complete");
    r.feed(b"\r\n");
    assert_eq!(r.next().unwrap().unwrap().code, 354);
    r.feed(b"hello\r\n");
    assert!(matches!(r.next(), Some(Err(Error::Protocol(_)))));
    r.feed(&[b'2'; 5000]);
    assert!(matches!(r.next(), Some(Err(Error::Protocol(_)))));
}

#[test]
fn hello_with_starttls_says_ehlo_twice() {
    let mut h = Hello::new("po.test", TlsPolicy::Opportunistic);
    assert_eq!(
        h.reply(one(b"220 mx.test ESMTP\r\n")),
        write(b"EHLO po.test\r\n")
    );
    let ehlo = one(b"250-mx.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n");
    assert_eq!(h.reply(ehlo), write(b"STARTTLS\r\n"));
    assert_eq!(h.reply(one(b"220 2.0.0 go ahead\r\n")), Action::StartTls);
    assert_eq!(h.tls_started(), write(b"EHLO po.test\r\n"));
    let ehlo = one(b"250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n");
    let Action::Done(Ok(ext)) = h.reply(ehlo) else {
        panic!("done")
    };
    assert!(ext.pipelining && ext.starttls);
}

#[test]
fn hello_falls_back_to_helo_and_honours_the_tls_policy() {
    let mut h = Hello::new("po.test", TlsPolicy::Required);
    h.reply(one(b"220 mx\r\n"));
    assert_eq!(h.reply(one(b"502 no\r\n")), write(b"HELO po.test\r\n"));
    assert_eq!(
        h.reply(one(b"250 mx\r\n")),
        Action::Done(Ok(Extensions::default()))
    );

    let mut h = Hello::new("po.test", TlsPolicy::Required);
    h.reply(one(b"220 mx\r\n"));
    assert!(matches!(
        h.reply(one(b"250 mx\r\n")),
        Action::Done(Err(Error::Tls(_)))
    ));

    let mut h = Hello::new("po.test", TlsPolicy::Never);
    h.reply(one(b"220 mx\r\n"));
    let offered = one(b"250-mx\r\n250 STARTTLS\r\n");
    assert!(
        matches!(h.reply(offered), Action::Done(Ok(_))),
        "never means never"
    );

    let mut h = Hello::new("po.test", TlsPolicy::Never);
    let busy = one(b"421 4.3.2 busy\r\n");
    assert_eq!(
        h.reply(busy.clone()),
        Action::Done(Err(Error::Greeting(busy)))
    );
}

#[test]
fn pipelined_transaction_in_one_write() {
    let ext = Extensions {
        pipelining: true,
        ..Extensions::default()
    };
    let mut t = Transaction::new(&ext, &envelope(&["a@d.test", "b@d.test"]), MESSAGE).unwrap();
    assert_eq!(
        t.start(),
        write(b"MAIL FROM:<s@src.test>\r\nRCPT TO:<a@d.test>\r\nRCPT TO:<b@d.test>\r\nDATA\r\n")
    );
    for r in replies(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n") {
        assert_eq!(t.reply(r), Action::Read);
    }
    assert_eq!(
        t.reply(one(b"354 go\r\n")),
        Action::WriteMessage { empty: false }
    );
    let Action::Done(Ok(out)) = t.reply(one(b"250 2.0.0 queued\r\n")) else {
        panic!("done")
    };
    assert_eq!(out[0].to_lines(), "250 2.0.0 queued");
    assert_eq!(out[1].to_lines(), "550 5.1.1 no such user");
    assert!(!t.needs_reset());
}

#[test]
fn one_command_at_a_time_without_pipelining() {
    let ext = Extensions {
        size: Some(0),
        ..Extensions::default()
    };
    let mut t = Transaction::new(&ext, &envelope(&["a@d.test", "b@d.test"]), MESSAGE).unwrap();
    assert_eq!(t.start(), write(b"MAIL FROM:<s@src.test> SIZE=18\r\n"));
    assert_eq!(
        t.reply(one(b"250 ok\r\n")),
        write(b"RCPT TO:<a@d.test>\r\n")
    );
    assert_eq!(
        t.reply(one(b"450 4.2.0 later\r\n")),
        write(b"RCPT TO:<b@d.test>\r\n")
    );
    assert_eq!(t.reply(one(b"250 ok\r\n")), write(b"DATA\r\n"));
    assert_eq!(
        t.reply(one(b"354 go\r\n")),
        Action::WriteMessage { empty: false }
    );
    let Action::Done(Ok(out)) = t.reply(one(b"554 5.7.1 spam\r\n")) else {
        panic!("done")
    };
    assert_eq!(out[0].code, 450, "a refused RCPT keeps its own reply");
    assert_eq!(out[1].code, 554, "an accepted one gets the message's");
}

#[test]
fn refusals_of_the_whole_transaction() {
    let ext = Extensions {
        pipelining: true,
        ..Extensions::default()
    };
    let env = envelope(&["a@d.test"]);
    // MAIL refused.
    let mut t = Transaction::new(&ext, &env, MESSAGE).unwrap();
    t.start();
    t.reply(one(b"550 5.7.1 go away\r\n"));
    t.reply(one(b"503 5.5.1 no MAIL\r\n"));
    let refused = t.reply(one(b"503 5.5.1 no MAIL\r\n"));
    assert!(matches!(refused, Action::Done(Err(Error::Rejected(r))) if r.code == 550));
    assert!(t.needs_reset());
    // Every RCPT refused, DATA refused: the RCPT replies are the outcome.
    let mut t = Transaction::new(&ext, &env, MESSAGE).unwrap();
    t.start();
    t.reply(one(b"250 ok\r\n"));
    t.reply(one(b"550 5.1.1 no\r\n"));
    let Action::Done(Ok(out)) = t.reply(one(b"554 5.5.1 no valid recipients\r\n")) else {
        panic!("done")
    };
    assert_eq!(out[0].code, 550);
    assert!(t.needs_reset());
    // Every RCPT refused but the server says 354: end the empty message.
    let mut t = Transaction::new(&ext, &env, MESSAGE).unwrap();
    t.start();
    t.reply(one(b"250 ok\r\n"));
    t.reply(one(b"450 no\r\n"));
    assert_eq!(
        t.reply(one(b"354 go\r\n")),
        Action::WriteMessage { empty: true }
    );
    let Action::Done(Ok(out)) = t.reply(one(b"554 no message\r\n")) else {
        panic!("done")
    };
    assert_eq!(out[0].code, 450);
    // DATA refused though a recipient was accepted.
    let mut t = Transaction::new(&ext, &env, MESSAGE).unwrap();
    t.start();
    t.reply(one(b"250 ok\r\n"));
    t.reply(one(b"250 ok\r\n"));
    let refused = t.reply(one(b"451 4.3.0 try later\r\n"));
    assert!(matches!(refused, Action::Done(Err(Error::Rejected(r))) if r.code == 451));
}

#[test]
fn mail_parameters_and_local_refusals() {
    let env = envelope(&["a@d.test"]);
    let full = Extensions {
        size: Some(100),
        eight_bit: true,
        smtputf8: true,
        ..Default::default()
    };
    let cmd = |ext: &Extensions, env: &Envelope, msg: &[u8]| {
        let mut t = Transaction::new(ext, env, msg)?;
        match t.start() {
            Action::Write(b) => Ok(String::from_utf8(b).unwrap()),
            other => panic!("{other:?}"),
        }
    };
    let eight = "Subject: é\r\n\r\nbody é\r\n".as_bytes();
    assert_eq!(
        cmd(&full, &env, eight).unwrap(),
        "MAIL FROM:<s@src.test> SIZE=24 BODY=8BITMIME SMTPUTF8\r\n"
    );
    assert!(matches!(
        cmd(&full, &env, &[b'x'; 101]),
        Err(Error::Local(_))
    ));
    assert!(matches!(
        cmd(&full, &env, b"a\nb\r\n"),
        Err(Error::Local(_))
    ));
    assert!(matches!(
        cmd(&full, &env, b"a\rb\r\n"),
        Err(Error::Local(_))
    ));
    let utf8 = Envelope {
        from: None,
        to: vec![Address::parse("jörg@d.test").unwrap()],
    };
    let plain = Extensions::default();
    assert!(matches!(cmd(&plain, &utf8, MESSAGE), Err(Error::Local(_))));
    assert_eq!(
        cmd(&plain, &env, MESSAGE).unwrap(),
        "MAIL FROM:<s@src.test>\r\n"
    );
}

#[test]
fn the_header_section_ends_at_the_first_blank_line() {
    assert_eq!(header_section(b"A: b\r\n\r\nbody"), b"A: b");
}
