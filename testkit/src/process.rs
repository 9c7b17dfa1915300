//! Child processes the harnesses start and control: the command (directly,
//! or under `taskset`/`nice`), a guard that SIGKILLs and reaps the child when
//! dropped, so a failed or panicking run never leaves one behind, a reader
//! that drains its stdout, and signals through `kill(1)`.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;

/// What a program runs under. Both wrappers exec the program, so the child's
/// process id is the program's own (what `/proc` readings and signals need).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Under {
    /// Run the program itself.
    #[default]
    Nothing,
    /// `taskset -c CPU`: pinned to one core.
    Taskset(usize),
    /// `nice -n N`.
    Nice(i32),
}

impl Under {
    /// Pinned to `cpu` when given.
    pub fn taskset(cpu: Option<usize>) -> Self {
        cpu.map_or(Under::Nothing, Under::Taskset)
    }

    /// Niced by `n`; 0 is not niced (no `nice` process in between).
    pub fn nice(n: i32) -> Self {
        if n == 0 {
            Under::Nothing
        } else {
            Under::Nice(n)
        }
    }

    /// The command that runs `program` under this.
    pub fn command(self, program: impl AsRef<OsStr>) -> Command {
        match self {
            Under::Nothing => Command::new(program),
            Under::Taskset(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(program);
                c
            }
            Under::Nice(n) => {
                let mut c = Command::new("nice");
                c.arg("-n").arg(n.to_string()).arg(program);
                c
            }
        }
    }
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

/// A running child process, SIGKILLed and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    pid: u32,
}

impl ChildGuard {
    /// Spawn `cmd`.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Self> {
        cmd.spawn().map(Self::from)
    }

    /// The process id (kept after the child is reaped).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The child's stdout, if it was piped and not taken yet.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.as_mut()?.stdout.take()
    }

    /// `Some` once the process has exited (`None` too once it is reaped by
    /// [`kill_and_reap`](Self::kill_and_reap)).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL now, without waiting for the process to be reaped (so a run
    /// can kill a server in its middle at a precise moment). Idempotent; the
    /// guard still reaps it when dropped.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
        }
    }

    /// SIGKILL, and reap it. SIGKILL ends a stopped process too.
    pub fn kill_and_reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Send `sig` (as `kill(1)` takes it: `-STOP`, `-CONT`, ...).
    pub fn signal(&self, sig: &str) -> Result<(), String> {
        signal(self.pid, sig)
    }
}

impl From<Child> for ChildGuard {
    fn from(child: Child) -> Self {
        ChildGuard {
            pid: child.id(),
            child: Some(child),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// Send `sig` to `pid`. std has no way to signal another process without
/// `unsafe`, so this asks `kill(1)`.
pub fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .map_err(|e| format!("kill {sig} {pid}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill {sig} {pid}: {status}"))
    }
}

/// Read `out` line by line on a thread of its own until it ends, showing
/// each line to `on_line`; the first `Some` it returns is sent on the
/// returned channel (later ones are dropped). The thread keeps draining
/// after that, so the child never blocks on a full pipe.
pub fn drain_lines<T, R, F>(out: R, mut on_line: F) -> mpsc::Receiver<T>
where
    T: Send + 'static,
    R: Read + Send + 'static,
    F: FnMut(&str) -> Option<T> + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Some(found) = on_line(&line)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(found);
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn gone(pid: u32) -> bool {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    /// The state letter of `/proc/<pid>/stat` (`S`, `T`, ...).
    fn state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 1..].trim_start().chars().next()
    }

    #[test]
    fn wrappers_come_first_and_are_left_out_when_not_asked_for() {
        let args = |c: &Command| {
            std::iter::once(c.get_program())
                .chain(c.get_args())
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(args(&Under::taskset(None).command("bin")), ["bin"]);
        assert_eq!(args(&Under::nice(0).command("bin")), ["bin"]);
        assert_eq!(
            args(&Under::taskset(Some(3)).command("bin")),
            ["taskset", "-c", "3", "bin"]
        );
        assert_eq!(
            args(&Under::nice(10).command("bin")),
            ["nice", "-n", "10", "bin"]
        );
    }

    #[test]
    fn the_first_matching_line_is_reported_and_the_rest_drained() {
        let mut child = ChildGuard::spawn(
            Command::new("sh")
                .args(["-c", "echo one; echo ready 7; echo ready 8; echo two"])
                .stdout(Stdio::piped()),
        )
        .unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let rx = {
            let seen = std::sync::Arc::clone(&seen);
            drain_lines(child.take_stdout().unwrap(), move |line| {
                seen.lock().unwrap().push(line.to_owned());
                line.strip_prefix("ready ")?.parse::<u32>().ok()
            })
        };
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(7));
        // The sender is dropped at the first match: nothing more arrives.
        assert!(rx.recv_timeout(Duration::from_secs(10)).is_err());
        // But the reader goes on to the end of the output.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.lock().unwrap().len() < 4 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*seen.lock().unwrap(), ["one", "ready 7", "ready 8", "two"]);
    }

    #[test]
    fn a_dropped_guard_kills_and_reaps_its_child() {
        let child = ChildGuard::spawn(Command::new("sleep").arg("30")).unwrap();
        let pid = child.pid();
        assert!(!gone(pid));
        drop(child);
        // Reaped, so not even a zombie is left.
        assert!(gone(pid));
    }

    #[test]
    fn kill_leaves_the_reaping_to_the_guard() {
        let mut child = ChildGuard::spawn(Command::new("sleep").arg("30")).unwrap();
        child.kill();
        child.kill();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while child.exit_status().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(child.exit_status().is_some_and(|s| !s.success()));
        child.kill_and_reap();
        assert_eq!(child.exit_status(), None);
    }

    #[test]
    fn stop_and_continue_freeze_and_thaw_the_child() {
        let child = ChildGuard::spawn(Command::new("sleep").arg("30")).unwrap();
        child.signal("-STOP").unwrap();
        let wait_for = |want: char| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while state(child.pid()) != Some(want) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            state(child.pid())
        };
        assert_eq!(wait_for('T'), Some('T'));
        child.signal("-CONT").unwrap();
        assert_eq!(wait_for('S'), Some('S'));
    }
}
