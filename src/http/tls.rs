//! TLS for the hop, on OpenSSL through native-tls. The connector is built
//! once at start: building one reads and parses the system CA bundle, which
//! async-native-tls did for every connection (56 ms of CPU per hand-off).

use std::io;
use std::path::Path;
use std::time::Duration;

use async_net::TcpStream;

use super::io::{Compat, ReadAhead, Stream};
use crate::timeout::timeout;

/// Opens TLS connections, trusting the system's CAs and any extra ones;
/// cheap to clone.
#[derive(Clone)]
pub struct Connector(tokio_native_tls::TlsConnector);

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

impl Connector {
    /// Trusts the system's CAs and, when given, those in the PEM file `ca_file`.
    pub fn new(ca_file: Option<&Path>) -> Result<Connector, String> {
        let mut builder = native_tls::TlsConnector::builder();
        if let Some(path) = ca_file {
            let pem =
                std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            let cert = native_tls::Certificate::from_pem(&pem)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            builder.add_root_certificate(cert);
        }
        let connector = builder.build().map_err(|e| format!("tls: {e}"))?;
        Ok(Connector(connector.into()))
    }

    /// The TLS handshake with `host` over `tcp`, within `limit`.
    pub async fn connect(&self, host: &str, tcp: TcpStream, limit: Duration) -> io::Result<Stream> {
        let what = format!("the TLS handshake with {host}");
        let handshake = async {
            self.0
                .connect(host, Compat(ReadAhead::new(tcp)))
                .await
                .map_err(|e| io::Error::other(format!("TLS with {host}: {e}")))
        };
        Ok(Stream::tls(timeout(limit, &what, handshake).await?))
    }
}

/// Accepts TLS connections with one certificate chain and key; cheap to clone.
#[derive(Clone)]
pub struct Acceptor(tokio_native_tls::TlsAcceptor);

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Acceptor")
    }
}

impl Acceptor {
    /// Loads the PEM certificate chain `cert` and PKCS#8 key `key`.
    pub fn new(cert: &Path, key: &Path) -> Result<Acceptor, String> {
        let cert_pem =
            std::fs::read(cert).map_err(|e| format!("tls cert {}: {e}", cert.display()))?;
        let key_pem = std::fs::read(key).map_err(|e| format!("tls key {}: {e}", key.display()))?;
        let identity = native_tls::Identity::from_pkcs8(&cert_pem, &key_pem).map_err(|e| {
            format!(
                "tls identity from {} and {}: {e}",
                cert.display(),
                key.display()
            )
        })?;
        let acceptor = native_tls::TlsAcceptor::new(identity).map_err(|e| format!("tls: {e}"))?;
        Ok(Acceptor(acceptor.into()))
    }

    /// The server side of the handshake over `tcp`, within `limit`.
    pub async fn accept(&self, tcp: TcpStream, limit: Duration) -> io::Result<Stream> {
        let handshake = async {
            self.0
                .accept(Compat(ReadAhead::new(tcp)))
                .await
                .map_err(|e| io::Error::other(format!("TLS: {e}")))
        };
        Ok(Stream::tls(
            timeout(limit, "the TLS handshake", handshake).await?,
        ))
    }
}
