//! Scheduling stalls of the load generator (issue 11): a helper process
//! stops this process (SIGSTOP) for 20-50 ms at random moments and resumes
//! it (SIGCONT), the kind of pause CPU throttling under a container limit
//! or a noisy neighbour gives a web node. Only this process is stopped,
//! never the servers it started: every simulated node's client stalls
//! together, the coordinator and redis-server do not.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::keys::Rng;

/// Shortest and longest stall, ms.
const STALL_MS: (usize, usize) = (20, 50);
/// Shortest and longest time between stalls, ms.
const GAP_MS: (usize, usize) = (30, 150);

/// A running stall injector; [`finish`](Self::finish) stops it.
pub struct Stalls {
    child: Child,
    /// Stalls scheduled, and their total length.
    pub planned: usize,
    pub planned_ms: usize,
}

impl Stalls {
    /// Stall this process at random for about `span` from now.
    pub fn start(span: Duration, seed: u64) -> Result<Self, String> {
        let me = std::process::id();
        let mut rng = Rng::new(seed);
        // Whatever ends the helper, this process is resumed.
        let mut script =
            format!("trap 'kill -CONT {me} 2>/dev/null' EXIT\ntrap 'exit 0' TERM INT\n");
        let (mut at, mut planned, mut planned_ms) = (0usize, 0usize, 0usize);
        let span_ms = usize::try_from(span.as_millis()).unwrap_or(usize::MAX);
        while at < span_ms {
            let gap = GAP_MS.0 + rng.below(GAP_MS.1 - GAP_MS.0 + 1);
            let stall = STALL_MS.0 + rng.below(STALL_MS.1 - STALL_MS.0 + 1);
            script.push_str(&format!(
                "sleep 0.{gap:03}\nkill -STOP {me}\nsleep 0.{stall:03}\nkill -CONT {me}\n"
            ));
            at += gap + stall;
            planned += 1;
            planned_ms += stall;
        }
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("stall helper: {e}"))?;
        Ok(Self {
            child,
            planned,
            planned_ms,
        })
    }

    /// Stop the helper (this process is running, so it is not mid-stall
    /// now; SIGTERM runs its trap, which resumes this process anyway).
    pub fn finish(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }
}
