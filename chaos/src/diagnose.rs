//! `--diagnose`: every decision over the bound, every failed legitimate
//! probe and every node that lost its link, each with the scheduling noise
//! measured around it, one line each. This is what shows whether a figure
//! the criteria left out as noise really was noise.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::criteria::{Figures, Limits};
use crate::noise::{Group, REACH};
use crate::stats::LagEvent;

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// The lines of `--diagnose`. Columns: what happened; then, in its
/// window, the longest one fleet thread waited for a core ("fleet runq",
/// and summed over the fleet's threads), the time the machine stood still
/// ("stall"), the CPU the fleet used, the same for the coordinator, and how
/// late the sampler's and the fleet runtime's 1 ms sleeps woke; last,
/// whether the criteria count it as noise.
pub fn diagnose(f: &Figures, l: &Limits) -> String {
    let n = &f.noise;
    let mut s = String::new();
    let max_in = |ev: &[LagEvent], a: Instant, b: Instant| {
        ev.iter()
            .filter(|(t, _)| *t >= a && *t <= b + REACH)
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default()
    };
    let sum_in = |ev: &[LagEvent], a: Instant, b: Instant| {
        ev.iter()
            .filter(|(t, _)| *t >= a && *t <= b + REACH)
            .map(|(_, d)| *d)
            .sum::<Duration>()
    };
    let around = |a: Instant, b: Instant| {
        format!(
            "fleet runq {:>7} (sum {:>7}) stall {:>7} cpu {:>7} | coord runq {:>7} cpu {:>7} | late {:>7} / {:>7}",
            ms(n.stall(Group::Load, a, b)),
            ms(n.stall_sum(Group::Load, a, b)),
            ms(sum_in(&n.vm_stall, a, b)),
            ms(n.cpu(Group::Load, a, b)),
            ms(n.stall(Group::Coordinator, a, b)),
            ms(n.cpu(Group::Coordinator, a, b)),
            ms(max_in(&n.timer_lag, a, b)),
            ms(max_in(&f.ticks, a, b)),
        )
    };
    let noise = |yes: bool| if yes { "noise" } else { "NOT NOISE" };
    for p in &f.phases {
        for o in &p.decisions.overruns {
            let end = o.start + o.wait;
            let _ = writeln!(
                s,
                "overrun    {:<18} wait {:>8} (over by {:>7}) {} {:<11} | {} | {}",
                p.name,
                ms(o.wait),
                ms(o.wait.saturating_sub(l.decision)),
                if o.rpc { "rpc  " } else { "local" },
                format!("{:?}", o.decided),
                around(o.start, end),
                noise(n.explains_overrun(o.start, o.wait, l.decision)),
            );
        }
        for (at, code, own_timer) in &p.probes.failures {
            let end = *at + f.rpc_timeout;
            let _ = writeln!(
                s,
                "probe-fail {:<18} {:<34} | {} | {}",
                p.name,
                format!(
                    "{:?}{}",
                    code.unwrap_or(tonic::Code::Unknown),
                    if *own_timer { " (suite's timer)" } else { "" }
                ),
                around(*at, end),
                noise(n.explains_failure(*at, f.rpc_timeout)),
            );
        }
        for (node, at, up) in &f.links {
            if *up || *at < p.start || *at >= p.end {
                continue;
            }
            let back = f
                .links
                .iter()
                .filter(|(m, t, u)| m == node && *u && t > at)
                .map(|(_, t, _)| *t)
                .min();
            let from = at.checked_sub(l.decision).unwrap_or(*at);
            let _ = writeln!(
                s,
                "down       {:<18} node {:>3} for {:>26} | {} | {}",
                p.name,
                node,
                back.map_or_else(|| "the rest of the run".into(), |b| ms(b - *at)),
                around(from, *at),
                noise(n.explains_failure(from, f.rpc_timeout)),
            );
        }
    }
    s
}
