//! STUB (replaced by the real module).
use hedwig::envelope::Envelope;
use hedwig::smtp::reply::Reply;
use std::net::SocketAddr;
use std::time::Duration;
/// e
#[derive(Debug)]
pub struct Error;
impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stub")
    }
}
impl Error {
    /// p
    pub fn is_permanent(&self) -> bool {
        false
    }
    /// r
    pub fn reply(&self) -> Option<&Reply> {
        None
    }
}
/// t
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub command: Duration,
    pub data_end: Duration,
}
/// p
#[derive(Debug, Clone, Copy)]
pub enum TlsPolicy {
    Never,
    Opportunistic,
    Required,
}
/// c
#[derive(Debug)]
pub struct Client;
impl Client {
    /// c
    pub async fn connect(
        _a: SocketAddr,
        _h: &str,
        _e: &str,
        _p: TlsPolicy,
        _t: Timeouts,
    ) -> Result<Client, Error> {
        Err(Error)
    }
    /// s
    pub async fn send(&mut self, _e: &Envelope, _m: &[u8]) -> Result<Vec<Reply>, Error> {
        Err(Error)
    }
    /// t
    pub fn tls(&self) -> bool {
        false
    }
    /// q
    pub async fn quit(self) {}
}
