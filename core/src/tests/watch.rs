//! Watch tests: resync of a lagging watcher, watching everything.

use super::*;

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
async fn a_snapshot_is_paged_and_changes_made_meanwhile_follow_its_last_page() {
    let r = registry(spec(2, 60_000, 10_000), RegistryConfig::default());
    for i in 0..2_500 {
        r.acquire(&format!("c{i:05}"), "").unwrap();
    }
    let mut sub = r.watch(&[]).unwrap();
    let page = |p: Option<WatchPage>| match p {
        Some(WatchPage {
            update: WatchUpdate::Resync(s),
            last,
        }) => (s, last),
        other => panic!("expected a snapshot page, got {other:?}"),
    };
    let (first, last) = page(sub.next_page(1_000).await);
    assert_eq!((first.len(), last), (1_000, false));
    assert_eq!(&*first[0].name, "c00000");
    // A change and a new circuit while the snapshot is paged out.
    trip(&r, "c02400", 2).await;
    r.acquire("zz-new", "").unwrap();
    let (second, last) = page(sub.next_page(1_000).await);
    assert_eq!((second.len(), last), (1_000, false));
    assert_eq!(&*second[0].name, "c01000");
    let (third, last) = page(sub.next_page(1_000).await);
    // The circuits that existed when it began, read when paged: the trip
    // is in it already.
    assert_eq!((third.len(), last), (500, true));
    let tripped = third.iter().find(|s| &*s.name == "c02400").unwrap();
    assert_eq!(tripped.state, State::Open);
    // Then the changes, in order.
    let changed = next_changed(&mut sub).await;
    let names: Vec<&str> = changed.iter().map(|s| &*s.name).collect();
    assert_eq!(names, ["c02400", "zz-new"]);
}

#[tokio::test]
async fn next_gathers_a_paged_snapshot_whole() {
    let r = registry(spec(2, 60_000, 10_000), RegistryConfig::default());
    for i in 0..3_000 {
        r.acquire(&format!("c{i:05}"), "").unwrap();
    }
    let mut sub = r.watch(&[]).unwrap();
    let all = initial(&mut sub).await;
    assert_eq!(all.len(), 3_000);
    assert!(all.windows(2).all(|w| w[0].name < w[1].name));
}
