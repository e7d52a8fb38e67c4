//! The API's own client, for `postoffice queue`: one request per connection
//! to the running postoffice, with async-h1 (the stack the server uses, so
//! no second HTTP client is compiled in). Over HTTPS it trusts the
//! certificates postoffice itself serves (from hedwig.ron) besides the
//! system's, and not the host name: it talks to its own listen address.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use futures_lite::{AsyncReadExt, FutureExt};
use http_types::{Method, Request, Url};
use serde_json::Value;
use smol::Timer;

/// How long one request may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to reach the API.
#[derive(Debug)]
pub struct Client {
    base: Url,
    addr: SocketAddr,
    token: String,
    tls: Option<async_native_tls::TlsConnector>,
}

impl Client {
    /// A client for the API at `addr` (https when `cert`, the PEM file
    /// postoffice serves, is given), sending `token`.
    pub fn new(addr: SocketAddr, cert: Option<&Path>, token: String) -> Result<Client, String> {
        let scheme = if cert.is_some() { "https" } else { "http" };
        let base = Url::parse(&format!("{scheme}://{addr}/")).map_err(|e| e.to_string())?;
        let tls = match cert {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let certs = native_tls::Certificate::stack_from_pem(&pem)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let connector = certs
                    .into_iter()
                    .fold(async_native_tls::TlsConnector::new(), |c, cert| {
                        c.add_root_certificate(cert)
                    })
                    .danger_accept_invalid_hostnames(true);
                Some(connector)
            }
        };
        Ok(Client {
            base,
            addr,
            token,
            tls,
        })
    }

    /// The base URL, for messages.
    pub fn url(&self) -> &Url {
        &self.base
    }

    /// Sends `method path`; returns the status and the JSON body (`Null`
    /// when the body is not JSON).
    pub async fn request(&self, method: Method, path: &str) -> Result<(u16, Value), String> {
        let url = self.base.join(path).map_err(|e| e.to_string())?;
        let mut req = Request::new(method, url);
        req.insert_header("Authorization", format!("Bearer {}", self.token));
        req.insert_header("Connection", "close");
        let exchange = async {
            let stream = async_net::TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", self.base))?;
            let mut response = match &self.tls {
                None => async_h1::connect(stream, req).await,
                Some(tls) => {
                    let stream = tls
                        .connect(self.addr.ip().to_string(), stream)
                        .await
                        .map_err(|e| format!("TLS with {}: {e}", self.base))?;
                    async_h1::connect(stream, req).await
                }
            }
            .map_err(|e| format!("{}: {e}", self.base))?;
            let mut body = Vec::new();
            response
                .take_body()
                .into_reader()
                .take(64 << 20)
                .read_to_end(&mut body)
                .await
                .map_err(|e| format!("{}: {e}", self.base))?;
            let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
            Ok((u16::from(response.status()), json))
        };
        exchange
            .or(async {
                Timer::after(TIMEOUT).await;
                Err(format!("{} did not answer within {TIMEOUT:?}", self.base))
            })
            .await
    }
}
