//! The delivery side of the end-to-end tests: the real postoffice binary,
//! dnsmasq as the DNS server, tests/peers/sink.py as destination MXs, and
//! curl as the HTTP client. Every process is killed on drop; its log is
//! printed when the test fails.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{wait_until, TestDir};

/// A child process with its log, killed on drop.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr into `dir/name.log`.
    pub fn spawn(dir: &Path, name: &str, cmd: &mut Command) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id (0 once killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM (with the kill command).
    pub fn sigterm(&self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ({})\n{}",
                self.name,
                self.log.display(),
                self.log()
            );
        }
    }
}

/// A built binary of this workspace, next to the test executable's deps/.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join(name);
    assert!(
        bin.exists(),
        "{} missing: run `cargo build --workspace` (scripts/test does)",
        bin.display()
    );
    bin
}

/// dnsmasq serving the given options (`--mx-host=...`, `--host-record=...`) on `addr`.
pub fn dnsmasq(dir: &TestDir, addr: SocketAddr, records: &[&str]) -> Proc {
    let mut cmd = Command::new("/usr/sbin/dnsmasq");
    cmd.args([
        "--no-daemon",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
    ])
    .arg(format!("--port={}", addr.port()))
    .arg(format!("--listen-address={}", addr.ip()))
    .args(records);
    let p = Proc::spawn(dir.path(), &format!("dnsmasq-{}", addr.ip()), &mut cmd);
    // Ready when it answers on TCP (it serves both).
    let ok = wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    assert!(ok, "dnsmasq did not start on {addr}:\n{}", p.log());
    p
}

/// A destination MX: tests/peers/sink.py on `addr`, storing into `dir/name/`.
#[derive(Debug)]
pub struct Sink {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it stores messages.
    pub dir: PathBuf,
    _proc: Proc,
}

/// One message a sink received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Envelope sender.
    pub from: String,
    /// Envelope recipients.
    pub to: Vec<String>,
    /// Whether the session used TLS.
    pub tls: bool,
    /// The message bytes.
    pub bytes: Vec<u8>,
}

impl Received {
    /// The message as text, for assertions.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

impl Sink {
    /// Starts a sink with extra sink.py options.
    pub fn start(dir: &TestDir, name: &str, addr: SocketAddr, options: &[&str]) -> Sink {
        let store = dir.path().join(name);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/sink.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .arg(addr.to_string())
            .arg(&store)
            .args(options);
        let p = Proc::spawn(dir.path(), &format!("sink-{name}"), &mut cmd);
        let ok = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        assert!(ok, "sink {name} did not start on {addr}:\n{}", p.log());
        Sink {
            addr,
            dir: store,
            _proc: p,
        }
    }

    /// Everything received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        names.retain(|p| p.extension().is_some_and(|e| e == "eml"));
        names.sort();
        names
            .iter()
            .filter_map(|eml| {
                let env: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(eml.with_extension("env")).ok()?)
                        .ok()?;
                Some(Received {
                    from: env["from"].as_str().unwrap_or_default().to_string(),
                    to: env["to"]
                        .as_array()?
                        .iter()
                        .filter_map(|t| t.as_str().map(String::from))
                        .collect(),
                    tls: env["tls"].as_bool().unwrap_or(false),
                    bytes: std::fs::read(eml).ok()?,
                })
            })
            .collect()
    }

    /// Waits until at least `n` messages arrived; returns them.
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        wait_until(limit, || self.received().len() >= n);
        self.received()
    }
}

/// The real postoffice binary with a config written from `ron`.
#[derive(Debug)]
pub struct Postoffice {
    /// Its API address.
    pub addr: SocketAddr,
    /// Bearer token.
    pub token: String,
    dir: PathBuf,
    config: PathBuf,
    proc: Proc,
    https: Option<PathBuf>,
}

impl Postoffice {
    /// Writes `body` as the postoffice section (without the outer
    /// `(postoffice: ( ... ))`), adding listen, tokens and queue, and starts it.
    pub fn start(dir: &TestDir, addr: SocketAddr, body: &str) -> Postoffice {
        Self::start_with(dir, addr, body, None)
    }

    /// [`Postoffice::start`] for a postoffice serving HTTPS with a certificate
    /// for `po.test` that `ca` verifies.
    pub fn start_with(
        dir: &TestDir,
        addr: SocketAddr,
        body: &str,
        https: Option<PathBuf>,
    ) -> Postoffice {
        let queue = dir.path().join("queue");
        let config = dir.path().join("postoffice.ron");
        let text = format!(
            "(postoffice: (\n  listen: \"{addr}\", tokens: [\"tok\", \"secret-token\"], hostname: \"po.test\",\n  queue: \"{}\",\n  {body}\n))\n",
            queue.display()
        );
        std::fs::write(&config, text).expect("write postoffice.ron");
        let proc = Self::spawn(dir.path(), &config);
        let po = Postoffice {
            addr,
            token: "tok".into(),
            dir: dir.path().into(),
            config,
            proc,
            https,
        };
        po.wait_ready();
        po
    }

    fn spawn(dir: &Path, config: &Path) -> Proc {
        let mut cmd = Command::new(binary("postoffice"));
        cmd.arg("--config").arg(config).env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        );
        Proc::spawn(dir, "postoffice", &mut cmd)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.http("GET", "/healthz", None, None).0 == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let last = self.http("GET", "/healthz", None, None);
        panic!(
            "postoffice not ready on {} (last: {last:?}):\n{}",
            self.addr,
            self.proc.log()
        );
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// SIGTERM, then waits (up to `limit`) for the process to end; whether it did.
    pub fn stop(&mut self, limit: Duration) -> bool {
        self.proc.sigterm();
        wait_until(limit, || !self.proc.alive())
    }

    /// The config file it runs with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Starts again on the same config and queue.
    pub fn restart(&mut self) {
        self.proc.kill9();
        self.proc = Self::spawn(&self.dir, &self.config);
        self.wait_ready();
    }

    /// Its log.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// One request with curl (token added unless `token` is given as Some("")):
    /// the status and the body.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> (u16, String) {
        self.http_as(Some(&self.token), method, path, content_type, body, &[])
    }

    /// [`Postoffice::http`] with a chosen token (None: no Authorization) and extra headers.
    pub fn http_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
        headers: &[&str],
    ) -> (u16, String) {
        let scheme = if self.https.is_some() {
            "https"
        } else {
            "http"
        };
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "-S",
            "--max-time",
            "20",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
        ]);
        if let Some(ca) = &self.https {
            cmd.arg("--cacert").arg(ca).arg("--resolve").arg(format!(
                "po.test:{}:{}",
                self.addr.port(),
                self.addr.ip()
            ));
        }
        if let Some(t) = token {
            cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
        }
        if let Some(ct) = content_type {
            cmd.arg("-H").arg(format!("Content-Type: {ct}"));
        }
        for h in headers {
            cmd.arg("-H").arg(h);
        }
        let body_file = self.dir.join(format!("body-{}", fastrand::u64(..)));
        if let Some(b) = body {
            std::fs::write(&body_file, b).expect("write body");
            cmd.arg("--data-binary")
                .arg(format!("@{}", body_file.display()));
        }
        let host = if self.https.is_some() {
            format!("po.test:{}", self.addr.port())
        } else {
            self.addr.to_string()
        };
        cmd.arg(format!("{scheme}://{host}{path}"));
        let out = cmd.output().expect("run curl");
        let _ = std::fs::remove_file(&body_file);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        match code.trim().parse() {
            Ok(code) if code > 0 => (code, body.to_string()),
            // curl could not connect: say why.
            _ => (0, String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }

    /// Posts a raw message with the envelope in the query; returns the id.
    pub fn post_raw(&self, from: &str, to: &[&str], message: &[u8]) -> String {
        let (code, body) = self.http(
            "POST",
            &raw_path(from, to),
            Some("message/rfc822"),
            Some(message),
        );
        assert_eq!(code, 202, "POST raw: {body}\n{}", self.log());
        json(&body)["id"].as_str().expect("id").to_string()
    }

    /// The status record of `id`.
    pub fn status(&self, id: &str) -> serde_json::Value {
        let (code, body) = self.http("GET", &format!("/v1/messages/{id}"), None, None);
        assert_eq!(code, 200, "GET {id}: {body}");
        json(&body)
    }

    /// Waits until every recipient of `id` is in `state`; returns the record.
    pub fn wait_state(&self, id: &str, state: &str, limit: Duration) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let ok = wait_until(limit, || {
            last = self.status(id);
            last["recipients"]
                .as_array()
                .is_some_and(|r| r.iter().all(|x| x["state"] == state))
        });
        assert!(
            ok,
            "{id} not all {state} within {limit:?}: {last:#}\n{}",
            self.log()
        );
        last
    }
}

impl Postoffice {
    /// A postoffice whose deliveries go nowhere (a port nothing listens
    /// on), for tests of its HTTP side; `extra` are more fields.
    pub fn start_undelivering(dir: &TestDir, extra: &str) -> Postoffice {
        let nowhere = dir.free_addr();
        let body = format!("{extra} delivery: (routes: {{\"*\": \"{nowhere}\"}})");
        Postoffice::start(dir, dir.free_addr(), &body)
    }

    /// A postoffice serving HTTPS with a certificate a private CA signed
    /// for its address, delivering everything to `mx` in clear; with the
    /// CA's certificate.
    pub fn start_https(dir: &TestDir, mx: SocketAddr) -> (Postoffice, PathBuf) {
        let addr = dir.free_addr();
        let (ca, cert, key) = private_ca(dir, &addr.ip().to_string());
        let body = format!(
            "tls: Some((cert: {:?}, key: {:?})), {}",
            cert.display().to_string(),
            key.display().to_string(),
            route_all(mx)
        );
        (
            Postoffice::start_with(dir, addr, &body, Some(ca.clone())),
            ca,
        )
    }
}

/// The delivery section sending every domain to `mx`, without STARTTLS.
pub fn route_all(mx: SocketAddr) -> String {
    route_all_and(mx, "")
}

/// [`route_all`] with more fields of the delivery section, e.g. a retry.
pub fn route_all_and(mx: SocketAddr, more: &str) -> String {
    format!("delivery: (routes: {{\"*\": \"{mx}\"}}, starttls: Never, {more})")
}

/// Deliveries deferred for an hour: the queue stands still while a test
/// looks at it.
pub const HOUR_RETRY: &str = r#"retry: (first: "1h", max: "1h", give_up: "1d")"#;

/// The `k`-th extra loopback address of this test (127.(100+k).0.x, x being
/// the test's own last octet), for MX hosts that must differ by address only.
pub fn host_ip(dir: &TestDir, k: u8) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, 100 + k, 0, dir.ip.octets()[3])
}

/// A port free on the test's address, to use on its other addresses too.
pub fn free_port(dir: &TestDir) -> u16 {
    dir.free_addr().port()
}

impl Postoffice {
    /// Waits until recipient `i` of `id` is in `state`; returns the record.
    pub fn wait_state_of(
        &self,
        id: &str,
        i: usize,
        state: &str,
        limit: Duration,
    ) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let ok = wait_until(limit, || {
            last = self.status(id);
            last["recipients"][i]["state"] == state
        });
        assert!(
            ok,
            "{id} recipient {i} not {state} within {limit:?}: {last:#}\n{}",
            self.log()
        );
        last
    }
}

/// A self-signed certificate and key (PEM, PKCS#8) for `name`, made by openssl.
pub fn self_signed(dir: &TestDir, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (format!("{name}.crt"), format!("{name}.key"));
    openssl(
        dir.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName=DNS:{name}"),
            "-keyout",
            &key,
            "-out",
            &cert,
        ],
    );
    (dir.path().join(cert), dir.path().join(key))
}

/// A private CA and a certificate it signed for `ip`: (ca.crt, po.crt, po.key).
pub fn private_ca(dir: &TestDir, ip: &str) -> (PathBuf, PathBuf, PathBuf) {
    let d = dir.path();
    let (ca, ca_key) = self_signed(dir, "ca");
    let (ca, ca_key) = (ca.display().to_string(), ca_key.display().to_string());
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=postoffice",
            "-keyout",
            "po.key",
            "-out",
            "po.csr",
        ],
    );
    std::fs::write(
        d.join("po.ext"),
        format!("subjectAltName=IP:{ip},DNS:po.test\n"),
    )
    .expect("ext");
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "po.csr",
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "po.ext",
            "-out",
            "po.crt",
        ],
    );
    (d.join("ca.crt"), d.join("po.crt"), d.join("po.key"))
}

/// Runs the openssl command in `dir`; panics with its stderr if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `/v1/messages?from=..&to=..` with form encoding.
pub fn raw_path(from: &str, to: &[&str]) -> String {
    let enc = |s: &str| {
        s.replace('%', "%25")
            .replace('@', "%40")
            .replace('+', "%2B")
            .replace('&', "%26")
    };
    let mut p = format!("/v1/messages?from={}", enc(from));
    for t in to {
        p.push_str(&format!("&to={}", enc(t)));
    }
    p
}

/// Parses a JSON body, failing the test with the text when it is not JSON.
pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

/// The message as posted: `bytes` without the `Received:` field postoffice
/// puts on top (checked to be there, naming postoffice and HTTP).
#[track_caller]
pub fn without_trace(bytes: &[u8]) -> &[u8] {
    let (trace, rest) = super::message::strip_received(bytes)
        .unwrap_or_else(|e| panic!("no Received: from postoffice: {e}"));
    let trace = String::from_utf8_lossy(trace);
    assert!(
        trace.contains("(hedwig postoffice) with HTTP"),
        "not postoffice's trace: {trace:?}"
    );
    rest
}

/// nginx in the foreground, as root, everything under `dir`.
pub fn nginx(dir: &TestDir, servers: &str) -> Proc {
    let d = dir.path().display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log {d}/nginx-access.log;\n  client_body_temp_path {d}/nginx-body;\n\
         proxy_temp_path {d}/nginx-proxy;\n{servers}\n}}\n"
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).expect("nginx.conf");
    let mut cmd = Command::new("/usr/sbin/nginx");
    cmd.arg("-c")
        .arg(&path)
        .arg("-e")
        .arg(dir.path().join("nginx-error.log"));
    Proc::spawn(dir.path(), "nginx", &mut cmd)
}
