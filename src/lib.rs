//! hedwig's shared core: what mailman and postoffice both speak and store.
//!
//! # Layout
//!
//! In the order a message travels:
//!
//! - [`smtp`]: SMTP bytes in, replies out; no I/O. [`smtp::session`] is the
//!   server state machine, [`smtp::data`] reads (and writes) the DATA stream.
//! - [`envelope`]: who a message is from and to; [`masquerade`] rewrites
//!   a container's sender to a real domain.
//! - [`message`]: the trace header, `Date:` and `Message-ID:` added on the way in.
//! - [`id`]: unique, time-ordered message ids.
//! - [`spool`]: the durable spool file (temp, fsync, rename, fsync directory),
//!   its async face and the group commit that makes it cheap.
//! - [`handoff`]: the HTTP contract from mailman to postoffice.
//! - `http` (feature `http`): the HTTP/1 wire under surf and tide, hyper on
//!   smol, with TLS and a keep-alive pool.
//! - [`retry`]: backoff between attempts, for the hand-off and for delivery.
//! - [`timeout`]: the bound on every network wait, in both binaries.
//! - [`config`]: `hedwig.ron`, both sections; [`cli`]: the binaries' arguments;
//!   [`privilege`]: becoming the configured user after start.
// deny, not forbid: one call to glibc's mallopt (cli::limit_blocking_threads)
// is allowed by name; nothing else may use `unsafe`.
#![deny(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod cli;
pub mod config;
pub mod envelope;
pub mod handoff;
#[cfg(feature = "http")]
pub mod http;
pub mod id;
pub mod masquerade;
pub mod message;
pub mod privilege;
pub mod retry;
pub mod smtp;
pub mod spool;
pub mod timeout;
