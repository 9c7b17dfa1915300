//! Registry tests: concurrency (exactly one trip, exactly N probes, exact
//! cap), the background driver on a paused clock, eviction, watch resync,
//! listing and admin changes. No test sleeps for a state change.

use std::sync::Arc;
use std::time::Duration;

use breakerd_policy::{Decision, Outcome, OverrideKind, PolicySpec, RejectReason, State};
use tokio::sync::Barrier;
use tokio::time::timeout;

use super::*;
use crate::circuit::{Circuit, CircuitKey};

const WAIT: Duration = Duration::from_secs(5);

fn registry(spec: PolicySpec, config: RegistryConfig) -> Arc<Registry> {
    Registry::new(config, PolicyResolver::new(spec, Vec::new()).unwrap())
}

/// Trips after `failures` consecutive failures, opens for exactly
/// `open_ms`, leases probes for `lease_ms`.
fn spec(failures: u32, open_ms: u64, lease_ms: u64) -> PolicySpec {
    PolicySpec {
        consecutive_failures: Some(failures),
        open_base_ms: Some(open_ms),
        open_max_ms: Some(open_ms.max(600_000)),
        open_jitter: Some(0.0),
        probe_lease_ms: Some(lease_ms),
        ..Default::default()
    }
}

fn failure(circuit: &str, generation: u64) -> OutcomeIn {
    OutcomeIn {
        circuit: circuit.into(),
        generation,
        lease: None,
        outcome: Outcome::Failure,
        latency: Duration::from_millis(1),
        age: Duration::ZERO,
    }
}

async fn trip(r: &Registry, circuit: &str, failures: u32) {
    let generation = r.acquire(circuit, "tripper").unwrap().decision.generation();
    let batch: Vec<_> = (0..failures)
        .map(|_| failure(circuit, generation))
        .collect();
    let summary = r.report("tripper", &batch).await.unwrap();
    assert_eq!(summary.transitions, 1, "the batch trips the circuit once");
    assert_eq!(r.get(circuit).unwrap().snapshot.state, State::Open);
}

async fn next(sub: &mut Subscription) -> WatchUpdate {
    timeout(WAIT, sub.next())
        .await
        .expect("no watch update in time")
        .expect("watch ended")
}

async fn next_changed(sub: &mut Subscription) -> Vec<Arc<CircuitSnapshot>> {
    match next(sub).await {
        WatchUpdate::Changed(c) => c,
        other => panic!("expected a change, got {other:?}"),
    }
}

async fn initial(sub: &mut Subscription) -> Vec<Arc<CircuitSnapshot>> {
    match next(sub).await {
        WatchUpdate::Resync(c) => c,
        other => panic!("expected the initial snapshots, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_failures_trip_exactly_once() {
    let r = registry(spec(5, 60_000, 10_000), RegistryConfig::default());
    let mut sub = r.watch(&["c".into(), "sentinel".into()]).unwrap();
    let snaps = initial(&mut sub).await;
    let g0 = snaps.iter().find(|s| &*s.name == "c").unwrap().generation;
    assert_eq!(g0, 1, "a new circuit starts at generation 1");

    let barrier = Arc::new(Barrier::new(64));
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (r, barrier) = (r.clone(), barrier.clone());
            tokio::spawn(async move {
                let node = format!("node-{i}");
                let generation = r.acquire("c", &node).unwrap().decision.generation();
                barrier.wait().await;
                r.report(&node, &[failure("c", generation)]).await.unwrap()
            })
        })
        .collect();
    let mut applied = 0;
    let mut stale = 0;
    for t in tasks {
        let s = t.await.unwrap();
        applied += s.applied;
        stale += s.stale;
    }
    assert_eq!((applied, stale), (5, 59));

    let detail = r.get("c").unwrap();
    assert_eq!(detail.snapshot.state, State::Open);
    assert_eq!(detail.snapshot.generation, g0 + 1);
    assert_eq!(detail.history.len(), 1, "{:?}", detail.history);
    assert_eq!(detail.counters.total_stale, 59);

    // Every event for "c" was published before this one.
    r.reset("sentinel", "test", "end marker").await.unwrap();
    let mut opens = 0;
    'outer: loop {
        for s in next_changed(&mut sub).await {
            if &*s.name == "sentinel" {
                break 'outer;
            }
            assert_eq!(s.state, State::Open);
            assert_eq!(s.generation, g0 + 1);
            opens += 1;
        }
    }
    assert_eq!(opens, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_grants_exactly_the_configured_probes() {
    let r = registry(
        PolicySpec {
            half_open_max_probes: Some(3),
            ..spec(5, 1, 600_000)
        },
        RegistryConfig::default(),
    );
    let _driver = r.spawn_background(std::future::pending());
    let mut sub = r.watch(&["h".into()]).unwrap();
    initial(&mut sub).await;
    trip(&r, "h", 5).await;
    // The driver moves it to half-open after 1 ms; wait for the event.
    loop {
        if next_changed(&mut sub)
            .await
            .iter()
            .any(|s| s.state == State::HalfOpen)
        {
            break;
        }
    }

    let barrier = Arc::new(Barrier::new(64));
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (r, barrier) = (r.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                r.acquire("h", &format!("node-{i}")).unwrap().decision
            })
        })
        .collect();
    let mut leases = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Decision::Allow { lease, state, .. } => {
                assert_eq!(state, State::HalfOpen);
                leases.push(lease.expect("a half-open allow carries a lease").id);
            }
            Decision::Reject { reason, .. } => assert_eq!(reason, RejectReason::ProbesExhausted),
        }
    }
    leases.sort_unstable();
    leases.dedup();
    assert_eq!(leases.len(), 3);
    assert_eq!(r.get("h").unwrap().counters.probes_in_flight, 3);
}

#[tokio::test(start_paused = true)]
async fn driver_reopens_for_probes_and_reclaims_lost_leases() {
    let r = registry(spec(2, 1_000, 500), RegistryConfig::default());
    let _driver = r.spawn_background(std::future::pending());
    let mut sub = r.watch(&["p".into()]).unwrap();
    initial(&mut sub).await;
    trip(&r, "p", 2).await;
    let open = next_changed(&mut sub).await;
    assert_eq!(open.last().unwrap().state, State::Open);
    assert_eq!(
        open.last().unwrap().open_remaining,
        Duration::from_millis(1_000)
    );

    tokio::time::advance(Duration::from_millis(1_001)).await;
    // Nobody calls acquire: the driver publishes the transition by itself.
    let half = next_changed(&mut sub).await;
    assert_eq!(half.last().unwrap().state, State::HalfOpen);
    assert_eq!(
        half.last().unwrap().generation,
        open.last().unwrap().generation + 1
    );

    let a = r.acquire("p", "node-a").unwrap().decision;
    assert!(matches!(a, Decision::Allow { lease: Some(_), .. }), "{a:?}");
    let b = r.acquire("p", "node-b").unwrap().decision;
    assert!(
        matches!(
            b,
            Decision::Reject {
                reason: RejectReason::ProbesExhausted,
                ..
            }
        ),
        "{b:?}"
    );

    // node-a never reports. After the lease time the driver takes it back.
    let mut ticks = r.driver_ticks.subscribe();
    ticks.borrow_and_update();
    tokio::time::advance(Duration::from_millis(501)).await;
    timeout(WAIT, ticks.changed()).await.unwrap().unwrap();
    let counters = r.get("p").unwrap().counters;
    assert_eq!(counters.probes_in_flight, 0);
    assert_eq!(counters.total_leases_expired, 1);

    let b = r.acquire("p", "node-b").unwrap().decision;
    assert!(matches!(b, Decision::Allow { lease: Some(_), .. }), "{b:?}");
}

#[tokio::test(start_paused = true)]
async fn driver_lapses_expired_overrides() {
    let r = registry(spec(5, 60_000, 10_000), RegistryConfig::default());
    let _driver = r.spawn_background(std::future::pending());
    let mut sub = r.watch(&["o".into()]).unwrap();
    initial(&mut sub).await;
    r.set_override(
        "o",
        OverrideKind::ForcedOpen,
        "ops",
        "maintenance",
        Some(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    let set = next_changed(&mut sub).await;
    let ov = set.last().unwrap().override_.clone().unwrap();
    assert_eq!(ov.kind, OverrideKind::ForcedOpen);
    assert_eq!(ov.expires_in, Some(Duration::from_secs(5)));

    tokio::time::advance(Duration::from_secs(5)).await;
    let lapsed = next_changed(&mut sub).await;
    let last = lapsed.last().unwrap();
    assert_eq!(last.override_, None);
    assert_eq!(last.state, State::HalfOpen);
}

#[tokio::test]
async fn report_batch_with_an_invalid_name_changes_nothing() {
    let r = registry(spec(2, 60_000, 10_000), RegistryConfig::default());
    let g = r.acquire("a", "n").unwrap().decision.generation();
    let err = r
        .report(
            "n",
            &[failure("a", g), failure("a", g), failure("bad name", g)],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "outcomes[2].circuit: circuit name contains byte 0x20 at offset 3; allowed: A-Z a-z 0-9 . _ : / -"
    );
    let d = r.get("a").unwrap();
    assert_eq!(d.snapshot.state, State::Closed);
    assert_eq!(d.counters.total_failures, 0);

    assert!(matches!(
        r.report("bad node", &[failure("a", g)]).await,
        Err(CoreError::InvalidName { .. })
    ));
    let small = registry(
        spec(2, 60_000, 10_000),
        RegistryConfig {
            max_report_batch: 2,
            ..Default::default()
        },
    );
    let g = small.acquire("a", "n").unwrap().decision.generation();
    assert!(matches!(
        small
            .report("n", &[failure("a", g), failure("a", g), failure("a", g)])
            .await,
        Err(CoreError::InvalidArgument(_))
    ));
    assert_eq!(small.get("a").unwrap().counters.total_failures, 0);
}

#[tokio::test]
async fn unknown_circuits_are_counted_and_never_created() {
    let r = registry(spec(5, 60_000, 10_000), RegistryConfig::default());
    let g = r.acquire("known", "n").unwrap().decision.generation();
    let s = r
        .report(
            "n",
            &[
                failure("ghost", 1),
                failure("known", g),
                failure("known", g + 7),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        s,
        ReportSummary {
            applied: 1,
            stale: 1,
            unknown: 1,
            transitions: 0,
        }
    );
    assert_eq!(r.len(), 1);
    assert!(matches!(r.get("ghost"), Err(CoreError::NotFound { .. })));
    let stats = r.stats();
    assert_eq!((stats.applied, stats.stale, stats.unknown), (1, 1, 1));
}

#[tokio::test]
async fn the_circuit_cap_refuses_creation_and_creates_nothing() {
    let r = registry(
        PolicySpec::default(),
        RegistryConfig {
            max_circuits: 2,
            ..Default::default()
        },
    );
    r.acquire("a", "").unwrap();
    r.acquire("b", "").unwrap();
    let cap = CoreError::TooManyCircuits { limit: 2 };
    assert_eq!(r.acquire("c", "").unwrap_err(), cap);
    assert_eq!(r.watch(&["c".into()]).unwrap_err(), cap);
    assert_eq!(
        r.set_override("c", OverrideKind::ForcedOpen, "ops", "why", None)
            .await
            .unwrap_err(),
        cap
    );
    assert_eq!(
        r.set_policy("c", &PolicySpec::default(), "ops", "why")
            .await
            .unwrap_err(),
        cap
    );
    assert_eq!(r.len(), 2);
    assert!(matches!(r.get("c"), Err(CoreError::NotFound { .. })));
    // Existing circuits still work at the cap, and deleting frees a slot.
    r.acquire("a", "").unwrap();
    r.delete("a", "ops", "make room").await.unwrap();
    r.acquire("c", "").unwrap();
    assert_eq!(r.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_circuit_cap_is_exact_under_concurrency() {
    let r = registry(
        PolicySpec::default(),
        RegistryConfig {
            max_circuits: 10,
            ..Default::default()
        },
    );
    let barrier = Arc::new(Barrier::new(64));
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (r, barrier) = (r.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                r.acquire(&format!("c{i}"), "").is_ok()
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    assert_eq!(ok, 10);
    assert_eq!(r.len(), 10);
}

#[tokio::test(start_paused = true)]
async fn eviction_removes_only_idle_closed_plain_unwatched_circuits() {
    let r = registry(spec(2, 3_600_000, 10_000), RegistryConfig::default());
    for name in [
        "idle", "open", "forced", "shadow", "admin", "watched", "recent",
    ] {
        r.acquire(name, "").unwrap();
    }
    trip(&r, "open", 2).await;
    r.set_override("forced", OverrideKind::ForcedClosed, "ops", "why", None)
        .await
        .unwrap();
    r.set_override("shadow", OverrideKind::Disabled, "ops", "why", None)
        .await
        .unwrap();
    r.set_policy("admin", &spec(9, 1_000, 1_000), "ops", "why")
        .await
        .unwrap();
    let sub = r.watch(&["watched".into()]).unwrap();
    let idle_generation = r.get("idle").unwrap().snapshot.generation;

    assert_eq!(r.evict_idle(), 0, "nothing is idle yet");
    tokio::time::advance(Duration::from_secs(600)).await;
    r.acquire("recent", "").unwrap();
    assert_eq!(r.evict_idle(), 1);
    let mut left: Vec<_> = r
        .list(&ListQuery::default())
        .unwrap()
        .circuits
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["admin", "forced", "open", "recent", "shadow", "watched"]
    );

    drop(sub);
    tokio::time::advance(Duration::from_secs(600)).await;
    assert_eq!(r.evict_idle(), 2, "watched and recent are idle now");
    assert_eq!(r.len(), 4);
    assert_eq!(r.stats().evicted, 3);

    // A circuit created again never goes back in generations.
    let again = r.acquire("idle", "").unwrap().decision.generation();
    assert!(again > idle_generation);
}

#[tokio::test]
async fn a_lagging_watcher_is_resynchronised() {
    let r = registry(
        PolicySpec::default(),
        RegistryConfig {
            watch_buffer: 4,
            ..Default::default()
        },
    );
    let mut sub = r.watch(&["w".into()]).unwrap();
    initial(&mut sub).await;
    for _ in 0..20 {
        r.reset("w", "ops", "churn").await.unwrap();
    }
    let current = r.get("w").unwrap().snapshot.generation;
    match next(&mut sub).await {
        WatchUpdate::Resync(snaps) => {
            assert_eq!(snaps.len(), 1);
            assert_eq!(snaps[0].generation, current);
        }
        other => panic!("expected a resync, got {other:?}"),
    }
    r.reset("w", "ops", "one more").await.unwrap();
    let changed = next_changed(&mut sub).await;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].generation, current + 1);
    assert_eq!(r.stats().watch_resyncs, 1);
}

#[tokio::test]
async fn watching_everything_creates_nothing_and_sees_every_circuit() {
    let r = registry(PolicySpec::default(), RegistryConfig::default());
    r.acquire("b", "").unwrap();
    r.acquire("a", "").unwrap();
    let mut all = r.watch(&[]).unwrap();
    let names: Vec<_> = initial(&mut all)
        .await
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(r.len(), 2);
    r.set_override("c", OverrideKind::ForcedOpen, "ops", "why", None)
        .await
        .unwrap();
    assert_eq!(&*next_changed(&mut all).await[0].name, "c");
    // Invalid names are refused whole, before anything is created.
    assert!(matches!(
        r.watch(&["d".into(), "no way".into()]),
        Err(CoreError::InvalidName { .. })
    ));
    assert!(matches!(r.get("d"), Err(CoreError::NotFound { .. })));
}

#[tokio::test]
async fn list_paginates_in_name_order_with_filters() {
    let r = registry(spec(1, 60_000, 10_000), RegistryConfig::default());
    for i in (0..25).rev() {
        r.acquire(&format!("svc-{i:02}"), "").unwrap();
    }
    r.acquire("other", "").unwrap();
    trip(&r, "svc-03", 1).await;
    trip(&r, "svc-17", 1).await;

    let mut query = ListQuery {
        prefix: "svc-".into(),
        page_size: 10,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = r.list(&query).unwrap();
        assert_eq!(page.total_matching, 25);
        pages += 1;
        seen.extend(page.circuits.iter().map(|s| s.name.to_string()));
        if page.next_page_token.is_empty() {
            break;
        }
        query.page_token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let want: Vec<_> = (0..25).map(|i| format!("svc-{i:02}")).collect();
    assert_eq!(seen, want);

    let open = r
        .list(&ListQuery {
            state: Some(State::Open),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(open.total_matching, 2);
    let names: Vec<_> = open.circuits.iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["svc-03", "svc-17"]);
    assert!(open.next_page_token.is_empty());

    let all = r.list(&ListQuery::default()).unwrap();
    assert_eq!((all.circuits.len(), all.total_matching), (26, 26));
    assert_eq!(&*all.circuits[0].name, "other");

    let exact = r
        .list(&ListQuery {
            page_size: 26,
            ..Default::default()
        })
        .unwrap();
    assert!(exact.next_page_token.is_empty());

    assert!(matches!(
        r.list(&ListQuery {
            page_token: "not a token".into(),
            ..Default::default()
        }),
        Err(CoreError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn admin_changes_are_checked_merged_and_pushed() {
    let r = registry(PolicySpec::default(), RegistryConfig::default());
    let mut all = r.watch(&[]).unwrap();
    initial(&mut all).await;

    // actor and reason are required.
    for (actor, reason) in [("", "why"), ("ops", ""), ("ops", " ")] {
        assert!(matches!(
            r.set_override("x", OverrideKind::ForcedOpen, actor, reason, None)
                .await,
            Err(CoreError::InvalidArgument(_))
        ));
    }
    assert!(matches!(
        r.reset("x", &"a".repeat(201), "why").await,
        Err(CoreError::InvalidArgument(_))
    ));
    // An invalid policy creates nothing.
    let bad = PolicySpec {
        half_open_max_probes: Some(0),
        ..Default::default()
    };
    match r.set_policy("x", &bad, "ops", "why").await {
        Err(CoreError::InvalidPolicy(e)) => assert_eq!(e.field, "half_open_max_probes"),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.len(), 0);

    // Changes merge onto the circuit's admin policy.
    let d = r
        .set_policy("x", &spec(3, 1_000, 1_000), "ops", "tune")
        .await
        .unwrap();
    assert_eq!(d.snapshot.policy_version, 2);
    let d = r
        .set_policy(
            "x",
            &PolicySpec {
                half_open_max_probes: Some(4),
                ..Default::default()
            },
            "ops",
            "more probes",
        )
        .await
        .unwrap();
    let p = d.snapshot.policy.to_spec();
    assert_eq!(
        (p.consecutive_failures, p.half_open_max_probes),
        (Some(3), Some(4))
    );
    assert_eq!(d.snapshot.policy_version, 3);
    // An invalid merge on an existing circuit changes nothing.
    let clash = PolicySpec {
        open_max_ms: Some(10),
        ..Default::default()
    };
    assert!(matches!(
        r.set_policy("x", &clash, "ops", "bad").await,
        Err(CoreError::InvalidPolicy(_))
    ));
    let unchanged = r.get("x").unwrap();
    assert_eq!(unchanged.snapshot.policy_version, 3);
    assert_eq!(unchanged.admin_policy.unwrap().open_max_ms, Some(600_000));

    // The watcher saw the creation and both changes, in order.
    let mut versions = Vec::new();
    while versions.last() != Some(&3) {
        versions.extend(
            next_changed(&mut all)
                .await
                .iter()
                .map(|s| s.policy_version),
        );
    }
    assert_eq!(versions, [1, 2, 3]);

    // Overrides, reset, delete.
    let d = r
        .set_override("x", OverrideKind::ForcedOpen, "ops", "incident", None)
        .await
        .unwrap();
    assert_eq!(d.snapshot.state, State::Open);
    let r#override = d.snapshot.override_.unwrap();
    assert_eq!(
        (r#override.actor.as_str(), r#override.expires_in),
        ("ops", None)
    );
    assert!(matches!(
        r.acquire("x", "n").unwrap().decision,
        Decision::Reject {
            reason: RejectReason::ForcedOpen,
            ..
        }
    ));
    let d = r.clear_override("x", "ops", "resolved").await.unwrap();
    assert_eq!(
        (d.snapshot.state, d.snapshot.override_),
        (State::HalfOpen, None)
    );
    let d = r.reset("x", "ops", "fresh start").await.unwrap();
    assert_eq!(d.snapshot.state, State::Closed);
    assert_eq!(d.history[0].cause, breakerd_policy::TransitionCause::Reset);
    let last_generation = d.snapshot.generation;

    r.delete("x", "ops", "gone").await.unwrap();
    assert!(matches!(r.get("x"), Err(CoreError::NotFound { .. })));
    let mut deleted = None;
    while deleted.is_none() {
        deleted = next_changed(&mut all).await.into_iter().find(|s| s.deleted);
    }
    assert_eq!(&*deleted.unwrap().name, "x");
    for res in [
        r.clear_override("x", "ops", "why").await.map(|_| ()),
        r.reset("x", "ops", "why").await.map(|_| ()),
        r.delete("x", "ops", "why").await,
    ] {
        assert!(matches!(res, Err(CoreError::NotFound { .. })), "{res:?}");
    }
    assert!(r.acquire("x", "").unwrap().decision.generation() > last_generation);
}

#[tokio::test]
async fn config_patterns_decide_a_new_circuits_policy() {
    let resolver = PolicyResolver::new(
        PolicySpec::default(),
        vec![("pay*".into(), spec(2, 1_000, 1_000))],
    )
    .unwrap();
    let r = Registry::new(RegistryConfig::default(), resolver);
    trip(&r, "payments", 2).await;
    let g = r.acquire("search", "").unwrap().decision.generation();
    r.report("", &[failure("search", g), failure("search", g)])
        .await
        .unwrap();
    assert_eq!(r.get("search").unwrap().snapshot.state, State::Closed);
}

fn stored_registry(dir: &std::path::Path, spec: PolicySpec) -> Arc<Registry> {
    let (store, loaded) = crate::store::Store::open(dir).unwrap();
    Registry::restore(
        RegistryConfig::default(),
        PolicyResolver::new(spec, Vec::new()).unwrap(),
        store,
        loaded,
    )
}

#[tokio::test]
async fn durable_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let r = stored_registry(dir.path(), spec(2, 60_000, 10_000));
    trip(&r, "open-one", 2).await;
    let open_gen = r.get("open-one").unwrap().snapshot.generation;
    r.set_override(
        "forced",
        OverrideKind::ForcedOpen,
        "ops",
        "incident 7",
        None,
    )
    .await
    .unwrap();
    let tuned = PolicySpec {
        consecutive_failures: Some(9),
        ..Default::default()
    };
    r.set_policy("tuned", &tuned, "ops", "noisy").await.unwrap();
    r.acquire("plain", "n").unwrap();
    r.durable().await.unwrap();
    // As after kill -9: nothing is shut down, the next process just opens
    // the same directory.
    drop(r);

    let r = stored_registry(dir.path(), spec(2, 60_000, 10_000));
    let open = r.get("open-one").unwrap();
    assert_eq!(
        open.snapshot.state,
        State::Open,
        "an open circuit stays open"
    );
    assert!(
        open.snapshot.open_remaining > Duration::from_secs(50)
            && open.snapshot.open_remaining <= Duration::from_secs(60),
        "{:?}",
        open.snapshot.open_remaining
    );
    assert!(
        open.snapshot.generation > open_gen,
        "generations never go back"
    );
    assert!(!r.acquire("open-one", "n").unwrap().decision.is_allowed());

    let forced = r.get("forced").unwrap();
    let o = forced.snapshot.override_.expect("override survives");
    assert_eq!(
        (o.kind, o.actor.as_str(), o.reason.as_str()),
        (OverrideKind::ForcedOpen, "ops", "incident 7")
    );
    assert_eq!(r.get("tuned").unwrap().admin_policy, Some(tuned));
    assert_eq!(
        r.get("plain").map(|_| ()),
        Err(CoreError::NotFound {
            name: "plain".into()
        }),
        "closed circuits without admin state are soft state"
    );
    // A circuit created in the new run starts above every earlier generation.
    let fresh = r.acquire("plain", "n").unwrap().decision.generation();
    assert!(fresh > open_gen);

    let audit = r.audit_log(None, 10).unwrap();
    let actions: Vec<_> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["set_policy", "set_override"]);
    assert_eq!(
        audit[1]
            .after
            .as_ref()
            .and_then(|a| a.override_.as_ref())
            .map(|o| o.kind),
        Some(OverrideKind::ForcedOpen)
    );
}

#[tokio::test]
async fn deleted_and_recovered_circuits_are_not_restored() {
    let dir = tempfile::tempdir().unwrap();
    let r = stored_registry(dir.path(), spec(1, 60_000, 10_000));
    r.set_override("gone", OverrideKind::Disabled, "ops", "shadow", None)
        .await
        .unwrap();
    r.delete("gone", "ops", "cleanup").await.unwrap();
    r.set_override("cleared", OverrideKind::ForcedClosed, "ops", "x", None)
        .await
        .unwrap();
    r.clear_override("cleared", "ops", "done").await.unwrap();
    r.durable().await.unwrap();
    drop(r);
    let r = stored_registry(dir.path(), spec(1, 60_000, 10_000));
    assert!(r.get("gone").is_err());
    assert!(
        r.get("cleared").is_err(),
        "closed without admin state is not kept"
    );
    assert_eq!(r.audit_log(Some("gone"), 10).unwrap().len(), 2);
}

/// An outcome's age orders the consecutive rule: a success that completed
/// before the run's first failure (it waited in a batch) does not end the
/// run, a zero age counts in arrival order, and ages are believed only up to
/// `MAX_OUTCOME_AGE`, however large (never refused, never a panic).
#[tokio::test(start_paused = true)]
async fn outcome_age_orders_the_consecutive_rule() {
    let r = registry(spec(5, 60_000, 10_000), RegistryConfig::default());
    let g = r.acquire("c", "a").unwrap().decision.generation();
    let success = |age| OutcomeIn {
        outcome: Outcome::Success,
        age,
        ..failure("c", g)
    };
    let consecutive = || r.get("c").unwrap().counters.consecutive_failures;

    r.report("a", &[failure("c", g)]).await.unwrap();
    tokio::time::advance(Duration::from_millis(20)).await;
    let late = success(Duration::from_millis(25));
    let s = r.report("b", &[failure("c", g), late]).await.unwrap();
    assert_eq!(
        (s.applied, consecutive()),
        (2, 2),
        "completed before the run"
    );
    r.report("b", &[success(Duration::ZERO)]).await.unwrap();
    assert_eq!(consecutive(), 0, "no age: arrival order");

    r.report("a", &[failure("c", g)]).await.unwrap();
    tokio::time::advance(MAX_OUTCOME_AGE + Duration::from_millis(500)).await;
    // Believed, 11 s would put it before the run; clamped to 10 s, after.
    r.report("b", &[success(MAX_OUTCOME_AGE + Duration::from_secs(1))])
        .await
        .unwrap();
    assert_eq!(consecutive(), 0, "the age is clamped");

    r.report("a", &[failure("c", g)]).await.unwrap();
    let huge = success(Duration::from_micros(u64::MAX));
    assert_eq!(r.report("b", &[huge]).await.unwrap().applied, 1);
    assert_eq!(r.get("c").unwrap().snapshot.state, State::Closed);
}

/// The registry may hold a million circuits (bench W6): a closed circuit
/// without admin policy or deadline is one small allocation sharing the
/// configured policy, and what an open circuit needed is given back once it
/// has no deadline left.
#[tokio::test(start_paused = true)]
async fn a_circuit_is_small() {
    // `Arc<Circuit>` allocates the circuit and two reference counts.
    let allocated = std::mem::size_of::<Circuit>() + 2 * std::mem::size_of::<usize>();
    assert!(
        allocated <= 200,
        "a circuit grew to {allocated} bytes; box what most circuits do not need"
    );
    assert_eq!(
        std::mem::size_of::<CircuitKey>(),
        std::mem::size_of::<usize>()
    );

    let r = registry(spec(3, 1_000, 10_000), RegistryConfig::default());
    r.acquire("a", "n").unwrap();
    r.acquire("b", "n").unwrap();
    let (a, b) = (r.lookup("a").unwrap(), r.lookup("b").unwrap());
    assert!(Arc::ptr_eq(
        a.inner.lock().breaker.shared_policy(),
        b.inner.lock().breaker.shared_policy()
    ));
    assert!(a.inner.lock().extra.is_none());

    trip(&r, "a", 3).await;
    let deadline = a.inner.lock().scheduled().expect("open deadline scheduled");
    r.fire_deadline("a", deadline);
    let inner = a.inner.lock();
    assert_eq!(inner.breaker.state(), State::HalfOpen);
    assert!(inner.extra.is_none(), "nothing left scheduled: {inner:?}");
}

/// A store behind the durable-state seam whose flushes wait for the test
/// to release them, so that "answered only once durable" is checked
/// without sleeping.
#[derive(Debug)]
struct Gate {
    flushes: std::sync::atomic::AtomicUsize,
    started: tokio::sync::Notify,
    released: tokio::sync::Semaphore,
    fail: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct Gated(Arc<Gate>);

impl DurableState for Gated {
    fn put(&self, _: crate::store::CircuitRecord) {}
    fn forget(&self, _: &str) {}
    fn audit(&self, _: crate::store::AuditRecord) {}
    fn flush(&self) -> Flush<'_> {
        Box::pin(async move {
            let gate = &self.0;
            gate.flushes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            gate.started.notify_one();
            gate.released.acquire().await.unwrap().forget();
            if gate.fail.load(std::sync::atomic::Ordering::SeqCst) {
                Err(crate::store::StoreError::Write("disk full".into()))
            } else {
                Ok(())
            }
        })
    }
    fn read_audit(
        &self,
        _: Option<&str>,
        _: usize,
    ) -> Result<Vec<crate::store::AuditRecord>, crate::store::StoreError> {
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn changes_are_answered_only_once_durable() {
    let gate = Arc::new(Gate {
        flushes: Default::default(),
        started: tokio::sync::Notify::new(),
        released: tokio::sync::Semaphore::new(0),
        fail: Default::default(),
    });
    let loaded = crate::store::Loaded {
        epoch: 1,
        circuits: Vec::new(),
        recovery: None,
    };
    let r = Registry::restore(
        RegistryConfig::default(),
        PolicyResolver::new(spec(2, 60_000, 10_000), Vec::new()).unwrap(),
        Gated(gate.clone()),
        loaded,
    );
    let flushes = || gate.flushes.load(std::sync::atomic::Ordering::SeqCst);
    let g = r.acquire("c", "n").unwrap().decision.generation();

    // A batch that moves no circuit is answered at once, without a wait.
    let s = r.report("n", &[failure("c", g)]).await.unwrap();
    assert_eq!((s.applied, s.transitions), (1, 0));
    assert_eq!(flushes(), 0);

    // A batch that trips the circuit is answered once the open state is
    // durable; it is in force before.
    let tripping = tokio::spawn({
        let r = r.clone();
        async move { r.report("n", &[failure("c", g)]).await }
    });
    gate.started.notified().await;
    assert!(
        !tripping.is_finished(),
        "a trip answered before it is durable"
    );
    assert_eq!(r.get("c").unwrap().snapshot.state, State::Open);
    gate.released.add_permits(1);
    assert_eq!(tripping.await.unwrap().unwrap().transitions, 1);
    assert_eq!(flushes(), 1);

    // So is an admin change; a failed wait is a storage error, and the
    // change is in force though it may not survive.
    gate.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let setting = tokio::spawn({
        let r = r.clone();
        async move {
            r.set_override("x", OverrideKind::ForcedOpen, "ops", "why", None)
                .await
        }
    });
    gate.started.notified().await;
    assert!(
        !setting.is_finished(),
        "an override answered before durable"
    );
    gate.released.add_permits(1);
    assert_eq!(
        setting.await.unwrap(),
        Err(CoreError::Storage("store write failed: disk full".into()))
    );
    assert!(r.get("x").unwrap().snapshot.override_.is_some());
    assert_eq!(flushes(), 2);
}

/// An admission that grants `left` new circuits in all, and notes every
/// count it is asked for.
#[derive(Debug)]
struct Budget {
    left: std::sync::Mutex<usize>,
    asked: std::sync::Mutex<Vec<usize>>,
}

impl Budget {
    fn new(left: usize) -> Self {
        Self {
            left: std::sync::Mutex::new(left),
            asked: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn asked(&self) -> Vec<usize> {
        self.asked.lock().unwrap().clone()
    }
}

impl Admission for Budget {
    type Refusal = &'static str;

    fn admit(&self, count: usize) -> Result<(), &'static str> {
        self.asked.lock().unwrap().push(count);
        let mut left = self.left.lock().unwrap();
        *left = left.checked_sub(count).ok_or("budget spent")?;
        Ok(())
    }
}

#[tokio::test]
async fn admission_is_asked_only_for_circuits_about_to_be_created() {
    let r = registry(spec(5, 60_000, 10_000), RegistryConfig::default());
    r.acquire("old", "n").unwrap();
    let b = Budget::new(2);
    // Existing circuits, and calls refused for another reason, cost nothing.
    r.acquire_admitted("old", "n", &b).unwrap();
    assert!(matches!(
        r.acquire_admitted("bad name", "n", &b),
        Err(Refused::Core(CoreError::InvalidName { .. }))
    ));
    r.set_override_admitted("old", OverrideKind::Disabled, "ops", "why", None, &b)
        .await
        .unwrap();
    assert!(matches!(
        r.set_policy_admitted("new", &PolicySpec::default(), "", "why", &b)
            .await,
        Err(Refused::Core(CoreError::InvalidArgument(_)))
    ));
    assert_eq!(b.asked(), Vec::<usize>::new());

    // Each creation is asked for once; a refusal creates nothing.
    r.acquire_admitted("a", "n", &b).unwrap();
    r.set_policy_admitted("b", &PolicySpec::default(), "ops", "why", &b)
        .await
        .unwrap();
    assert_eq!(
        r.acquire_admitted("c", "n", &b),
        Err(Refused::Admission("budget spent"))
    );
    assert_eq!(
        r.set_override_admitted("d", OverrideKind::ForcedOpen, "ops", "why", None, &b)
            .await,
        Err(Refused::Admission("budget spent"))
    );
    assert_eq!(b.asked(), [1, 1, 1, 1]);

    // A watch asks once for all of its missing names, and creates none of
    // them when refused.
    let w = Budget::new(2);
    let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let err = r
        .watch_admitted(&names(&["a", "x", "y", "z"]), &w)
        .unwrap_err();
    assert_eq!(err, Refused::Admission("budget spent"));
    for name in ["c", "d", "x", "y", "z"] {
        assert!(r.get(name).is_err(), "{name} was created");
    }
    let _sub = r.watch_admitted(&names(&["a", "x", "x", "y"]), &w).unwrap();
    assert_eq!(w.asked(), [3, 2], "duplicates and existing names are free");
    assert!(r.get("x").is_ok() && r.get("y").is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creators_pay_for_a_circuit_once() {
    let r = registry(spec(5, 60_000, 10_000), RegistryConfig::default());
    let b = Arc::new(Budget::new(1000));
    let barrier = Arc::new(Barrier::new(32));
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let (r, b, barrier) = (r.clone(), b.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                r.acquire_admitted("shared", &format!("node-{i}"), &*b)
                    .unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(b.asked(), [1], "only the creator pays");
    assert_eq!(r.stats().created, 1);
}

/// What operators see serializes in the HTTP API's shape: the keys below
/// are the ones its JSON has always had.
#[tokio::test(start_paused = true)]
async fn snapshots_and_details_serialize_as_operators_see_them() {
    let r = registry(spec(2, 60_000, 10_000), RegistryConfig::default());
    trip(&r, "c", 2).await;
    let open = serde_json::to_value(r.get("c").unwrap().snapshot).unwrap();
    assert_eq!(open["open_remaining_ms"], 60_000);
    r.set_override(
        "c",
        OverrideKind::ForcedOpen,
        "ops",
        "why",
        Some(Duration::from_millis(1500)),
    )
    .await
    .unwrap();
    let detail = r.get("c").unwrap();
    let json = serde_json::to_value(&detail).unwrap();
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&json),
        [
            "admin_policy",
            "counters",
            "deleted",
            "generation",
            "history",
            "name",
            "open_remaining_ms",
            "override",
            "policy",
            "policy_version",
            "state"
        ]
    );
    assert_eq!(json["name"], "c");
    assert_eq!(json["state"], "open");
    assert_eq!(
        json["override"],
        serde_json::json!({
            "kind": "forced_open",
            "reason": "why",
            "actor": "ops",
            "expires_in_ms": 1500,
        })
    );
    assert_eq!(json["admin_policy"], serde_json::Value::Null);
    assert_eq!(json["policy"]["consecutive_failures"], 2);
    assert_eq!(json["counters"]["total_failures"], 2);
    assert_eq!(
        keys(&json["history"][0]),
        ["age_ms", "cause", "from", "generation", "to"]
    );
    assert_eq!(json["history"][1]["cause"], "consecutive_failures");

    let snapshot = serde_json::to_value(&detail.snapshot).unwrap();
    let mut without_detail = json.as_object().unwrap().clone();
    for k in ["admin_policy", "counters", "history", "policy"] {
        without_detail.remove(k);
    }
    assert_eq!(snapshot, serde_json::Value::Object(without_detail));
}
