//! The open-loop load generator.
//!
//! Call `i` is *due* at `start + i / rate`, whatever happened to earlier
//! calls, and its latency is measured from that intended start to its
//! completion. A generator that falls behind (CPU saturated, a slow call)
//! therefore shows the wait in the latencies instead of quietly sending
//! less: no coordinated omission.
//!
//! Tokio timers tick in milliseconds, far too coarse for rates of a million
//! calls a second, so the driver never sleeps: it starts every due call,
//! polls the calls in flight, and yields to the runtime (which also runs the
//! clients' background tasks and polls sockets) between rounds. The load
//! generator owns its core, so spinning costs nothing that is measured.
//!
//! A call is started inline and polled once; if it completes at once (a
//! local decision) no task is created. Calls that wait (network) go into a
//! `FuturesUnordered`. Every run is bounded in calls, in time (the planned
//! duration plus a grace period) and in calls in flight.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::stats::Hist;

/// What the application saw from one protected call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The breaker allowed the call (whatever the dependency answered).
    Allowed,
    /// The breaker rejected the call: the dependency was spared.
    Rejected,
    /// The breaker machinery itself failed (e.g. Redis unreachable): the
    /// application sees an error it must handle.
    Error,
}

/// A boxed call future; not `Send` (the load generator is single-threaded).
pub type CallFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + 'a>>;

/// One open-loop run at a fixed offered rate.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Offered calls per second.
    pub rate: f64,
    /// Planned duration.
    pub duration: Duration,
    /// Extra time allowed for the calls in flight to finish; past it the
    /// run stops and counts as overloaded.
    pub grace: Duration,
    /// Most calls in flight before the run is declared overloaded.
    pub max_in_flight: usize,
}

/// One completed call, for workloads that look at time series.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Call index.
    pub index: u64,
    /// Latency from the intended start, ns.
    pub latency_ns: u64,
    /// What happened.
    pub outcome: Outcome,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Offered rate.
    pub offered: f64,
    /// Calls started per second: calls over the time from the start to the
    /// start of the last call (at least the planned duration). A generator
    /// that cannot keep up starts its last call late; slow completions show
    /// in the latencies instead.
    pub achieved: f64,
    /// Calls started.
    pub started: u64,
    /// Calls completed.
    pub completed: u64,
    /// Latency (intended start to completion) of every completed call, ns.
    pub hist: Hist,
    /// Calls allowed / rejected / failed.
    pub allowed: u64,
    /// Calls rejected by the breaker.
    pub rejected: u64,
    /// Calls where the breaker machinery failed.
    pub errors: u64,
    /// True when the run had to stop early (grace passed or too many calls
    /// in flight).
    pub overloaded: bool,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Every sample, when asked for.
    pub samples: Vec<Sample>,
}

impl RunResult {
    /// True when the run kept up with the offered rate and its p99 stayed
    /// within `p99_limit`.
    pub fn sustained(&self, p99_limit: Duration) -> bool {
        !self.overloaded
            && self.completed == self.started
            && self.achieved >= 0.95 * self.offered
            && self.hist.p(99.0) <= p99_limit.as_nanos() as u64
    }
}

struct InFlight<'a> {
    fut: CallFuture<'a>,
    index: u64,
    intended: Instant,
}

impl Future for InFlight<'_> {
    type Output = (Outcome, u64, Instant, Instant);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.fut.as_mut().poll(cx) {
            Poll::Ready(o) => Poll::Ready((o, self.index, self.intended, Instant::now())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Run `plan`, starting call `i` with `call(i)` when it is due. With
/// `keep_samples`, every completed call is also returned as a [`Sample`].
pub async fn run<'a, F>(plan: &Plan, keep_samples: bool, mut call: F) -> RunResult
where
    F: FnMut(u64) -> CallFuture<'a>,
{
    let total = (plan.rate * plan.duration.as_secs_f64()).round().max(1.0) as u64;
    let interval_ns = 1e9 / plan.rate;
    let mut res = RunResult {
        offered: plan.rate,
        achieved: 0.0,
        started: 0,
        completed: 0,
        hist: Hist::new(),
        allowed: 0,
        rejected: 0,
        errors: 0,
        overloaded: false,
        elapsed: Duration::ZERO,
        samples: Vec::new(),
    };
    let mut in_flight: FuturesUnordered<InFlight<'a>> = FuturesUnordered::new();
    // Wakers are not needed: the loop polls again every round anyway, and
    // FuturesUnordered tracks which of its futures were woken on its own.
    let mut cx = Context::from_waker(Waker::noop());
    let start = Instant::now();
    let hard_stop = start + plan.duration + plan.grace;
    let mut last_start = start;
    let mut i: u64 = 0;

    let finish = |res: &mut RunResult, o: Outcome, index: u64, intended: Instant, done: Instant| {
        let lat = done.saturating_duration_since(intended).as_nanos() as u64;
        res.hist.record(lat.max(1));
        res.completed += 1;
        match o {
            Outcome::Allowed => res.allowed += 1,
            Outcome::Rejected => res.rejected += 1,
            Outcome::Error => res.errors += 1,
        }
        if keep_samples {
            res.samples.push(Sample {
                index,
                latency_ns: lat,
                outcome: o,
            });
        }
    };

    'run: loop {
        let now = Instant::now();
        while i < total {
            let intended = start + Duration::from_nanos((i as f64 * interval_ns) as u64);
            if intended > now {
                break;
            }
            let mut fut = call(i);
            res.started += 1;
            last_start = now;
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(o) => finish(&mut res, o, i, intended, Instant::now()),
                Poll::Pending => in_flight.push(InFlight {
                    fut,
                    index: i,
                    intended,
                }),
            }
            i += 1;
            if in_flight.len() > plan.max_in_flight {
                res.overloaded = true;
                break 'run;
            }
        }
        while let Poll::Ready(Some((o, index, intended, done))) = in_flight.poll_next_unpin(&mut cx)
        {
            finish(&mut res, o, index, intended, done);
        }
        if i >= total && in_flight.is_empty() {
            break;
        }
        if now > hard_stop {
            res.overloaded = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    res.elapsed = start.elapsed();
    let span = last_start
        .saturating_duration_since(start)
        .max(plan.duration);
    res.achieved = res.started as f64 / span.as_secs_f64();
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rate: f64, ms: u64) -> Plan {
        Plan {
            rate,
            duration: Duration::from_millis(ms),
            grace: Duration::from_secs(5),
            max_in_flight: 1000,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn instant_calls_are_all_started_at_the_offered_rate() {
        let r = run(&plan(20_000.0, 100), true, |i| {
            Box::pin(async move {
                if i % 2 == 0 {
                    Outcome::Allowed
                } else {
                    Outcome::Rejected
                }
            })
        })
        .await;
        assert_eq!(r.started, 2000);
        assert_eq!(r.completed, 2000);
        assert_eq!((r.allowed, r.rejected, r.errors), (1000, 1000, 0));
        assert!(!r.overloaded);
        assert!(r.elapsed >= Duration::from_millis(99));
        assert_eq!(r.samples.len(), 2000);
        assert!(
            r.samples
                .iter()
                .enumerate()
                .all(|(i, s)| s.index == i as u64)
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn waiting_calls_count_their_wait_from_the_intended_start() {
        // Every call takes at least 5 ms: latencies must show it.
        let r = run(&plan(1_000.0, 50), false, |_| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Outcome::Allowed
            })
        })
        .await;
        assert_eq!(r.completed, 50);
        assert!(r.hist.p(50.0) >= 5_000_000, "{:?}", r.hist);
        assert!(!r.sustained(Duration::from_millis(1)));
    }

    #[test]
    fn sustained_needs_the_rate_the_bound_and_no_overload() {
        let mut hist = Hist::new();
        for _ in 0..100 {
            hist.record(200_000);
        }
        let good = RunResult {
            offered: 1000.0,
            achieved: 990.0,
            started: 100,
            completed: 100,
            hist,
            allowed: 100,
            rejected: 0,
            errors: 0,
            overloaded: false,
            elapsed: Duration::from_millis(100),
            samples: Vec::new(),
        };
        assert!(good.sustained(Duration::from_millis(1)));
        assert!(!good.sustained(Duration::from_micros(100)));
        assert!(
            !RunResult {
                achieved: 900.0,
                ..good.clone()
            }
            .sustained(Duration::from_millis(1))
        );
        assert!(
            !RunResult {
                completed: 99,
                ..good.clone()
            }
            .sustained(Duration::from_millis(1))
        );
        assert!(
            !RunResult {
                overloaded: true,
                ..good
            }
            .sustained(Duration::from_millis(1))
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stuck_run_stops_at_its_bounds() {
        let mut p = plan(1_000.0, 20);
        p.grace = Duration::from_millis(30);
        let r = run(&p, false, |_| Box::pin(std::future::pending())).await;
        assert!(r.overloaded);
        assert_eq!(r.completed, 0);
        assert!(r.elapsed < Duration::from_secs(2));
    }
}
