//! What `/proc` says about a process: CPU time (user + system) and resident
//! memory. The parsers take the file's text, so they are tested without a
//! process; the readers return `None` when the process is gone.

use std::process::Command;
use std::sync::OnceLock;

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

/// Clock ticks per second (`getconf CLK_TCK`, asked once; 100 when it
/// cannot be asked, the value on every common Linux).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
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

/// VmRSS of `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// The `VmRSS:` line of a `/proc/<pid>/status` text, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
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
        let status = "Name:\tbreakerd\nVmPeak:\t  100 kB\nVmRSS:\t   2048 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        assert!(rss_bytes(std::process::id()).is_some_and(|b| b > 0));
        assert!(cpu_seconds(std::process::id()).is_some());
    }
}
