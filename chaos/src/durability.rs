//! Phase (i), what must survive `kill -9`: operator overrides and open
//! circuits, written right up to the kill, checked after the restart.
//!
//! What counts as acknowledged:
//! - An **override** is acknowledged when its `SetOverride` returned OK: the
//!   coordinator answers admin changes only once they are durable.
//! - An **open state** is acknowledged once the coordinator has made it
//!   durable and said so. Trips are answered (the `Report` that trips a
//!   circuit returns) before their record reaches the disk; the coordinator
//!   acknowledges durability through admin calls, each of which waits until
//!   everything queued before it is on disk (one FIFO writer). So an open
//!   state is acknowledged when its tripping `Report` returned before the
//!   start of an admin call that returned OK. Opens tripped after the last
//!   such call (the "tail", within one fsync of the kill) are checked and
//!   reported too, but their loss would not break a promise.
//!
//! Deadlines are compared as intervals: a remaining time the coordinator
//! reports was computed somewhere between sending the request and receiving
//! the answer, so the absolute deadline lies in `[sent + r, received + r]`.

use std::time::{Duration, Instant};

use breakerd_proto::v1 as pb;

/// Where an absolute deadline lies, on this process's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// Earliest it can be.
    pub earliest: Instant,
    /// Latest it can be.
    pub latest: Instant,
}

impl Deadline {
    /// A remaining time `remaining_ms` reported by an RPC sent at `sent` and
    /// answered at `received`. The coordinator rounds down to whole
    /// milliseconds, so the latest bound gains one.
    pub fn from_remaining(sent: Instant, received: Instant, remaining_ms: u64) -> Self {
        let r = Duration::from_millis(remaining_ms);
        Self {
            earliest: sent + r,
            latest: received + r + Duration::from_millis(1),
        }
    }

    /// How far apart two deadline intervals are (zero when they overlap).
    pub fn drift(&self, other: &Deadline) -> Duration {
        if other.earliest > self.latest {
            other.earliest - self.latest
        } else if self.earliest > other.latest {
            self.earliest - other.latest
        } else {
            Duration::ZERO
        }
    }
}

/// An override whose `SetOverride` returned OK.
#[derive(Debug, Clone)]
pub struct AckedOverride {
    /// Circuit.
    pub name: String,
    /// `pb::OverrideKind` as sent.
    pub kind: i32,
    /// Reason as sent.
    pub reason: String,
    /// Actor as sent.
    pub actor: String,
    /// When it lapses, if it does.
    pub expires: Option<Deadline>,
    /// Generation in the answer.
    pub generation: u64,
    /// When the call was sent.
    pub started: Instant,
}

/// A circuit tripped open by a `Report` that returned.
#[derive(Debug, Clone)]
pub struct TrippedOpen {
    /// Circuit.
    pub name: String,
    /// When the tripping `Report` returned.
    pub tripped_at: Instant,
    /// Its open deadline, when a `GetCircuit` read it before the kill.
    pub deadline: Option<Deadline>,
    /// Its generation once open (0 when not read).
    pub generation: u64,
}

/// A circuit as read back after a restart.
#[derive(Debug, Clone)]
pub struct Observed {
    /// `pb::CircuitState`.
    pub state: i32,
    /// Generation.
    pub generation: u64,
    /// Open deadline while open.
    pub open: Option<Deadline>,
    /// (kind, reason, actor, expiry) of its override.
    pub override_: Option<(i32, String, String, Option<Deadline>)>,
}

impl Observed {
    /// From a `GetCircuit` answer sent at `sent` and answered at `received`.
    pub fn from_detail(d: &pb::CircuitDetail, sent: Instant, received: Instant) -> Option<Self> {
        let s = d.snapshot.as_ref()?;
        Some(Self {
            state: s.state,
            generation: s.generation,
            open: (s.state == pb::CircuitState::Open as i32 && s.open_remaining_ms > 0)
                .then(|| Deadline::from_remaining(sent, received, s.open_remaining_ms)),
            override_: s.r#override.as_ref().map(|o| {
                (
                    o.kind,
                    o.reason.clone(),
                    o.actor.clone(),
                    (o.expires_in_ms > 0)
                        .then(|| Deadline::from_remaining(sent, received, o.expires_in_ms)),
                )
            }),
        })
    }
}

/// What one check found: problems (empty when it survived intact) and the
/// deadline drift seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// What is wrong.
    pub problems: Vec<String>,
    /// Drift of the deadline compared, if one was.
    pub drift: Option<Duration>,
    /// The generation went back.
    pub generation_back: bool,
}

/// Did override `a` survive, as `got`?
pub fn check_override(a: &AckedOverride, got: Option<&Observed>, tolerance: Duration) -> Verdict {
    let mut v = Verdict::default();
    let Some(got) = got else {
        v.problems
            .push(format!("{}: circuit gone after restart", a.name));
        return v;
    };
    if got.generation < a.generation {
        v.generation_back = true;
        v.problems.push(format!(
            "{}: generation went back {} -> {}",
            a.name, a.generation, got.generation
        ));
    }
    match &got.override_ {
        None => v.problems.push(format!("{}: override lost", a.name)),
        Some((kind, reason, actor, expires)) => {
            if *kind != a.kind || *reason != a.reason || *actor != a.actor {
                v.problems.push(format!(
                    "{}: override changed: kind {kind} reason {reason:?} actor {actor:?}",
                    a.name
                ));
            }
            match (a.expires, expires) {
                (None, None) => {}
                (Some(want), Some(have)) => {
                    let d = want.drift(have);
                    v.drift = Some(d);
                    if d > tolerance {
                        v.problems
                            .push(format!("{}: override expiry moved by {d:?}", a.name));
                    }
                }
                (want, have) => v.problems.push(format!(
                    "{}: override expiry {} before, {} after",
                    a.name,
                    if want.is_some() { "set" } else { "none" },
                    if have.is_some() { "set" } else { "none" },
                )),
            }
        }
    }
    v
}

/// Did open circuit `t` survive, as `got`? It must still be OPEN (its
/// open time is far longer than the suite), with the same deadline.
pub fn check_open(t: &TrippedOpen, got: Option<&Observed>, tolerance: Duration) -> Verdict {
    let mut v = Verdict::default();
    let Some(got) = got else {
        v.problems
            .push(format!("{}: circuit gone after restart", t.name));
        return v;
    };
    if got.generation < t.generation {
        v.generation_back = true;
        v.problems.push(format!(
            "{}: generation went back {} -> {}",
            t.name, t.generation, got.generation
        ));
    }
    if got.state != pb::CircuitState::Open as i32 {
        v.problems.push(format!(
            "{}: state {} after restart, not OPEN",
            t.name,
            pb::CircuitState::try_from(got.state)
                .map(|s| s.as_str_name())
                .unwrap_or("?")
        ));
        return v;
    }
    if let (Some(want), Some(have)) = (t.deadline, got.open) {
        let d = want.drift(&have);
        v.drift = Some(d);
        if d > tolerance {
            v.problems
                .push(format!("{}: open deadline moved by {d:?}", t.name));
        }
    }
    v
}

/// The time before which every trip is acknowledged durable: the start of
/// the latest acknowledged admin call (`None`: none acknowledged).
pub fn barrier(acked: &[AckedOverride]) -> Option<Instant> {
    acked.iter().map(|a| a.started).max()
}

/// Split trips into (acknowledged, tail) by `barrier`.
pub fn split_by_barrier(
    trips: &[TrippedOpen],
    barrier: Option<Instant>,
) -> (Vec<TrippedOpen>, Vec<TrippedOpen>) {
    trips
        .iter()
        .cloned()
        .partition(|t| barrier.is_some_and(|b| t.tripped_at <= b))
}

/// Everything phase (i) found, over every kill.
#[derive(Debug, Clone, Default)]
pub struct DurabilityFigures {
    /// Overrides acknowledged.
    pub overrides_acked: usize,
    /// Overrides read back after a restart (each acknowledged override is
    /// read after every later restart).
    pub overrides_checked: usize,
    /// Checks that found an override lost or changed.
    pub overrides_lost: usize,
    /// Open states acknowledged durable.
    pub opens_acked: usize,
    /// Checks of acknowledged opens.
    pub opens_checked: usize,
    /// Checks that found an acknowledged open lost or moved.
    pub opens_lost: usize,
    /// Opens tripped after the last acknowledgement before a kill.
    pub tail_opens: usize,
    /// Of those, lost (informational: never acknowledged durable).
    pub tail_lost: usize,
    /// Largest deadline drift seen (open deadlines and override expiries).
    pub max_drift: Duration,
    /// Checks that saw a generation go back (durable circuits and the
    /// nodes' views of their circuits).
    pub generations_back: usize,
    /// The first problems found, for the report.
    pub problems: Vec<String>,
}

impl DurabilityFigures {
    /// Fold one verdict in; `counts` says which counter it belongs to:
    /// 0 override, 1 acknowledged open, 2 tail open.
    pub fn absorb(&mut self, v: &Verdict, counts: u8) {
        let lost = !v.problems.is_empty();
        match counts {
            0 => {
                self.overrides_checked += 1;
                self.overrides_lost += usize::from(lost);
            }
            1 => {
                self.opens_checked += 1;
                self.opens_lost += usize::from(lost);
            }
            _ => {
                self.tail_lost += usize::from(lost);
            }
        }
        if let Some(d) = v.drift {
            self.max_drift = self.max_drift.max(d);
        }
        self.generations_back += usize::from(v.generation_back);
        if counts < 2 {
            for p in &v.problems {
                if self.problems.len() < 20 {
                    self.problems.push(p.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn deadlines_are_intervals() {
        let t = Instant::now();
        let a = Deadline::from_remaining(t, t + ms(2), 1000);
        // Read again 10 s later: 990 ms left, give or take the round trip.
        let b = Deadline::from_remaining(t + ms(10), t + ms(11), 990);
        assert_eq!(a.drift(&b), Duration::ZERO);
        let late = Deadline::from_remaining(t + ms(10), t + ms(11), 1100);
        assert_eq!(a.drift(&late), ms(1100 + 10 - 1003));
        assert_eq!(late.drift(&a), a.drift(&late));
    }

    fn acked(t: Instant) -> AckedOverride {
        AckedOverride {
            name: "chaos-ov-0-1".into(),
            kind: pb::OverrideKind::ForcedOpen as i32,
            reason: "r".into(),
            actor: "chaos".into(),
            expires: None,
            generation: 10,
            started: t,
        }
    }

    #[test]
    fn overrides_must_come_back_unchanged() {
        let t = Instant::now();
        let a = acked(t);
        let same = Observed {
            state: pb::CircuitState::Closed as i32,
            generation: 1 << 33,
            open: None,
            override_: Some((a.kind, "r".into(), "chaos".into(), None)),
        };
        assert_eq!(check_override(&a, Some(&same), ms(25)).problems.len(), 0);
        let mut gone = same.clone();
        gone.override_ = None;
        assert_eq!(check_override(&a, Some(&gone), ms(25)).problems.len(), 1);
        assert_eq!(check_override(&a, None, ms(25)).problems.len(), 1);
        let mut back = same.clone();
        back.generation = 9;
        assert!(check_override(&a, Some(&back), ms(25)).generation_back);
        let mut other = same;
        other.override_ = Some((
            pb::OverrideKind::Disabled as i32,
            "r".into(),
            "chaos".into(),
            None,
        ));
        assert_eq!(check_override(&a, Some(&other), ms(25)).problems.len(), 1);
    }

    #[test]
    fn opens_must_stay_open_with_their_deadline() {
        let t = Instant::now();
        let trip = TrippedOpen {
            name: "chaos-trip-0-1".into(),
            tripped_at: t,
            deadline: Some(Deadline::from_remaining(t, t + ms(1), 600_000)),
            generation: 7,
        };
        let open = |remaining| Observed {
            state: pb::CircuitState::Open as i32,
            generation: 7,
            open: Some(Deadline::from_remaining(
                t + ms(5000),
                t + ms(5001),
                remaining,
            )),
            override_: None,
        };
        let ok = check_open(&trip, Some(&open(595_000)), ms(25));
        assert!(ok.problems.is_empty(), "{:?}", ok.problems);
        assert_eq!(ok.drift, Some(Duration::ZERO));
        // The restart handed out a fresh full open time: the downtime was
        // not counted.
        let moved = check_open(&trip, Some(&open(600_000)), ms(25));
        assert_eq!(moved.problems.len(), 1);
        let mut closed = open(0);
        closed.state = pb::CircuitState::Closed as i32;
        assert_eq!(check_open(&trip, Some(&closed), ms(25)).problems.len(), 1);
    }

    #[test]
    fn trips_before_an_acknowledged_admin_call_are_acknowledged() {
        let t = Instant::now();
        let trips: Vec<TrippedOpen> = (0..4)
            .map(|i| TrippedOpen {
                name: format!("t{i}"),
                tripped_at: t + ms(i * 10),
                deadline: None,
                generation: 1,
            })
            .collect();
        let mut a = acked(t + ms(15));
        let b = barrier(std::slice::from_ref(&a));
        let (acked_trips, tail) = split_by_barrier(&trips, b);
        assert_eq!(acked_trips.len(), 2);
        assert_eq!(tail.len(), 2);
        a.started = t + ms(100);
        assert_eq!(split_by_barrier(&trips, barrier(&[a])).0.len(), 4);
        assert_eq!(split_by_barrier(&trips, None).1.len(), 4);
    }

    #[test]
    fn figures_count_losses_by_kind() {
        let mut f = DurabilityFigures::default();
        let lost = Verdict {
            problems: vec!["x".into()],
            drift: Some(ms(3)),
            generation_back: true,
        };
        f.absorb(&Verdict::default(), 0);
        f.absorb(&lost, 1);
        f.absorb(&lost, 2);
        assert_eq!((f.overrides_checked, f.overrides_lost), (1, 0));
        assert_eq!((f.opens_checked, f.opens_lost), (1, 1));
        assert_eq!(f.tail_lost, 1);
        assert_eq!(f.generations_back, 2);
        assert_eq!(f.max_drift, ms(3));
        assert_eq!(f.problems.len(), 1);
    }
}
