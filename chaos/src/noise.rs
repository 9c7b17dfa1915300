//! Scheduling noise of the box the suite runs on, measured from the
//! kernel's own accounting rather than guessed from a timer.
//!
//! Two processes share this box's cores with whatever else runs on it: the
//! suite (whose load runtime, `chaos-load`, hosts the simulated nodes) and
//! the coordinator. Every thread's `/proc/<pid>/task/<tid>/schedstat` says
//! how long it has been *runnable but not running* (`run_delay`): waiting on
//! a run queue for a core. That time is the box's, not the code's: a thread
//! that blocks on a lock, sleeps too long or awaits a missing deadline is
//! not runnable and adds nothing to it; one that burns CPU is running and
//! adds nothing either. So a decision that waited `x` ms past its bound
//! while a load thread spent `≥ x` ms on a run queue is explained by the
//! box; without such a stall it is the client's fault.
//!
//! One OS thread (`chaos-noise`), outside every runtime, samples the
//! counters of every `chaos-load` thread and every coordinator thread each
//! millisecond, and records how late its own 1 ms sleeps woke (the timer
//! lag the suite reported before).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::stats::LagEvent;

/// Prefix of the names of the threads whose run-queue time explains a late
/// decision: the fleet's runtime (see `main.rs`).
pub const LOAD_THREADS: &str = "chaos-load";

/// Observations kept per thread, at most (about an hour at 1 kHz).
const MAX_SAMPLES: usize = 4_000_000;

/// One thread's cumulative run-queue time as observed over the run.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Observations: (µs since [`Noise::epoch`], cumulative `run_delay` µs
    /// and CPU time µs since the first observation), in time order.
    samples: Vec<Obs>,
    base: Stat,
}

/// One observation: (µs since the epoch, run-queue µs, CPU µs).
type Obs = (u32, u32, u32);

/// One reading of a thread's `schedstat`, nanoseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Stat {
    cpu: u64,
    run_delay: u64,
}

impl Series {
    fn push(&mut self, at_us: u32, stat: Stat) {
        if self.samples.is_empty() {
            self.base = stat;
        }
        if self.samples.len() < MAX_SAMPLES {
            let us = |now: u64, base: u64| {
                u32::try_from(now.saturating_sub(base) / 1000).unwrap_or(u32::MAX)
            };
            self.samples.push((
                at_us,
                us(stat.run_delay, self.base.run_delay),
                us(stat.cpu, self.base.cpu),
            ));
        }
    }

    /// CPU time in `[from, to]`, rounded out like [`delay_in`](Self::delay_in).
    fn cpu_in(&self, from: u32, to: u32) -> Option<u32> {
        let (start, end) = self.around(from, to)?;
        Some(end.2.saturating_sub(start.2))
    }

    /// The last observation at or before `from` and the first at or after
    /// `to`.
    fn around(&self, from: u32, to: u32) -> Option<(Obs, Obs)> {
        let i = self.samples.partition_point(|s| s.0 <= from);
        let j = self.samples.partition_point(|s| s.0 < to);
        Some((*self.samples.get(i.checked_sub(1)?)?, *self.samples.get(j)?))
    }

    /// Run-queue time that overlapped `[from, to]` (µs since the epoch).
    ///
    /// The kernel adds a wait to `run_delay` only when it ends (the thread
    /// gets a core), so a wait that began inside the window may show up in
    /// a later observation. Each increase `d` seen at observation time `t`
    /// is therefore placed at `[t - d, t]`, the latest it can have been, and
    /// the part of the union of those intervals inside the window is
    /// counted (one thread waits on one run queue at a time); increases
    /// seen up to [`LOOKAHEAD`] after the window can still overlap it.
    fn delay_in(&self, from: u32, to: u32) -> u32 {
        let first = self.samples.partition_point(|s| s.0 <= from);
        let mut prev = match first.checked_sub(1) {
            Some(i) => self.samples[i].1,
            None => 0,
        };
        let (mut total, mut covered) = (0u32, from);
        for &(t, cum, _) in &self.samples[first..] {
            if t > to.saturating_add(LOOKAHEAD) {
                break;
            }
            let d = cum.saturating_sub(prev);
            prev = cum;
            if d == 0 {
                continue;
            }
            let (start, end) = (t.saturating_sub(d).max(covered), t.min(to));
            total += end.saturating_sub(start);
            covered = covered.max(end);
        }
        total
    }
}

/// How long after a window a wait that overlapped it may still be reported
/// (µs): the longest single wait for a core this accounts for.
const LOOKAHEAD: u32 = 1_000_000;

/// How long after a window a whole-machine stall may still show as a late
/// wake-up of the sampler (it sleeps 1 ms at a time and may itself wait for
/// a core before it notices).
pub const REACH: Duration = Duration::from_millis(5);

/// What the sampler measured.
#[derive(Debug, Clone)]
pub struct Noise {
    /// Time zero of every series.
    pub epoch: Instant,
    /// One series per thread of the load runtime.
    pub load: Vec<Series>,
    /// One series per coordinator thread (every process of the run).
    pub coordinator: Vec<Series>,
    /// Late wake-ups of the sampler's own 1 ms sleep, more than 0.5 ms.
    pub timer_lag: Vec<LagEvent>,
    /// The part of each late wake-up that the sampler did not spend on a
    /// run queue of this guest: the whole machine stopped (a hypervisor
    /// that took the virtual CPU away, a host-wide stall). Neither
    /// `run_delay` nor CPU time grows for anyone then.
    pub vm_stall: Vec<LagEvent>,
    /// Whether the kernel offers `schedstat` at all (else every figure is
    /// zero and nothing is explained).
    pub available: bool,
}

impl Default for Noise {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            load: Vec::new(),
            coordinator: Vec::new(),
            timer_lag: Vec::new(),
            vm_stall: Vec::new(),
            available: false,
        }
    }
}

/// Which threads a query is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// The fleet's runtime.
    Load,
    /// The coordinator.
    Coordinator,
}

impl Noise {
    fn us(&self, t: Instant) -> u32 {
        u32::try_from(t.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u32::MAX)
    }

    /// The longest any one thread of `group` spent waiting for a core
    /// between `from` and `to` (see [`Series::delay_in`]).
    pub fn stall(&self, group: Group, from: Instant, to: Instant) -> Duration {
        let (a, b) = (self.us(from), self.us(to));
        let series = match group {
            Group::Load => &self.load,
            Group::Coordinator => &self.coordinator,
        };
        let worst = series.iter().map(|s| s.delay_in(a, b)).max().unwrap_or(0);
        Duration::from_micros(u64::from(worst))
    }

    /// Like [`stall`](Self::stall), summed over the threads of `group`.
    pub fn stall_sum(&self, group: Group, from: Instant, to: Instant) -> Duration {
        let (a, b) = (self.us(from), self.us(to));
        let us: u64 = self
            .series(group)
            .iter()
            .map(|s| u64::from(s.delay_in(a, b)))
            .sum();
        Duration::from_micros(us)
    }

    /// CPU time `group` used between `from` and `to`, summed over its
    /// threads (rounded out like [`stall`](Self::stall)).
    pub fn cpu(&self, group: Group, from: Instant, to: Instant) -> Duration {
        let (a, b) = (self.us(from), self.us(to));
        let us: u64 = self
            .series(group)
            .iter()
            .filter_map(|s| s.cpu_in(a, b))
            .map(u64::from)
            .sum();
        Duration::from_micros(us)
    }

    /// A thread of `group` that waited for a core from `from` to `to` (for
    /// tests of the criteria).
    #[cfg(test)]
    pub fn add_wait(&mut self, group: Group, from: Instant, to: Instant) {
        let mut s = Series::default();
        s.push(self.us(from), Stat::default());
        let waited = u64::try_from((to - from).as_nanos()).unwrap_or(u64::MAX);
        s.push(
            self.us(to),
            Stat {
                cpu: 0,
                run_delay: waited,
            },
        );
        match group {
            Group::Load => self.load.push(s),
            Group::Coordinator => self.coordinator.push(s),
        }
    }

    fn series(&self, group: Group) -> &[Series] {
        match group {
            Group::Load => &self.load,
            Group::Coordinator => &self.coordinator,
        }
    }

    /// How much of `[from, to]` the box took from `groups`: the longest any
    /// one of their threads waited for a core, plus the time the whole
    /// machine stood still; or the sampler's own lateness, if larger. A
    /// stall may reach the sampler up to [`REACH`] after the window, so its
    /// wake-ups are taken from that much longer.
    ///
    /// This is what a blocked, sleeping or CPU-burning client cannot
    /// produce for itself: it is time nobody in `groups` could run.
    pub fn taken(&self, groups: &[Group], from: Instant, to: Instant) -> Duration {
        let queued = groups
            .iter()
            .map(|g| self.stall(*g, from, to))
            .max()
            .unwrap_or_default();
        let until = to + REACH;
        let within = |ev: &'_ [LagEvent]| {
            ev.iter()
                .filter(move |(t, _)| *t >= from && *t <= until)
                .map(|(_, d)| *d)
                .collect::<Vec<_>>()
        };
        let vm: Duration = within(&self.vm_stall).into_iter().sum();
        let lag = within(&self.timer_lag)
            .into_iter()
            .max()
            .unwrap_or_default();
        (queued + vm).max(lag)
    }

    /// Whether a decision that started at `start` and waited `wait`, more
    /// than `limit`, waited no longer than the box took from the fleet
    /// meanwhile (see [`taken`](Self::taken)).
    pub fn explains_overrun(&self, start: Instant, wait: Duration, limit: Duration) -> bool {
        wait.saturating_sub(limit) <= self.taken(&[Group::Load], start, start + wait)
    }

    /// Whether a request sent at `start` with `deadline` that went
    /// unanswered had at least half its deadline taken from the fleet or
    /// the coordinator by the box: it had at most half left to be answered
    /// in, where a healthy coordinator needs a small fraction of it.
    pub fn explains_failure(&self, start: Instant, deadline: Duration) -> bool {
        self.taken(&[Group::Load, Group::Coordinator], start, start + deadline) >= deadline / 2
    }

    /// Total run-queue time of `group` over the whole run, summed over its
    /// threads.
    pub fn total(&self, group: Group) -> Duration {
        let series = match group {
            Group::Load => &self.load,
            Group::Coordinator => &self.coordinator,
        };
        let us: u64 = series
            .iter()
            .filter_map(|s| s.samples.last().map(|l| u64::from(l.1)))
            .sum();
        Duration::from_micros(us)
    }
}

/// An open `schedstat` file of one thread.
struct Tracked {
    tid: u32,
    pid: u32,
    file: File,
    series: usize,
}

fn read_stat(file: &File) -> Option<Stat> {
    let mut buf = [0u8; 96];
    let n = file.read_at(&mut buf, 0).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let mut fields = text.split_ascii_whitespace();
    Some(Stat {
        cpu: fields.next()?.parse().ok()?,
        run_delay: fields.next()?.parse().ok()?,
    })
}

/// Threads of `pid` whose name starts with `prefix` (every thread when
/// `None`), as (tid, open schedstat).
fn threads(pid: u32, prefix: Option<&str>) -> Vec<(u32, File)> {
    let dir = format!("/proc/{pid}/task");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let tid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            if let Some(p) = prefix {
                let comm = std::fs::read_to_string(format!("{dir}/{tid}/comm")).ok()?;
                if !comm.starts_with(p) {
                    return None;
                }
            }
            let file = File::open(format!("{dir}/{tid}/schedstat")).ok()?;
            Some((tid, file))
        })
        .collect()
}

/// The sampler's state while it runs.
pub struct Sampler {
    noise: Noise,
    load: Vec<Tracked>,
    coordinator: Vec<Tracked>,
    coordinator_pid: Arc<AtomicU32>,
    seen_pid: u32,
}

impl Sampler {
    /// A sampler of this process's load threads and of the coordinator
    /// whose pid `coordinator_pid` holds (restarts change it).
    pub fn new(coordinator_pid: Arc<AtomicU32>) -> Self {
        let available = File::open("/proc/thread-self/schedstat")
            .ok()
            .and_then(|f| read_stat(&f))
            .is_some();
        Self {
            noise: Noise {
                available,
                ..Noise::default()
            },
            load: Vec::new(),
            coordinator: Vec::new(),
            coordinator_pid,
            seen_pid: 0,
        }
    }

    /// Pick up threads started (or a coordinator restarted) since the last
    /// call.
    fn rescan(&mut self) {
        let me = std::process::id();
        for (tid, file) in threads(me, Some(LOAD_THREADS)) {
            if !self.load.iter().any(|t| t.tid == tid) {
                self.noise.load.push(Series::default());
                self.load.push(Tracked {
                    tid,
                    pid: me,
                    file,
                    series: self.noise.load.len() - 1,
                });
            }
        }
        let pid = self.coordinator_pid.load(Ordering::Relaxed);
        if pid == 0 {
            return;
        }
        if pid != self.seen_pid {
            self.coordinator.clear();
            self.seen_pid = pid;
        }
        for (tid, file) in threads(pid, None) {
            if !self
                .coordinator
                .iter()
                .any(|t| t.tid == tid && t.pid == pid)
            {
                self.noise.coordinator.push(Series::default());
                self.coordinator.push(Tracked {
                    tid,
                    pid,
                    file,
                    series: self.noise.coordinator.len() - 1,
                });
            }
        }
    }

    fn sample(&mut self) {
        let at = self.noise.us(Instant::now());
        for t in &self.load {
            if let Some(st) = read_stat(&t.file) {
                self.noise.load[t.series].push(at, st);
            }
        }
        // A thread that ended (or a killed coordinator) stops answering;
        // its series simply ends.
        for t in &self.coordinator {
            if let Some(st) = read_stat(&t.file) {
                self.noise.coordinator[t.series].push(at, st);
            }
        }
    }

    /// Sample every millisecond while `running()`; returns what was seen,
    /// and the worst timer lag per phase (`phase()` at each wake-up).
    pub fn run(
        mut self,
        running: impl Fn() -> bool,
        phase: impl Fn() -> usize,
    ) -> (Noise, Vec<Duration>) {
        let mut worst: Vec<Duration> = Vec::new();
        let tick = Duration::from_millis(1);
        // A sleep may overshoot by the timer slack (50 us) and wake-up cost:
        // that much is not lag.
        let grace = Duration::from_micros(500);
        let mut n = 0u64;
        // Opened by this thread: `thread-self` is the sampler itself.
        let own = File::open("/proc/thread-self/schedstat").ok();
        let own_delay = || own.as_ref().and_then(read_stat).map_or(0, |s| s.run_delay);
        let mut before = own_delay();
        while running() {
            if n.is_multiple_of(50) && self.noise.available {
                self.rescan();
            }
            n += 1;
            let t = Instant::now();
            std::thread::sleep(tick);
            let late = t.elapsed().saturating_sub(tick + grace);
            // The wait for a core after the wake-up is accounted by now.
            let after = own_delay();
            let queued = Duration::from_nanos(after.saturating_sub(before));
            before = after;
            if !late.is_zero() && self.noise.timer_lag.len() < 200_000 {
                let now = Instant::now();
                self.noise.timer_lag.push((now, late));
                let vm = late.saturating_sub(queued);
                if !vm.is_zero() {
                    self.noise.vm_stall.push((now, vm));
                }
            }
            let p = phase();
            if worst.len() <= p {
                worst.resize(p + 1, Duration::ZERO);
            }
            worst[p] = worst[p].max(late);
            if self.noise.available {
                self.sample();
            }
        }
        (self.noise, worst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_the_run_queue_time_between_its_observations() {
        let mut s = Series::default();
        for (t, d) in [(0, 5_000), (1_000, 5_000), (2_000, 9_000), (3_000, 9_500)] {
            s.push(
                t,
                Stat {
                    cpu: 2 * u64::from(t) * 1000,
                    run_delay: d * 1000,
                },
            );
        }
        assert_eq!(s.cpu_in(1_000, 2_000), Some(2_000));
        // The 4 ms seen at 2 ms waited in [-2, 2] ms; the 0.5 ms seen at
        // 3 ms in [2.5, 3] ms.
        assert_eq!(s.delay_in(1_000, 2_000), 1_000);
        assert_eq!(s.delay_in(1_500, 2_600), 600);
        assert_eq!(s.delay_in(0, 3_000), 2_500);
        assert_eq!(s.delay_in(2_000, 2_500), 0);
        assert_eq!(s.delay_in(3_000, 3_500), 0, "nothing observed after");
        let noise = Noise {
            load: vec![s, Series::default()],
            ..Noise::default()
        };
        let e = noise.epoch;
        let us = Duration::from_micros;
        assert_eq!(
            noise.stall(Group::Load, e + us(1_000), e + us(2_000)),
            us(1_000)
        );
        assert_eq!(noise.stall(Group::Coordinator, e, e + us(2_000)), us(0));
        assert_eq!(noise.total(Group::Load), us(4_500));
    }

    #[test]
    fn overruns_are_explained_only_by_a_lag_as_large_at_the_same_time() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let (wait, limit) = (ms(40), ms(35));
        let lag = |events: &[LagEvent]| Noise {
            timer_lag: events.to_vec(),
            ..Noise::default()
        };
        assert!(lag(&[(t + ms(20), ms(6))]).explains_overrun(t, wait, limit));
        assert!(lag(&[(t + ms(44), ms(5))]).explains_overrun(t, wait, limit));
        // Too small, too early, too late.
        assert!(!lag(&[(t + ms(20), ms(4))]).explains_overrun(t, wait, limit));
        assert!(!lag(&[(t, ms(50))]).explains_overrun(t + ms(1), wait, limit));
        assert!(!lag(&[(t + ms(46), ms(50))]).explains_overrun(t, wait, limit));
        assert!(!lag(&[]).explains_overrun(t, wait, limit));
    }

    #[test]
    fn run_queue_time_and_machine_stalls_add_up() {
        let e = Instant::now();
        let ms = Duration::from_millis;
        let at = |x: u64| u32::try_from(x * 1000).unwrap_or(u32::MAX);
        let mut load = Series::default();
        // 6 ms on a run queue, reported at 26 ms (waited from 20 to 26).
        for (t, d) in [(0, 0), (10, 0), (26, 6)] {
            load.push(
                at(t),
                Stat {
                    cpu: 0,
                    run_delay: d * 1_000_000,
                },
            );
        }
        let mut noise = Noise {
            epoch: e,
            load: vec![load],
            ..Noise::default()
        };
        assert_eq!(noise.taken(&[Group::Load], e + ms(5), e + ms(40)), ms(6));
        // A decision from 5 to 45 ms, over a 35 ms bound by 5 ms: 6 ms of
        // run-queue time covers it; over by 7 ms it does not...
        assert!(noise.explains_overrun(e + ms(5), ms(40), ms(35)));
        assert!(!noise.explains_overrun(e + ms(5), ms(42), ms(35)));
        // ...unless the whole machine also stood still for 2 ms.
        noise.vm_stall.push((e + ms(30), ms(2)));
        noise.timer_lag.push((e + ms(30), ms(2)));
        assert!(noise.explains_overrun(e + ms(5), ms(42), ms(35)));
        // A request with a 30 ms deadline needs 15 ms of it taken.
        assert!(!noise.explains_failure(e + ms(5), ms(30)));
        noise.coordinator.push(noise.load[0].clone());
        noise.coordinator[0].push(
            at(40),
            Stat {
                cpu: 0,
                run_delay: 20_000_000,
            },
        );
        assert!(noise.explains_failure(e + ms(5), ms(30)));
        assert!(!noise.explains_failure(e + ms(100), ms(30)));
    }

    #[test]
    fn this_thread_can_be_sampled_when_the_kernel_has_schedstat() {
        let pid = Arc::new(AtomicU32::new(std::process::id()));
        let s = Sampler::new(pid);
        if s.noise.available {
            assert!(!threads(std::process::id(), None).is_empty());
        }
    }
}
