//! The SMTP protocol without I/O: addresses, commands, replies, the DATA
//! wire format, and the server session state machine.

pub mod address;
pub mod command;
pub mod data;
pub mod reply;
pub mod session;
