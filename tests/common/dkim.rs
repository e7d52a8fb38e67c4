//! DKIM keys made by the openssl command, as the README tells operators to
//! make them, their public key records (computed by openssl, not by
//! hedwig), and dkimpy (tests/peers/dkim_verify.py) as the verifier.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::stack::openssl;
use super::TestDir;

/// A key in a file, and the TXT record that publishes it.
#[derive(Debug, Clone)]
pub struct TestKey {
    /// The signing domain.
    pub domain: String,
    /// The selector.
    pub selector: String,
    /// The PEM private key file.
    pub path: PathBuf,
    /// `v=DKIM1; k=...; p=...`.
    pub record: String,
}

impl TestKey {
    /// `selector._domainkey.domain`.
    pub fn name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// The `dkim: [...]` entry for hedwig.ron.
    pub fn ron(&self) -> String {
        format!(
            "(domain: {:?}, selector: {:?}, key: {:?})",
            self.domain,
            self.selector,
            self.path.display().to_string()
        )
    }
}

/// Makes a key for `domain` with `selector`: Ed25519 with
/// `openssl genpkey -algorithm ed25519`, else RSA with `openssl genrsa 2048`.
pub fn make_key(dir: &TestDir, domain: &str, selector: &str, ed25519: bool) -> TestKey {
    let file = format!("{selector}.{domain}.pem");
    if ed25519 {
        openssl(
            dir.path(),
            &["genpkey", "-algorithm", "ed25519", "-out", &file],
        );
    } else {
        openssl(dir.path(), &["genrsa", "-out", &file, "2048"]);
    }
    let path = dir.path().join(&file);
    let record = record_of(dir.path(), &file, ed25519);
    TestKey {
        domain: domain.into(),
        selector: selector.into(),
        path,
        record,
    }
}

/// The DNS record of a key file, by openssl: the SubjectPublicKeyInfo for
/// RSA, the raw 32 bytes (the end of it) for Ed25519 (RFC 8463).
pub fn record_of(dir: &Path, file: &str, ed25519: bool) -> String {
    let der = format!("{file}.pub.der");
    openssl(
        dir,
        &[
            "pkey", "-in", file, "-pubout", "-outform", "DER", "-out", &der,
        ],
    );
    let bytes = std::fs::read(dir.join(&der)).expect("public key");
    let raw = if ed25519 {
        bytes[bytes.len() - 32..].to_vec()
    } else {
        bytes
    };
    std::fs::write(dir.join(&der), raw).expect("write");
    let out = Command::new("openssl")
        .args(["base64", "-A", "-in", &der])
        .current_dir(dir)
        .output()
        .expect("openssl base64");
    let p = String::from_utf8(out.stdout).expect("base64");
    let k = if ed25519 { "ed25519" } else { "rsa" };
    format!("v=DKIM1; k={k}; p={}", p.trim())
}

/// Has dkimpy verify `message`: exactly `expect` signatures, all valid
/// against `keys`' records (also after re-folding with `refold`). Returns
/// dkimpy's complaint, or `Ok` when it printed ok.
pub fn verify(message: &[u8], keys: &[TestKey], expect: usize, refold: bool) -> Result<(), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/dkim_verify.py");
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(script).arg("--expect").arg(expect.to_string());
    if refold {
        cmd.arg("--refold");
    }
    for k in keys {
        cmd.arg(format!("{}={}", k.name(), k.record));
    }
    let out = super::run_with_input(&mut cmd, message);
    let said = String::from_utf8_lossy(&out.stdout);
    if said.trim() == "ok" {
        Ok(())
    } else {
        Err(format!(
            "dkimpy: {}{}\nmessage:\n{}",
            said,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(message)
        ))
    }
}
