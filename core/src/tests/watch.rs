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
