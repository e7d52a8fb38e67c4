//! DKIM private keys: loading a PEM file, signing, and the public key
//! record to publish in DNS.
//!
//! The crypto is the OpenSSL postoffice already links for TLS (RSA and
//! Ed25519 are both in it): it adds a few kilobytes to the static binary,
//! where a pure-Rust stack (Stalwart's mail-auth with rust-crypto: rsa,
//! ed25519-dalek, sha2) would add hundreds, and postoffice has little room
//! under its 6 MiB budget.

use std::path::Path;

use base64::Engine;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use openssl::sign::Signer;

/// The smallest RSA key Gmail and RFC 8301 accept for signing.
const MIN_RSA_BITS: u32 = 2048;
/// Key files larger than this are not keys.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// A loaded private key; the algorithm follows the key.
pub struct Key {
    pkey: PKey<Private>,
    ed25519: bool,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        write!(f, "Key({})", self.algorithm())
    }
}

impl Key {
    /// Reads and checks the PEM private key at `path`.
    pub fn load(path: &Path) -> Result<Key, String> {
        let size = std::fs::metadata(path)
            .map_err(|e| format!("cannot read: {e}"))?
            .len();
        if size > MAX_KEY_FILE {
            return Err(format!("{size} bytes is too large for a key file"));
        }
        let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        Key::from_pem(&pem)
    }

    /// Parses a PEM private key: PKCS#8 (RSA or Ed25519) or PKCS#1 RSA.
    pub fn from_pem(pem: &[u8]) -> Result<Key, String> {
        // OpenSSL's own error text names its source files; ours says what to do.
        let pkey = PKey::private_key_from_pem(pem).map_err(|_| {
            "not a PEM private key (make one with `openssl genpkey -algorithm ed25519` \
             or `openssl genrsa 2048`)"
                .to_string()
        })?;
        match pkey.id() {
            Id::RSA if pkey.bits() < MIN_RSA_BITS => Err(format!(
                "RSA key of {} bits is too short: use {MIN_RSA_BITS} bits or more",
                pkey.bits()
            )),
            Id::RSA => Ok(Key {
                pkey,
                ed25519: false,
            }),
            Id::ED25519 => Ok(Key {
                pkey,
                ed25519: true,
            }),
            _ => Err("unsupported key type: use RSA or Ed25519".into()),
        }
    }

    /// The `a=` tag: `rsa-sha256` or `ed25519-sha256`.
    pub fn algorithm(&self) -> &'static str {
        if self.ed25519 {
            "ed25519-sha256"
        } else {
            "rsa-sha256"
        }
    }

    /// Signs the canonicalized header data: RSASSA-PKCS1-v1_5 over its
    /// SHA-256 (RFC 6376), or Ed25519 over its SHA-256 digest (RFC 8463).
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        let signed = if self.ed25519 {
            let digest = openssl::sha::sha256(data);
            Signer::new_without_digest(&self.pkey).and_then(|mut s| s.sign_oneshot_to_vec(&digest))
        } else {
            Signer::new(MessageDigest::sha256(), &self.pkey).and_then(|mut s| {
                s.update(data)?;
                s.sign_to_vec()
            })
        };
        signed.map_err(|_| format!("{} signing failed", self.algorithm()))
    }

    /// The TXT record to publish at `selector._domainkey.domain`:
    /// `v=DKIM1; k=rsa; p=...` or `v=DKIM1; k=ed25519; p=...`.
    pub fn record(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        if self.ed25519 {
            let raw = self.pkey.raw_public_key().unwrap_or_default();
            format!("v=DKIM1; k=ed25519; p={}", b64.encode(raw))
        } else {
            let der = self.pkey.public_key_to_der().unwrap_or_default();
            format!("v=DKIM1; k=rsa; p={}", b64.encode(der))
        }
    }
}

/// `--check`'s test of one key file (see `hedwig::config::check_keys_with`).
pub fn check(path: &Path) -> Result<(), String> {
    Key::load(path).map(drop)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh key of the kind `openssl genpkey` makes.
    pub(crate) fn pem(ed25519: bool) -> Vec<u8> {
        let pkey = if ed25519 {
            PKey::generate_ed25519().unwrap()
        } else {
            PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap()
        };
        pkey.private_key_to_pem_pkcs8().unwrap()
    }

    #[test]
    fn loads_rsa_and_ed25519() {
        let rsa = Key::from_pem(&pem(false)).unwrap();
        assert_eq!(rsa.algorithm(), "rsa-sha256");
        assert!(rsa.record().starts_with("v=DKIM1; k=rsa; p=MII"));
        let ed = Key::from_pem(&pem(true)).unwrap();
        assert_eq!(ed.algorithm(), "ed25519-sha256");
        // 32 bytes of public key are 44 base64 characters.
        assert_eq!(ed.record().len(), "v=DKIM1; k=ed25519; p=".len() + 44);
        assert_eq!(ed.sign(b"x").unwrap().len(), 64);
        assert_eq!(rsa.sign(b"x").unwrap().len(), 256);
    }

    #[test]
    fn refuses_what_is_not_a_good_key() {
        let short = openssl::rsa::Rsa::generate(1024).unwrap();
        let short = PKey::from_rsa(short)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap();
        let err = Key::from_pem(&short).unwrap_err();
        assert_eq!(
            err,
            "RSA key of 1024 bits is too short: use 2048 bits or more"
        );
        let err = Key::from_pem(b"-----BEGIN PRIVATE KEY-----\nxx\n").unwrap_err();
        assert!(err.starts_with("not a PEM private key"), "{err}");
        assert!(!err.contains(".c:"), "no OpenSSL source paths: {err}");
        let ec = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap();
        let ec = PKey::from_ec_key(ec)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap();
        assert_eq!(
            Key::from_pem(&ec).unwrap_err(),
            "unsupported key type: use RSA or Ed25519"
        );
        let err = check(Path::new("/nonexistent/key.pem")).unwrap_err();
        assert!(err.starts_with("cannot read: "), "{err}");
    }
}
