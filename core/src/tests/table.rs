//! Circuit-table tests: the deadline driver on a paused clock, the exact
//! circuit cap, eviction, the configured policy of a new circuit, and the
//! size of a circuit.

use super::*;

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
            operator_reserve: 0,
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

#[tokio::test]
async fn operators_keep_headroom_when_the_data_plane_fills_the_cap() {
    let r = registry(
        PolicySpec::default(),
        RegistryConfig {
            max_circuits: 20,
            operator_reserve: 5,
            ..Default::default()
        },
    );
    // A tenth of the cap at most: 2 of 20 are the operators'.
    for i in 0..18 {
        r.acquire(&format!("d{i}"), "").unwrap();
    }
    let cap = CoreError::TooManyCircuits { limit: 18 };
    assert_eq!(r.acquire("more", "").unwrap_err(), cap);
    assert_eq!(r.watch(&["more".into()]).unwrap_err(), cap);
    r.set_override("ops-1", OverrideKind::ForcedOpen, "ops", "why", None)
        .await
        .unwrap();
    r.set_policy("ops-2", &PolicySpec::default(), "ops", "why")
        .await
        .unwrap();
    assert_eq!(r.len(), 20);
    // The data plane still uses what operators created.
    assert!(r.acquire("ops-2", "").is_ok());
    let full = CoreError::TooManyCircuits { limit: 20 };
    assert_eq!(
        r.set_override("ops-3", OverrideKind::ForcedOpen, "ops", "why", None)
            .await
            .unwrap_err(),
        full
    );
}

#[tokio::test(start_paused = true)]
async fn eviction_removes_idle_closed_plain_circuits_even_watched_ones() {
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
    let mut sub = r.watch(&["watched".into()]).unwrap();
    assert!(matches!(sub.next().await, Some(WatchUpdate::Resync(s)) if s.len() == 1));
    let idle_generation = r.get("idle").unwrap().snapshot.generation;

    assert_eq!(r.evict_idle(), 0, "nothing is idle yet");
    tokio::time::advance(Duration::from_secs(600)).await;
    r.acquire("recent", "").unwrap();
    // A watch does not pin a circuit nothing else holds.
    assert_eq!(r.evict_idle(), 2);
    let mut left: Vec<_> = r
        .list(&ListQuery::default())
        .unwrap()
        .circuits
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    left.sort();
    assert_eq!(left, ["admin", "forced", "open", "recent", "shadow"]);

    // Created again, it is announced to its watcher, generations going on.
    let watched_again = r.acquire("watched", "").unwrap().decision.generation();
    match sub.next().await {
        Some(WatchUpdate::Changed(s)) => {
            assert_eq!(s.len(), 1);
            assert_eq!(&*s[0].name, "watched");
            assert_eq!(s[0].generation, watched_again);
        }
        other => panic!("expected the re-creation, got {other:?}"),
    }
    drop(sub);
    tokio::time::advance(Duration::from_secs(600)).await;
    assert_eq!(r.evict_idle(), 2, "watched and recent are idle now");
    assert_eq!(r.len(), 4);
    assert_eq!(r.stats().evicted, 4);

    // A circuit created again never goes back in generations.
    let again = r.acquire("idle", "").unwrap().decision.generation();
    assert!(again > idle_generation);
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
