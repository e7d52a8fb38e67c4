//! The queue as the API and the delivery loop use it, on a real directory.

use super::*;
use hedwig::retry::Backoff;
use hedwig::smtp::address::Address;
use hedwig::smtp::reply::{Reply, Status};
use record::{Outcome, Relay};

const POLICY: Policy = Policy {
    backoff: Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(4),
    },
    give_up: Duration::from_secs(100),
};

fn envelope() -> Envelope {
    let to = vec![
        Address::parse("a@one.test").unwrap(),
        Address::parse("b@two.test").unwrap(),
    ];
    Envelope {
        from: Some(Address::parse("s@x.test").unwrap()),
        to,
    }
}

/// `ms` after the time these tests start (ids carry real time).
fn t(ms: u64) -> u64 {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BASE.get_or_init(crate::now_ms) + ms
}

fn settings() -> Settings {
    Settings {
        policy: POLICY,
        keep_status: 10_000,
        remember_keys: 100,
        max_message_size: 1000,
    }
}

/// A queue on `dir`, scanned.
fn queue(dir: &std::path::Path) -> (Queue, async_channel::Receiver<()>) {
    let (q, woken) = Queue::new(store::Store::open(dir).unwrap(), settings());
    smol::block_on(q.scan(0));
    (q, woken)
}

fn add(q: &Queue, key: Option<&str>, body: &[u8], now: u64) -> Result<(Id, bool), AddError> {
    smol::block_on(q.add(&envelope(), key, |id| format!("X-Id: {id}\r\n"), body, now))
}

fn delivered() -> Outcome {
    Outcome::Delivered {
        relay: "mx[127.0.0.1]:25".parse::<Relay>().unwrap(),
        reply: Reply::new(250, Status(2, 0, 0), "ok"),
    }
}

fn deferred() -> Outcome {
    Outcome::Deferred {
        relay: None,
        error: "450".into(),
        reply: None,
    }
}

/// Takes `id` at `now`, applies `outcomes`, finishes.
fn round(q: &Queue, now: u64, outcomes: Vec<(usize, Outcome)>) -> Record {
    let job = q.take(now).expect("a message is due");
    let before = smol::block_on(q.record(job.id)).unwrap();
    let mut after = before.clone();
    for (i, o) in outcomes {
        after.apply(i, o, now, &POLICY);
    }
    smol::block_on(q.finish(&before, after.clone(), now)).unwrap();
    after
}

#[test]
fn bodies_stream_in_repaired_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = queue(dir.path());
    let (id, new) = add(&q, None, b"Subject: x\n\nline\rend", t(0)).unwrap();
    assert!(new);
    let bytes = smol::block_on(q.message(id, |m| m)).unwrap();
    let want = format!("X-Id: {id}\r\nSubject: x\r\n\r\nline\r\nend");
    assert_eq!(bytes, want.as_bytes());
    assert!(matches!(
        add(
            &q,
            None,
            &[b'x'; 1001 + hedwig::handoff::HOP_ALLOWANCE as usize],
            0
        ),
        Err(AddError::TooLarge { max: 1000 })
    ));
    assert!(matches!(add(&q, None, b"", t(0)), Err(AddError::Empty)));
    // Refused messages leave nothing behind.
    assert_eq!(smol::block_on(q.store().list()).unwrap(), [id]);
    assert_eq!(q.counts().messages, 1);
}

#[test]
fn add_is_idempotent_by_key_across_restarts_and_after_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = queue(dir.path());
    let (id, new) = add(&q, Some("K1"), b"m", t(1000)).unwrap();
    assert!(new);
    assert_eq!(add(&q, Some("K1"), b"m", t(1001)).unwrap(), (id, false));
    let (q, _) = queue(dir.path());
    assert_eq!(add(&q, Some("K1"), b"m", t(2001)).unwrap(), (id, false));
    assert_eq!(q.counts().messages, 1);
    // Delivered: still known, in this run and the next.
    round(&q, t(3000), vec![(0, delivered()), (1, delivered())]);
    assert_eq!(add(&q, Some("K1"), b"m", t(3001)).unwrap(), (id, false));
    let (q, _) = queue(dir.path());
    assert_eq!(add(&q, Some("K1"), b"m", t(3002)).unwrap(), (id, false));
    assert_eq!(q.counts().messages, 0);
}

#[test]
fn schedule_delivers_defers_and_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (q, woken) = queue(dir.path());
    let (id, _) = add(&q, None, b"m", t(0)).unwrap();
    assert!(
        woken.try_recv().is_ok(),
        "a new message wakes the delivery loop"
    );
    assert_eq!(q.next_wake(), Some(t(0)));
    let after = round(&q, t(10), vec![(0, delivered()), (1, deferred())]);
    assert_eq!(after.recipients[1].next_attempt, Some(t(1010)));
    assert_eq!(q.next_wake(), Some(t(1010)));
    assert!(q.take(t(1009)).is_none());
    let counts = q.counts();
    assert_eq!(counts.by_state[&State::Deferred], 1);
    assert_eq!(counts.by_state[&State::Delivered], 1);
    assert_eq!(counts.by_domain.get("two.test"), Some(&1));
    // The saved record survives a restart: only b is due again.
    let (q, _) = queue(dir.path());
    let job = q.take(t(1010)).unwrap();
    let before = smol::block_on(q.record(job.id)).unwrap();
    assert_eq!(
        before.due(t(1010), false),
        [1],
        "only the deferred recipient is tried again"
    );
    q.put_back(job.id, job.due);
    let r = round(&q, t(1020), vec![(1, delivered())]);
    assert_eq!(r.finished_at(), Some(t(1020)));
    assert!(q.take(t(5000)).is_none());
    // Kept for status until keep_status has passed, even across a restart.
    let (q, _) = queue(dir.path());
    assert_eq!(smol::block_on(q.get(id)).unwrap(), Some(r));
    assert_eq!(q.counts().by_state[&State::Delivered], 2);
    assert_eq!(q.counts().messages, 0);
    let (total, page) = smol::block_on(q.page(0, 10)).unwrap();
    assert_eq!((total, page.len()), (1, 1));
    // The file was written just now: nothing expires at a time before that.
    assert_eq!(smol::block_on(q.expire(0, 16)).unwrap(), 0);
    let far = crate::now_ms() + 20_000;
    assert_eq!(smol::block_on(q.expire(far, 16)).unwrap(), 1);
    assert_eq!(smol::block_on(q.get(id)).unwrap(), None);
    assert_eq!(q.counts().by_state[&State::Delivered], 0);
}

#[test]
fn flush_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = queue(dir.path());
    let (id, _) = add(&q, None, b"m", t(0)).unwrap();
    round(&q, t(0), vec![(0, deferred()), (1, deferred())]);
    assert!(q.take(t(10)).is_none());
    assert_eq!(q.flush(t(10)), 1);
    let job = q.take(t(10)).unwrap();
    let r = smol::block_on(q.record(job.id)).unwrap();
    assert!(r.due(t(10), false).is_empty(), "not due by its record...");
    assert!(
        r.next_due().unwrap() > job.due,
        "...but taken early: a flush"
    );
    q.put_back(job.id, job.due);
    assert!(smol::block_on(q.delete(id)).unwrap());
    assert!(!smol::block_on(q.delete(id)).unwrap());
    assert!(q.take(t(10_000)).is_none());
    assert_eq!(q.counts().messages, 0);
    let (q, _) = queue(dir.path());
    assert_eq!(smol::block_on(q.get(id)).unwrap(), None);
    // A finished record can be deleted too.
    let (id, _) = add(&q, None, b"m", t(0)).unwrap();
    round(&q, t(0), vec![(0, delivered()), (1, delivered())]);
    assert!(smol::block_on(q.get(id)).unwrap().is_some());
    assert!(smol::block_on(q.delete(id)).unwrap());
    assert_eq!(smol::block_on(q.get(id)).unwrap(), None);
    assert_eq!(q.counts().by_state[&State::Delivered], 0);
}

#[test]
fn deleted_while_delivering_is_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = queue(dir.path());
    let (id, _) = add(&q, None, b"m", t(0)).unwrap();
    let job = q.take(t(0)).unwrap();
    let before = smol::block_on(q.record(job.id)).unwrap();
    assert!(smol::block_on(q.delete(id)).unwrap());
    let mut after = before.clone();
    after.apply(0, deferred(), t(1), &POLICY);
    smol::block_on(q.finish(&before, after, t(1))).unwrap();
    assert!(q.take(t(100_000)).is_none());
    assert_eq!(smol::block_on(q.get(id)).unwrap(), None);
    assert_eq!(q.counts().messages, 0);
}

#[test]
fn a_message_finished_just_before_a_crash_is_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = queue(dir.path());
    let (id, _) = add(&q, None, b"m", t(0)).unwrap();
    let message = std::fs::read(dir.path().join("queue").join(id.to_string())).unwrap();
    round(&q, t(5), vec![(0, delivered()), (1, delivered())]);
    // The crash: the record reached done/, the unlink did not.
    std::fs::write(dir.path().join("queue").join(id.to_string()), message).unwrap();
    let (q, _) = queue(dir.path());
    assert!(
        q.take(t(100_000)).is_none(),
        "finished: not delivered again"
    );
    assert!(smol::block_on(q.store().list()).unwrap().is_empty());
    assert_eq!(q.counts().messages, 0);
}

#[test]
fn a_record_that_does_not_parse_leaves_its_message_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = queue(dir.path());
    let (id, _) = add(&q, None, b"m", t(0)).unwrap();
    round(&q, t(0), vec![(0, deferred()), (1, deferred())]);
    let state = dir.path().join(format!("state/{id}.json"));
    let text = std::fs::read_to_string(&state).unwrap();
    std::fs::write(&state, text.replace("b@two.test", "b@@two")).unwrap();
    let (q, _) = queue(dir.path());
    assert!(q.take(t(100_000)).is_none(), "not scheduled on a guess");
    assert!(
        dir.path().join("queue").join(id.to_string()).exists(),
        "nor lost"
    );
}
