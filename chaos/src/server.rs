//! The coordinator under test: the real `breakerd` binary as a child
//! process on 127.0.0.1, and what the suite does to it (`kill -9`,
//! `SIGSTOP`/`SIGCONT`, restart on the same port and store), plus what
//! `/proc` says about its memory.
//!
//! A [`Server`] kills its process (SIGKILL, then reaps it) when dropped, so a
//! failed or panicking run never leaves a coordinator behind. Launching,
//! signals and `/proc` readings are `breakerd-testkit`'s, shared with the
//! benchmarks; what is the suite's own is the command line and what it reads
//! from the log.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use breakerd_testkit::process::{ChildGuard, Under, drain_lines};
use breakerd_testkit::{log, procfs};
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The longest a start may take before the suite gives up on it.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start the coordinator; every start of one run uses the same.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The `breakerd` binary.
    pub bin: PathBuf,
    /// Listen address, fixed for the whole run so restarts keep it.
    pub addr: SocketAddr,
    /// Store directory (`None`: `--store none`).
    pub store: Option<PathBuf>,
    /// `--max-circuits`.
    pub max_circuits: u64,
    /// TOML config file passed with `--config`.
    pub config: Option<PathBuf>,
    /// Where each start's stdout and stderr go (`<dir>/breakerd-<n>.log`).
    pub log_dir: PathBuf,
    /// Run it under `nice -n` this (0: not niced).
    pub nice: i32,
}

/// What a start's log said.
#[derive(Debug, Default, Clone)]
pub struct LogFacts {
    /// `listen_addr` of the "breakerd listening" line.
    pub listen_addr: Option<SocketAddr>,
    /// `store_load_ms` of the "state loaded" line.
    pub store_load_ms: Option<u64>,
    /// `circuits` of the "state loaded" line.
    pub loaded_circuits: Option<u64>,
}

/// A running coordinator process.
pub struct Server {
    child: ChildGuard,
    /// When the process was spawned.
    pub spawned: Instant,
    /// When it first answered a health check with SERVING.
    pub serving_at: Instant,
    /// What its log said so far.
    pub facts: Arc<Mutex<LogFacts>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("pid", &self.pid()).finish()
    }
}

impl Launch {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Start the process and wait (at most 30 s) until it reports
    /// `listen_addr` and its health check answers SERVING. `n` numbers the
    /// log file.
    pub async fn start(&self, n: usize) -> Result<Server, String> {
        let log = self.log_dir.join(format!("breakerd-{n}.log"));
        let mut last_err = String::new();
        // A port released by a killed process is normally free at once
        // (the listener sets SO_REUSEADDR); retry a few times in case not.
        for attempt in 0..5 {
            match self.try_start(&log).await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    last_err = e;
                    tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                }
            }
        }
        Err(last_err)
    }

    async fn try_start(&self, log: &Path) -> Result<Server, String> {
        // `nice` execs the binary: the process id stays the coordinator's.
        let mut cmd = Under::nice(self.nice).command(&self.bin);
        cmd.arg("--listen")
            .arg(self.addr.to_string())
            .args(["--http-listen", "off", "--log-format", "json"])
            // The start-up lines only: per-request warnings under a flood
            // would cost the coordinator CPU the suite means to measure.
            .args(["--log-level", "warn,breakerd::app=info"])
            .arg("--max-circuits")
            .arg(self.max_circuits.to_string())
            .arg("--store");
        match &self.store {
            Some(dir) => cmd.arg(dir),
            None => cmd.arg("none"),
        };
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        let log_file =
            std::fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let stderr = log_file
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let spawned = Instant::now();
        let mut child = ChildGuard::spawn(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(stderr)),
        )
        .map_err(|e| format!("start {}: {e}", self.bin.display()))?;
        let stdout = child.take_stdout().ok_or("no stdout")?;
        let facts = Arc::new(Mutex::new(LogFacts::default()));
        let rx = {
            let facts = Arc::clone(&facts);
            let mut log_file = log_file;
            drain_lines(stdout, move |line| {
                let _ = writeln!(log_file, "{line}");
                let mut f = facts.lock();
                absorb_log_line(&mut f, line);
                f.listen_addr.map(|_| ())
            })
        };
        let mut server = Server {
            child,
            spawned,
            serving_at: spawned,
            facts,
        };
        let deadline = spawned + START_TIMEOUT;
        // Health first: it answers before the log line is read back.
        let channel = Endpoint::from_shared(self.url())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_millis(200))
            .connect_lazy();
        loop {
            if let Some(status) = server.exit_status() {
                return Err(format!(
                    "breakerd exited during start-up ({status}); see {}",
                    log.display()
                ));
            }
            if serving(&channel).await {
                server.serving_at = Instant::now();
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "breakerd did not become SERVING within {START_TIMEOUT:?}; see {}",
                    log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let got = tokio::task::spawn_blocking(move || rx.recv_timeout(left).is_ok())
            .await
            .unwrap_or(false);
        let addr = server.facts.lock().listen_addr;
        if !got || addr != Some(self.addr) {
            return Err(format!(
                "breakerd did not log listen_addr {} (saw {addr:?}); see {}",
                self.addr,
                log.display()
            ));
        }
        Ok(server)
    }
}

/// One health check with a short deadline: true when SERVING.
pub async fn serving(channel: &Channel) -> bool {
    let mut health = HealthClient::new(channel.clone());
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    req.set_timeout(Duration::from_millis(200));
    matches!(
        tokio::time::timeout(Duration::from_millis(250), health.check(req)).await,
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32
    )
}

/// Folds one JSON log line into what the suite wants from the log.
pub fn absorb_log_line(facts: &mut LogFacts, line: &str) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return;
    };
    if let Some(a) = log::listen_addr_in(&v) {
        facts.listen_addr = Some(a);
    }
    if let Some(ms) = log::field(&v, "store_load_ms").and_then(|m| m.as_u64()) {
        facts.store_load_ms = Some(ms);
        facts.loaded_circuits = log::field(&v, "circuits").and_then(|c| c.as_u64());
    }
}

impl Server {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Resident set size now, in bytes (0 when unreadable).
    pub fn rss_bytes(&self) -> u64 {
        procfs::rss_bytes(self.pid()).unwrap_or(0)
    }

    /// `Some` once the process has exited.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.exit_status()
    }

    /// SIGKILL, and reap it. Dropping the server does the same (SIGKILL
    /// ends a stopped process too).
    pub fn kill9(&mut self) {
        self.child.kill_and_reap();
    }

    /// SIGSTOP: the process freezes with its sockets open.
    pub fn stop(&mut self) -> Result<(), String> {
        self.child.signal("-STOP")
    }

    /// SIGCONT.
    pub fn resume(&mut self) -> Result<(), String> {
        self.child.signal("-CONT")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_give_address_and_load_time() {
        let mut f = LogFacts::default();
        absorb_log_line(
            &mut f,
            r#"{"level":"INFO","message":"state loaded","circuits":100000,"store_load_ms":812}"#,
        );
        absorb_log_line(
            &mut f,
            r#"{"fields":{"message":"breakerd listening","listen_addr":"127.0.0.1:4000","http_addr":"off"}}"#,
        );
        absorb_log_line(&mut f, "not json");
        assert_eq!(f.store_load_ms, Some(812));
        assert_eq!(f.loaded_circuits, Some(100_000));
        assert_eq!(f.listen_addr, Some("127.0.0.1:4000".parse().unwrap()));
    }
}
