//! A docker engine of the test's own (Debian's docker.io), started inside a
//! network namespace the test creates, with its data and state in the
//! test's temp dir and iptables, forwarding and masquerading off, so nothing
//! it does reaches the host's network. Its processes and mounts are cleaned
//! up on drop, whatever happened.
//!
//! The namespace is entered with `nsenter --net` only: `ip netns exec` would
//! remount /sys without the cgroup hierarchy dockerd needs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::wait_until;

/// Debian's docker client (the engine's own version), not another on PATH.
pub const DOCKER: &str = "/usr/bin/docker";

/// The engine.
#[derive(Debug)]
pub struct Engine {
    /// The network namespace's name.
    pub netns: String,
    /// Where its data, state and socket are.
    pub root: PathBuf,
    dockerd: Option<Child>,
}

impl Engine {
    /// Creates the namespace and starts dockerd in it; waits until it answers.
    pub fn start(dir: &Path) -> Engine {
        let netns = format!("hedwig-{}-{}", std::process::id(), fastrand::u16(..));
        let root = dir.join("docker");
        std::fs::create_dir_all(&root).unwrap();
        run(Command::new("ip").args(["netns", "add", &netns]));
        let mut engine = Engine {
            netns,
            root,
            dockerd: None,
        };
        run(engine.nsenter("ip").args(["link", "set", "lo", "up"]));
        let log = std::fs::File::create(engine.root.join("dockerd.log")).unwrap();
        let child = engine
            .nsenter("dockerd")
            .arg(format!(
                "--data-root={}",
                engine.root.join("data").display()
            ))
            .arg(format!(
                "--exec-root={}",
                engine.root.join("exec").display()
            ))
            .arg(format!(
                "--pidfile={}",
                engine.root.join("dockerd.pid").display()
            ))
            .arg(format!("--host=unix://{}", engine.socket().display()))
            .args([
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--ip6tables=false",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd (scripts/test installs docker.io)");
        engine.dockerd = Some(child);
        let up = wait_until(Duration::from_secs(60), || {
            engine.docker(&["version"]).status.success()
        });
        assert!(up, "dockerd did not answer within 60 s:\n{}", engine.log());
        engine
    }

    /// The engine's API socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("docker.sock")
    }

    /// `program` inside the namespace.
    pub fn nsenter(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg(program);
        cmd
    }

    /// A docker client command for this engine.
    pub fn client(&self) -> Command {
        let mut cmd = Command::new(DOCKER);
        cmd.arg("--host")
            .arg(format!("unix://{}", self.socket().display()));
        cmd
    }

    /// Runs `docker ARGS` against this engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.client().args(args).output().expect("run docker")
    }

    /// dockerd's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("dockerd.log")).unwrap_or_default()
    }

    /// Processes started under this engine (containerd, shims, proxies,
    /// containers' processes are theirs), found by the root path in their
    /// command line.
    fn leftovers(&self) -> Vec<u32> {
        let needle = self.root.display().to_string();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "--- dockerd log (last lines, newest first)\n{}",
                tail.join("\n")
            );
        }
        // dockerd stops its containers and containerd on SIGTERM.
        if let Some(mut child) = self.dockerd.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(40);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in self.leftovers() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        // Overlay and namespace mounts it left, deepest first.
        let root = self.root.display().to_string();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&root))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        // Empty directories dockerd and containerd make outside their roots
        // whatever they are told (rmdir: only if empty, so never another's).
        for dir in [
            "/run/docker/plugins",
            "/run/docker",
            "/run/containerd/s",
            "/run/containerd",
        ] {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Runs `cmd`; panics with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A root filesystem holding `binary` and the shared libraries `ldd` names
/// for it, as a tar stream for `docker import`: an image from the host's
/// own Debian packages, with no registry.
pub fn rootfs_tar(dir: &Path, binary: &str) -> PathBuf {
    let root = dir.join(format!(
        "rootfs-{}",
        Path::new(binary).file_name().unwrap().to_string_lossy()
    ));
    let ldd = run(Command::new("ldd").arg(binary));
    let mut files = vec![binary.to_string()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            files.push(p.to_string());
        }
    }
    for file in &files {
        let to = root.join(file.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        run(Command::new("cp").arg("-L").arg(file).arg(&to));
    }
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/false\n").unwrap();
    // msmtp keeps the message in a temporary file while it sends.
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let tar = dir.join(format!(
        "{}.tar",
        root.file_name().unwrap().to_string_lossy()
    ));
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    tar
}
