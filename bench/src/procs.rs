//! The coordinators under test as separate processes (`breakerd`,
//! `redis-server`), pinned to their own core, and what `/proc` says about
//! them: CPU time and resident memory.
//!
//! Every process listens on 127.0.0.1 only and is killed (SIGKILL) when its
//! handle is dropped, so a failed run never leaves one behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running server process.
#[derive(Debug)]
pub struct Proc {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id (taskset execs the server, so the id is the server's).
    pub pid: u32,
    child: Option<Child>,
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
        cpu_seconds(self.pid).unwrap_or(f64::NAN)
    }

    /// Resident set size, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.pid).unwrap_or(0)
    }

    /// SIGKILL it now, without waiting for it to be reaped (W5 kills a
    /// coordinator in the middle of a run). Idempotent.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
        match self.server_cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(program);
                c
            }
            None => Command::new(program),
        }
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
        let mut child = self
            .command(&self.breakerd)
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
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.breakerd.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = listen_addr(&line)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
                // Keep draining so the server never blocks on a full pipe.
            }
        });
        let mut proc = Proc {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid,
            child: Some(child),
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
        let port = free_port()?;
        let child = self
            .command(&self.redis_server)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "yes", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.redis_server.display()))?;
        let proc = Proc {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            pid: child.id(),
            child: Some(child),
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

/// The `listen_addr` field of breakerd's "listening" JSON log line.
pub fn listen_addr(line: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let field = v
        .get("listen_addr")
        .or_else(|| v.get("fields").and_then(|f| f.get("listen_addr")))?;
    field.as_str()?.parse().ok()
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
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

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of `pid` from `/proc/<pid>/stat`, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_ticks(&stat).map(|t| t as f64 / clock_ticks())
}

/// utime + stime in clock ticks from the text of `/proc/<pid>/stat`. The
/// command name may contain spaces and parentheses, so fields are counted
/// from the last `)`: utime and stime are fields 14 and 15 overall.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS of `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// VmRSS in bytes from the text of `/proc/<pid>/status`.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// True when `taskset` can be run.
pub fn have_taskset() -> bool {
    Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat =
            "1234 (tokio (rt) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(287));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tbreakerd\nVmPeak:\t  9000 kB\nVmRSS:\t    1536 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(1536 * 1024));
        assert!(rss_bytes(std::process::id()).is_some_and(|b| b > 0));
        assert!(cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn listen_addr_is_found_in_the_json_log_line() {
        let line = r#"{"timestamp":"x","level":"INFO","message":"breakerd listening","listen_addr":"127.0.0.1:40123"}"#;
        assert_eq!(listen_addr(line), Some("127.0.0.1:40123".parse().unwrap()));
        let nested = r#"{"fields":{"message":"breakerd listening","listen_addr":"127.0.0.1:9"}}"#;
        assert_eq!(listen_addr(nested), Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(listen_addr("not json"), None);
    }
}
