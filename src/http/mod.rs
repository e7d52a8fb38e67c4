//! The HTTP/1 wire of the hop, for both sides: hyper's `http1` client and
//! server driven by smol, under surf (the client API) and tide (the router).
//!
//! hyper is the most used and most audited HTTP/1 implementation in Rust;
//! it replaces async-h1, whose server refused HTTP/1.0 (nginx's default
//! `proxy_pass`), dropped pipelined requests and whose client pool
//! (deadpool) hung and pulled tokio's runtime in. Everything here runs on
//! the one smol executor: hyper needs no runtime of its own, only I/O traits
//! (smol-hyper's adapters) and a timer (async-io's).
//!
//! # Layout
//!
//! - [`io`]: TCP with `TCP_NODELAY`, TLS or not behind one type, a deadline
//!   on every read and write.
//! - [`tls`]: the TLS connector (built once, system CAs plus `ca_file`) and
//!   acceptor.
//! - [`body`]: bodies between hyper and http-types, streamed both ways.
//! - [`convert`]: requests and responses between hyper and http-types.
//! - [`client`]: surf's [`http_client::HttpClient`] on hyper, with a
//!   keep-alive pool.

pub mod body;
pub mod client;
pub mod convert;
pub mod io;
pub mod tls;

pub use client::Client;
