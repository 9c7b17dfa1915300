//! Admin tests: changes are checked, merged, published and audited.

use super::*;

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
async fn override_expiry_is_bounded_and_a_refused_one_creates_nothing() {
    use breakerd_policy::MAX_OVERRIDE_TTL;
    let r = registry(PolicySpec::default(), RegistryConfig::default());
    let ms = Duration::from_millis;
    for expires in [Duration::ZERO, MAX_OVERRIDE_TTL + ms(1), Duration::MAX] {
        match r
            .set_override("x", OverrideKind::ForcedOpen, "ops", "why", Some(expires))
            .await
        {
            Err(CoreError::InvalidArgument(msg)) => assert!(
                msg.starts_with("expires_in_ms: must be within 1..=2592000000")
                    && msg.ends_with(&format!("not {}", expires.as_millis())),
                "{msg}"
            ),
            other => panic!("{expires:?}: {other:?}"),
        }
        assert_eq!(r.len(), 0, "a refused override creates no circuit");
    }
    for expires in [ms(1), MAX_OVERRIDE_TTL] {
        let d = r
            .set_override("x", OverrideKind::ForcedOpen, "ops", "why", Some(expires))
            .await
            .unwrap();
        assert_eq!(d.snapshot.override_.unwrap().expires_in, Some(expires));
    }
}
