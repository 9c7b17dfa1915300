//! Query tests: pagination and filters, and the JSON operators see.

use super::*;

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
