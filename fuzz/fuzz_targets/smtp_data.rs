//! The DATA stream into `DataReceiver`, split into chunks where the fuzzer
//! says, under limits it chooses.
//!
//! Input: byte 0 is `max_size` (0..=255: small, so every input can cross
//! it), byte 1 is `max_line` (0..=255), bytes 2..8 are chunk lengths used
//! in turn (0 counts as 1); the rest is what the client sends after DATA.
//!
//! Invariants: no panic; the bytes passed on never exceed `max_size`;
//! chunking changes nothing (end, verdict, size, and the bytes of an
//! accepted message); what is passed on is a prefix of the unstuffed text;
//! and the client side round-trips: what `stuff` writes, the receiver reads
//! back unchanged.
#![no_main]

use hedwig::message::normalize_newlines;
use hedwig::smtp::data::{stuff, DataReceiver, Limits};
use libfuzzer_sys::fuzz_target;

const HEADER: usize = 8;

const UNLIMITED: Limits = Limits {
    max_size: u64::MAX,
    max_line: usize::MAX,
};

/// What one receiver made of `input`: where the message ended (the offset
/// after `CRLF.CRLF`), its bytes, its verdict code, and its size.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    end: Option<usize>,
    out: Vec<u8>,
    verdict: u16,
    size: u64,
}

fn receive<'a>(limits: Limits, chunks: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let mut rx = DataReceiver::new(limits);
    let mut out = Vec::new();
    let mut offset = 0;
    let mut end = None;
    for chunk in chunks {
        if let Some(n) = rx.feed(chunk, &mut out) {
            assert!(n <= chunk.len(), "used {n} of a {}-byte chunk", chunk.len());
            end = Some(offset + n);
            break;
        }
        offset += chunk.len();
        // The bound holds after every chunk, not only at the end.
        assert!(
            out.len() as u64 <= limits.max_size,
            "{} bytes kept with max_size {}",
            out.len(),
            limits.max_size
        );
    }
    Outcome {
        end,
        verdict: rx.verdict().map_or_else(|r| r.code, |()| 250),
        size: rx.size(),
        out,
    }
}

/// Splits `data` into chunks of the given lengths, cycling through them.
fn chunks<'a>(mut data: &'a [u8], lengths: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    let mut next = lengths.iter().cycle();
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let n = usize::from(*next.next()?).clamp(1, data.len());
        let (head, tail) = data.split_at(n);
        data = tail;
        Some(head)
    })
}

fuzz_target!(|input: &[u8]| {
    if input.len() < HEADER {
        return;
    }
    let (header, data) = input.split_at(HEADER);
    let limits = Limits {
        max_size: u64::from(header[0]),
        max_line: usize::from(header[1]),
    };

    let split = receive(limits, chunks(data, &header[2..]));
    let whole = receive(limits, std::iter::once(data));
    assert!(whole.out.len() as u64 <= limits.max_size);
    // Chunking changes nothing but how much of a refused message was passed
    // on before the refusal was known: in both, a prefix of the text.
    let text = receive(UNLIMITED, std::iter::once(data));
    assert_eq!(
        (split.end, split.verdict, split.size),
        (whole.end, whole.verdict, whole.size),
        "chunking changed the outcome"
    );
    assert_eq!((text.end, text.size), (whole.end, whole.size));
    for outcome in [&split, &whole] {
        assert!(text.out.starts_with(&outcome.out), "{outcome:?}");
    }
    if let Some(end) = whole.end {
        assert!(data[..end].ends_with(b"\r\n.\r\n") || data[..end] == *b".\r\n");
        if whole.verdict == 250 {
            // An accepted message is all of the text, in whole lines.
            assert_eq!(split.out, text.out);
            assert_eq!(whole.out, text.out);
            assert!(whole.out.is_empty() || whole.out.ends_with(b"\r\n"));
        }
    }

    // Client side: any text with its line endings made CRLF, stuffed, reads
    // back as itself (plus the CRLF `stuff` adds to an unfinished last line).
    let message = normalize_newlines(data);
    let mut wire = Vec::new();
    stuff(&message, &mut wire);
    let back = receive(UNLIMITED, chunks(&wire, &header[2..]));
    let mut expected = message.clone();
    if !expected.is_empty() && !expected.ends_with(b"\r\n") {
        expected.extend_from_slice(b"\r\n");
    }
    assert_eq!(
        back.end,
        Some(wire.len()),
        "stuffed text ends early or late"
    );
    assert_eq!(back.verdict, 250);
    assert_eq!(back.out, expected, "stuffed text does not read back");
});
