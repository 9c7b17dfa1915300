//! The coordinators under test as separate processes (`breakerd`,
//! `redis-server`), pinned to their own core, and what `/proc` says about
//! them: CPU time and resident memory.
//!
//! Every process listens on 127.0.0.1 only and is killed (SIGKILL) when its
//! handle is dropped, so a failed run never leaves one behind. Launching,
//! free ports and `/proc` readings are `breakerd-testkit`'s, shared with the
//! chaos suite; what is bench's own is the command lines and the readiness
//! checks.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use breakerd_testkit::process::{ChildGuard, Under, drain_lines};
use breakerd_testkit::{log, net, procfs};

/// A running server process.
#[derive(Debug)]
pub struct Proc {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id (taskset execs the server, so the id is the server's).
    pub pid: u32,
    child: ChildGuard,
    /// Files and folders to remove when it is gone (config, store).
    scratch: Vec<PathBuf>,
}

impl Proc {
    /// `http://addr`, for gRPC clients.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `redis://addr/`, for Redis clients.
    pub fn redis_url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// CPU time (user + system) the process has used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        procfs::cpu_seconds(self.pid).unwrap_or(f64::NAN)
    }

    /// Resident set size, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        procfs::rss_bytes(self.pid).unwrap_or(0)
    }

    /// SIGKILL it now, without waiting for it to be reaped (W5 kills a
    /// coordinator in the middle of a run). Idempotent.
    pub fn kill(&mut self) {
        self.child.kill();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Dead before its store is removed, not after (fields drop last).
        self.child.kill_and_reap();
        for p in self.scratch.drain(..) {
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// Where and how to start servers.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The `breakerd` binary.
    pub breakerd: PathBuf,
    /// The `redis-server` binary.
    pub redis_server: PathBuf,
    /// Core to pin servers to (`taskset -c N`), if pinning is possible.
    pub server_cpu: Option<usize>,
}

impl Launcher {
    fn command(&self, program: &Path) -> Command {
        Under::taskset(self.server_cpu).command(program)
    }

    /// Start `breakerd` on `127.0.0.1:0` with `config` (TOML, without
    /// `[store]` and `[http]`) and wait for its `listen_addr` log line (at
    /// most 20 s). Its store, on as deployed, lives in a scratch folder
    /// removed with the process; the HTTP side port is off.
    pub fn breakerd(&self, name: &str, config: &str) -> Result<Proc, String> {
        let stem =
            std::env::temp_dir().join(format!("breakerd-bench-{}-{name}", std::process::id()));
        let path = stem.with_extension("toml");
        let store = stem.with_extension("store");
        let _ = std::fs::remove_dir_all(&store);
        let config = format!(
            "{config}\n[store]\npath = {:?}\n\n[http]\nlisten = \"off\"\n",
            store.display().to_string()
        );
        std::fs::write(&path, config).map_err(|e| format!("write {}: {e}", path.display()))?;
        let mut child = ChildGuard::spawn(
            self.command(&self.breakerd)
                .arg("--config")
                .arg(&path)
                .args([
                    "--listen",
                    "127.0.0.1:0",
                    "--log-format",
                    "json",
                    "--store",
                    "none",
                ])
                // Only the "listening" line; per-request logging would be
                // measured as coordinator cost.
                .args(["--log-level", "breakerd::app=info,warn"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        )
        .map_err(|e| format!("start {}: {e}", self.breakerd.display()))?;
        let stdout = child.take_stdout().ok_or("no stdout")?;
        let rx = drain_lines(stdout, log::listen_addr);
        let mut proc = Proc {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid: child.pid(),
            child,
            scratch: vec![path, store],
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => {
                proc.addr = addr;
                Ok(proc)
            }
            Err(_) => Err(format!(
                "breakerd {name} did not report its listen address within 20 s"
            )),
        }
    }

    /// Start a throw-away `redis-server` on a free loopback port with no
    /// persistence, and wait until it answers PING (at most 10 s).
    pub fn redis(&self, name: &str) -> Result<Proc, String> {
        let port = net::free_port()?;
        let child = ChildGuard::spawn(
            self.command(&self.redis_server)
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(["--protected-mode", "yes", "--loglevel", "warning"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        )
        .map_err(|e| format!("start {}: {e}", self.redis_server.display()))?;
        let proc = Proc {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            pid: child.pid(),
            child,
            scratch: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping_redis(proc.addr) {
                return Ok(proc);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "redis-server {name} did not answer PING within 10 s"
        ))
    }
}

fn ping_redis(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}
