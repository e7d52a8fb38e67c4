//! postoffice's `dkim: [...]` list: the keys that sign outgoing mail.
//!
//! The file names a key by path; what a key must be (a PEM RSA key of 2048
//! bits or more, or an Ed25519 one) is postoffice's business, since the
//! shared library knows no crypto. postoffice hands its loader to
//! [`check_keys_with`] before reading the file, and the loader then runs
//! inside parsing, so a bad key is reported like any other mistake: at the
//! value's line and column, e.g.
//! `hedwig.ron:9:70: postoffice.dkim.key: /etc/hedwig/dkim/x.pem: not a PEM private key`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::de::{Deserialize, Deserializer, Error as _};

use super::de::{self, Checked, Hostname};

/// A check that a key file loads; the message says why not.
pub type KeyCheck = fn(&Path) -> Result<(), String>;

static KEY_CHECK: OnceLock<KeyCheck> = OnceLock::new();

/// Makes every later parse run `check` on each `dkim` key path. Set once per
/// process (postoffice sets it at start); without it only the path's form is
/// checked, so `mailman --check` on a shared file never reads postoffice's keys.
pub fn check_keys_with(check: KeyCheck) {
    let _ = KEY_CHECK.set(check);
}

/// One signing key: mail whose From: domain is `domain` or below it is signed
/// with it as `d=domain; s=selector`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKey {
    /// The signing domain (`d=`), lowercase.
    #[serde(deserialize_with = "domain")]
    pub domain: String,
    /// The selector (`s=`): the key's record is at `selector._domainkey.domain`.
    #[serde(deserialize_with = "domain")]
    pub selector: String,
    /// PEM private key file: RSA (2048 bits or more) or Ed25519 (PKCS#8).
    #[serde(deserialize_with = "key_path")]
    pub key: PathBuf,
}

impl DkimKey {
    /// Whether this key signs for mail from `from_domain`: the same domain or
    /// a subdomain of it (DMARC's relaxed alignment).
    pub fn covers(&self, from_domain: &str) -> bool {
        let from = from_domain.trim_end_matches('.').to_ascii_lowercase();
        from == self.domain
            || from
                .strip_suffix(&self.domain)
                .is_some_and(|rest| rest.ends_with('.'))
    }

    /// Where the public key is published: `selector._domainkey.domain`.
    pub fn record_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }
}

fn domain<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Checked::<Hostname>::deserialize(d)?.0.to_ascii_lowercase())
}

fn key_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let path = de::path(d)?;
    if let Some(check) = KEY_CHECK.get() {
        check(&path).map_err(|e| D::Error::custom(format!("{}: {e}", path.display())))?;
    }
    Ok(path)
}

/// The list, with no (domain, selector) given twice: two keys under one
/// record name cannot both verify.
pub(crate) fn keys<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<DkimKey>, D::Error> {
    let keys = Vec::<DkimKey>::deserialize(d)?;
    for (i, k) in keys.iter().enumerate() {
        if keys[..i].iter().any(|o| o.record_name() == k.record_name()) {
            return Err(D::Error::custom(format!(
                "selector {:?} of domain {:?} given twice",
                k.selector, k.domain
            )));
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(domain: &str) -> DkimKey {
        DkimKey {
            domain: domain.into(),
            selector: "s".into(),
            key: "/k".into(),
        }
    }

    #[test]
    fn covers_the_domain_and_below() {
        let k = key("example.org");
        assert!(k.covers("example.org"));
        assert!(k.covers("Mail.Example.ORG"));
        assert!(k.covers("a.b.example.org."));
        assert!(!k.covers("badexample.org"));
        assert!(!k.covers("example.org.evil"));
        assert!(!k.covers("org"));
        assert_eq!(k.record_name(), "s._domainkey.example.org");
    }
}
