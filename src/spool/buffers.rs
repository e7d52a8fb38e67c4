//! Message buffers kept for reuse.
//!
//! musl's malloc (the static binaries) gives a large block back to the
//! kernel when it is freed, so a fresh buffer for every message costs a
//! page fault per 4 KiB it touches, again and again: at 100 KiB the static
//! mailman took 100 page faults per message and twice the kernel time of
//! the glibc build. A few freed buffers are kept here instead, and the
//! next message takes one. The pool holds at most [`KEEP`] buffers of at
//! most [`MAX`] bytes each: what it keeps was in use at once before, so it
//! does not raise the peak, and it does not grow with the queue.

use std::sync::Mutex;

/// Most buffers kept.
const KEEP: usize = 32;

/// Largest buffer kept (a bigger one is freed): a whole message up to the
/// writer's flush size, and room to spare.
const MAX: usize = 256 * 1024;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty buffer with room for at least `capacity` bytes: a kept one
/// when there is one.
pub fn take(capacity: usize) -> Vec<u8> {
    let kept = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
    match kept {
        Some(mut buf) => {
            buf.reserve(capacity);
            buf
        }
        None => Vec::with_capacity(capacity),
    }
}

/// Gives `buf` back for reuse (freed when the pool is full or it is big).
pub fn give(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > MAX {
        return;
    }
    buf.clear();
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < KEEP {
        pool.push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_the_pool_is_bounded() {
        let mut b = take(1000);
        b.extend_from_slice(b"old");
        give(b);
        let b = take(10);
        assert!(b.is_empty() && b.capacity() >= 10);
        give(vec![0; MAX + 1]);
        for _ in 0..KEEP * 2 {
            give(Vec::with_capacity(16));
        }
        assert!(POOL.lock().unwrap().len() <= KEEP);
        assert!(POOL.lock().unwrap().iter().all(|b| b.capacity() <= MAX));
    }
}
