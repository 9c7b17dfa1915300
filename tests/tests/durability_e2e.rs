//! Durability over real gRPC: what an admin call acknowledged, and every
//! open circuit, survives the coordinator being stopped without a shutdown
//! and started again on the same store.

use breakerd_e2e::{TestServer, config};
use breakerd_proto::v1 as pb;

fn store_config(dir: &std::path::Path) -> breakerd::config::Config {
    config(&format!(
        "[store]\npath = {:?}\n[defaults]\nconsecutive_failures = 2\nopen_base_ms = 60000\nopen_jitter = 0.0\n",
        dir.display().to_string()
    ))
}

async fn trip(server: &TestServer, name: &str) -> u64 {
    let mut breaker = server.breaker();
    let granted = breaker
        .acquire(pb::AcquireRequest {
            circuit: name.into(),
            node_id: "n1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let failure = pb::OutcomeReport {
        circuit: name.into(),
        generation: granted.generation,
        lease_id: 0,
        outcome: pb::Outcome::Failure as i32,
        latency_us: 10,
        age_us: 0,
    };
    breaker
        .report(pb::ReportRequest {
            node_id: "n1".into(),
            outcomes: vec![failure.clone(), failure],
        })
        .await
        .unwrap();
    granted.generation
}

#[tokio::test]
async fn acknowledged_changes_and_open_circuits_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(store_config(dir.path())).await;
    let first_generation = trip(&server, "payments").await;
    let mut admin = server.admin();
    admin
        .set_override(pb::SetOverrideRequest {
            name: "recs:v2".into(),
            kind: pb::OverrideKind::ForcedOpen as i32,
            actor: "oncall".into(),
            reason: "incident 12".into(),
            expires_in_ms: 0,
        })
        .await
        .unwrap();
    admin
        .set_policy(pb::SetPolicyRequest {
            name: "db-primary".into(),
            policy: Some(pb::Policy {
                consecutive_failures: Some(9),
                ..Default::default()
            }),
            actor: "oncall".into(),
            reason: "flappy".into(),
        })
        .await
        .unwrap();
    server.crash().await;

    let server = TestServer::start_with(store_config(dir.path())).await;
    let mut admin = server.admin();
    let get = |name: &str| pb::GetCircuitRequest { name: name.into() };

    let payments = admin
        .get_circuit(get("payments"))
        .await
        .unwrap()
        .into_inner();
    let snap = payments.snapshot.unwrap();
    assert_eq!(
        snap.state(),
        pb::CircuitState::Open,
        "an open circuit stays open"
    );
    assert!(
        snap.open_remaining_ms > 50_000 && snap.open_remaining_ms <= 60_000,
        "{}",
        snap.open_remaining_ms
    );
    assert!(
        snap.generation > first_generation,
        "generations never go back"
    );
    let rejected = server
        .breaker()
        .acquire(pb::AcquireRequest {
            circuit: "payments".into(),
            node_id: "n2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!rejected.allowed);

    let recs = admin
        .get_circuit(get("recs:v2"))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let over = recs.r#override.expect("override survives");
    assert_eq!(
        (over.kind(), over.actor.as_str(), over.reason.as_str()),
        (pb::OverrideKind::ForcedOpen, "oncall", "incident 12")
    );

    let db = admin
        .get_circuit(get("db-primary"))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(db.policy.unwrap().consecutive_failures, Some(9));

    let audit = admin
        .list_audit_events(pb::ListAuditEventsRequest {
            circuit: String::new(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let actions: Vec<_> = audit
        .iter()
        .map(|e| (e.action.as_str(), e.circuit.as_str()))
        .collect();
    assert_eq!(
        actions,
        [("set_policy", "db-primary"), ("set_override", "recs:v2")]
    );
    assert!(
        audit[1].after_json.contains("forced_open"),
        "{}",
        audit[1].after_json
    );
    assert!(
        audit
            .iter()
            .all(|e| e.actor == "oncall" && e.at_unix_ms > 0)
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_old_format_store_is_imported_once_with_its_valid_records() {
    use breakerd_core::store::record::{Record, encode};
    use breakerd_core::store::{CircuitRecord, generation_floor};
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str, generation: u64| CircuitRecord {
        name: name.into(),
        state: breakerd_policy::State::Open,
        generation,
        open_until_ms: Some(u64::MAX / 2),
        consecutive_trips: 1,
        admin_policy: None,
        override_: None,
        policy_version: 1,
    };
    let mut log = encode(&Record::Epoch(3));
    log.push_str(&encode(&Record::Circuit(open(
        "kept",
        generation_floor(3) + 5,
    ))));
    // A torn write at the end of the old log.
    log.push_str("0badc0de {\"circuit\":{\"na");
    std::fs::write(dir.path().join("state.log"), &log).unwrap();

    let server = TestServer::start_with(store_config(dir.path())).await;
    let kept = server
        .admin()
        .get_circuit(pb::GetCircuitRequest {
            name: "kept".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(kept.state(), pb::CircuitState::Open);
    assert!(
        kept.generation > generation_floor(3) + 5,
        "{}",
        kept.generation
    );
    server.stop().await.unwrap();
    assert!(!dir.path().join("state.log").exists(), "moved aside");
    let imported: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("imported-"))
        .collect();
    assert_eq!(imported.len(), 1, "the old files are kept, once");
    assert_eq!(
        std::fs::read_to_string(imported[0].path().join("state.log")).unwrap(),
        log,
        "kept as they were"
    );

    // The next start reads the database only.
    let server = TestServer::start_with(store_config(dir.path())).await;
    let again = server
        .admin()
        .get_circuit(pb::GetCircuitRequest {
            name: "kept".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(again.state(), pb::CircuitState::Open);
    assert!(again.generation > kept.generation, "the epoch moved on");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_acknowledged_trip_survives_an_immediate_crash() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(store_config(dir.path())).await;
    // The Report that trips the circuit is the last thing acknowledged.
    trip(&server, "tripped").await;
    server.crash().await;

    let server = TestServer::start_with(store_config(dir.path())).await;
    let snap = server
        .admin()
        .get_circuit(pb::GetCircuitRequest {
            name: "tripped".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(snap.state(), pb::CircuitState::Open);
    server.stop().await.unwrap();
}
