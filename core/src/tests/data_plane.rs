//! Data-plane tests: exactly one trip and exactly N probes under
//! concurrency, batches refused whole, unknown circuits, outcome ages.

use super::*;

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
