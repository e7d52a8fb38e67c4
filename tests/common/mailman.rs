//! The mailman process under test: its RON config and its lifecycle.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::TestDir;

/// How long mailman may take from spawn to its first `220 ` greeting.
pub const READY_LIMIT: Duration = Duration::from_secs(10);

/// The token every test config gives mailman for postoffice.
pub const TOKEN: &str = "secret-token";

/// mailman's config file, field for field; [`Config::to_ron`] writes it.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where mailman listens.
    pub listen: SocketAddr,
    /// The name in the greeting and the EHLO reply.
    pub hostname: String,
    /// Client networks mailman serves.
    pub allow: Vec<String>,
    /// Largest message in bytes.
    pub max_message_size: u64,
    /// Most recipients per message.
    pub max_recipients: u32,
    /// Most simultaneous SMTP sessions.
    pub max_connections: u32,
    /// Refused commands per session before 421.
    pub max_errors: u32,
    /// The spool directory.
    pub spool: PathBuf,
    /// The fake postoffice.
    pub postoffice: SocketAddr,
    /// postoffice's URL when not `http://{postoffice}` (e.g. https://...).
    pub postoffice_url: Option<String>,
    /// Further postoffice URLs, tried after the first (failover).
    pub failover: Vec<String>,
    /// A CA file to trust for postoffice's HTTPS.
    pub ca_file: Option<PathBuf>,
    /// Bearer token sent to postoffice.
    pub token: String,
    /// First retry delay of a failed hand-off.
    pub retry_first: String,
    /// Largest retry delay of a failed hand-off.
    pub retry_max: String,
    /// Hand-offs in flight at once.
    pub concurrency: u32,
    /// Most messages in one hand-off.
    pub batch: u32,
    /// Bound on one hand-off request.
    pub postoffice_timeout: String,
    /// SMTP idle timeout.
    pub timeout: String,
    /// Bound on one DATA phase.
    pub data_timeout: String,
    /// How long SIGTERM waits for sessions and hand-offs.
    pub shutdown_timeout: String,
    /// Longest SMTP command line.
    pub max_line_length: u32,
    /// More fields of the mailman section, as RON (e.g. `masquerade: (...)`).
    pub extra: String,
}

impl Config {
    /// The config the brief describes, on a free port of this test's address, with
    /// the spool in the test's temp dir and hand-offs going to `postoffice`.
    pub fn new(dir: &TestDir, postoffice: SocketAddr) -> Config {
        Config {
            listen: dir.free_addr(),
            hostname: "mailman.test".into(),
            allow: vec!["127.0.0.0/8".into()],
            max_message_size: 100_000,
            max_recipients: 5,
            max_connections: 512,
            max_errors: 20,
            spool: dir.path().join("spool"),
            postoffice,
            postoffice_url: None,
            failover: Vec::new(),
            ca_file: None,
            token: TOKEN.into(),
            retry_first: "100ms".into(),
            retry_max: "1s".into(),
            concurrency: 8,
            batch: 32,
            postoffice_timeout: "10s".into(),
            timeout: "5m".into(),
            data_timeout: "10m".into(),
            shutdown_timeout: "5s".into(),
            max_line_length: 4096,
            extra: String::new(),
        }
    }

    /// The RON text of this config.
    pub fn to_ron(&self) -> String {
        let allow: Vec<String> = self.allow.iter().map(|a| format!("{a:?}")).collect();
        format!(
            r#"(
  mailman: (
    listen: ["{listen}"],
    hostname: {hostname:?},
    allow: [{allow}],
    max_message_size: {max_message_size},
    max_recipients: {max_recipients},
    max_connections: {max_connections},
    max_errors: {max_errors},
    spool: {spool:?},
    postoffice: (url: {url}, ca_file: {ca_file}, token: {token:?}, retry: (first: {retry_first:?}, max: {retry_max:?}), concurrency: {concurrency}, batch: {batch}, timeout: {postoffice_timeout:?}),
    timeout: {timeout:?}, data_timeout: {data_timeout:?}, shutdown_timeout: {shutdown_timeout:?}, max_line_length: {max_line_length},
    {extra}
  ),
)
"#,
            listen = self.listen,
            hostname = self.hostname,
            allow = allow.join(", "),
            max_message_size = self.max_message_size,
            max_recipients = self.max_recipients,
            max_connections = self.max_connections,
            max_errors = self.max_errors,
            spool = self.spool.display().to_string(),
            url = {
                let first = self
                    .postoffice_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{}", self.postoffice));
                let all: Vec<String> = std::iter::once(&first)
                    .chain(&self.failover)
                    .map(|u| format!("{u:?}"))
                    .collect();
                match all.len() {
                    1 => all[0].clone(),
                    _ => format!("[{}]", all.join(", ")),
                }
            },
            ca_file = self
                .ca_file
                .as_ref()
                .map_or("None".to_string(), |p| format!(
                    "Some({:?})",
                    p.display().to_string()
                )),
            token = self.token,
            retry_first = self.retry_first,
            retry_max = self.retry_max,
            concurrency = self.concurrency,
            batch = self.batch,
            postoffice_timeout = self.postoffice_timeout,
            timeout = self.timeout,
            data_timeout = self.data_timeout,
            shutdown_timeout = self.shutdown_timeout,
            max_line_length = self.max_line_length,
            extra = self.extra,
        )
    }
}

/// The built mailman binary: target/<profile>/mailman next to this test binary's
/// deps/ dir, or $HEDWIG_MAILMAN.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HEDWIG_MAILMAN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> -> target/debug/mailman
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("mailman");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (`cargo build -p mailman`, or run scripts/test)",
        bin.display()
    );
    bin
}

/// Runs mailman in the foreground on the config file at `path` (for a start
/// that must fail); its output.
pub fn run_with(path: &Path) -> std::process::Output {
    Command::new(binary())
        .arg("--config")
        .arg(path)
        .output()
        .expect("run mailman")
}

/// A running mailman; killed (SIGKILL) on drop, its stderr printed if the test failed.
#[derive(Debug)]
pub struct Mailman {
    /// The config it runs with.
    pub config: Config,
    config_path: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    logs: Vec<PathBuf>,
}

impl Mailman {
    /// Writes the config into the test dir, spawns mailman and waits until it greets
    /// with `220 `.
    pub fn start(dir: &TestDir, config: Config) -> Mailman {
        Self::start_expecting(dir, config, "220 ")
    }

    /// Like [`Mailman::start`], but readiness is the first reply line starting with
    /// `greeting` (e.g. `"554 "` for a config that does not allow 127.0.0.1).
    pub fn start_expecting(dir: &TestDir, config: Config, greeting: &str) -> Mailman {
        let config_path = dir.path().join("mailman.ron");
        std::fs::write(&config_path, config.to_ron()).expect("write mailman.ron");
        let mut mailman = Mailman {
            config,
            config_path,
            dir: dir.path().to_path_buf(),
            child: None,
            logs: Vec::new(),
        };
        mailman.spawn(greeting);
        mailman
    }

    fn spawn(&mut self, greeting: &str) {
        assert!(self.child.is_none(), "mailman is already running");
        let log = self.dir.join(format!("mailman.{}.stderr", self.logs.len()));
        let stderr = File::create(&log).expect("create stderr log");
        let stdout = stderr.try_clone().expect("clone log handle");
        self.logs.push(log);
        let child = Command::new(binary())
            .arg("--config")
            .arg(&self.config_path)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn mailman");
        self.child = Some(child);
        self.wait_ready(greeting);
    }

    /// Poll-connects until a reply line starting with `greeting` arrives.
    fn wait_ready(&mut self, greeting: &str) {
        let deadline = Instant::now() + READY_LIMIT;
        let mut last = String::from("nothing yet");
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                panic!(
                    "mailman exited during startup with {status}\n{}",
                    self.stderr()
                );
            }
            match probe(self.config.listen) {
                Ok(line) if line.starts_with(greeting) => return,
                Ok(line) => last = format!("greeting {line:?}"),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "mailman did not greet with {greeting:?} on {} within {READY_LIMIT:?} (last: {last})\n{}",
            self.config.listen,
            self.stderr()
        );
    }

    /// The config file mailman runs with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Where mailman listens.
    pub fn addr(&self) -> SocketAddr {
        self.config.listen
    }

    /// The spool directory.
    pub fn spool(&self) -> &Path {
        &self.config.spool
    }

    /// mailman's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("mailman is not running").id()
    }

    /// Everything mailman wrote to stderr and stdout, across restarts.
    pub fn stderr(&self) -> String {
        let mut out = String::new();
        for log in &self.logs {
            out.push_str(&format!("--- {}\n", log.display()));
            out.push_str(&String::from_utf8_lossy(
                &std::fs::read(log).unwrap_or_default(),
            ));
        }
        out
    }

    /// Panics if mailman has exited.
    pub fn assert_alive(&mut self) {
        let child = self.child.as_mut().expect("mailman is not running");
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "mailman exited unexpectedly with {status}\n{}",
                self.stderr()
            );
        }
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (mailman keeps running until it exits by itself).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits up to `limit` for mailman to exit; None if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("mailman is not running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts mailman again with the same config (and spool); it must be stopped.
    pub fn restart(&mut self) {
        self.spawn("220 ");
    }
}

impl Drop for Mailman {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- mailman config\n{}", self.config.to_ron());
            eprintln!("--- mailman output\n{}", self.stderr());
        }
    }
}

/// Connects, reads the first reply line, says QUIT and waits for mailman to close.
fn probe(addr: SocketAddr) -> std::io::Result<String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.starts_with("220 ") {
        let _ = (&stream).write_all(b"QUIT\r\n");
        // Drain to EOF so the session is gone before the test counts connections.
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut reader, &mut rest);
    }
    Ok(line.trim_end().to_string())
}
