//! End-to-end tests of the coordinator over real gRPC on a loopback port:
//! watch pushes, precise status codes for bad input (with no state change),
//! the circuit cap, health through start and shutdown, reflection and trace
//! ids. Every wait has a deadline; nothing sleeps for a state change.

use breakerd_e2e::{TestServer, config, within};
use breakerd_proto::v1::{self as pb};
use tonic::{Code, Request, Status, Streaming};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse,
};

fn assert_status(result: Result<impl std::fmt::Debug, Status>, code: Code, needle: &str) {
    match result {
        Ok(v) => panic!("expected {code:?} containing {needle:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "{s:?}");
            assert!(
                s.message().contains(needle),
                "{:?} does not contain {needle:?}",
                s.message()
            );
        }
    }
}

async fn next_event(stream: &mut Streaming<pb::WatchEvent>) -> pb::WatchEvent {
    within("a watch event", stream.message())
        .await
        .expect("watch stream failed")
        .expect("watch stream ended")
}

/// The first snapshot of `name` (among later events) that satisfies `pred`.
async fn wait_snapshot(
    stream: &mut Streaming<pb::WatchEvent>,
    name: &str,
    pred: impl Fn(&pb::CircuitSnapshot) -> bool,
) -> pb::CircuitSnapshot {
    loop {
        let ev = next_event(stream).await;
        if let Some(s) = ev
            .circuits
            .into_iter()
            .rev()
            .find(|s| s.name == name && pred(s))
        {
            return s;
        }
    }
}

async fn watch(
    server: &TestServer,
    names: &[&str],
) -> (Streaming<pb::WatchEvent>, Vec<pb::CircuitSnapshot>) {
    let req = pb::WatchRequest {
        circuits: names.iter().map(|n| n.to_string()).collect(),
        node_id: "watcher-1".into(),
    };
    let mut stream = server
        .breaker()
        .watch(req)
        .await
        .expect("watch")
        .into_inner();
    let first = next_event(&mut stream).await;
    assert!(first.initial, "the first event must be initial: {first:?}");
    (stream, first.circuits)
}

fn outcome(circuit: &str, generation: u64, outcome: pb::Outcome) -> pb::OutcomeReport {
    pb::OutcomeReport {
        circuit: circuit.into(),
        generation,
        lease_id: 0,
        outcome: outcome.into(),
        latency_us: 1500,
        age_us: 0,
    }
}

async fn list_names(server: &TestServer) -> (u64, Vec<String>) {
    let page = server
        .admin()
        .list_circuits(pb::ListCircuitsRequest::default())
        .await
        .expect("list")
        .into_inner();
    (
        page.total_matching,
        page.circuits.into_iter().map(|c| c.name).collect(),
    )
}

async fn detail(server: &TestServer, name: &str) -> pb::CircuitDetail {
    server
        .admin()
        .get_circuit(pb::GetCircuitRequest { name: name.into() })
        .await
        .expect("get")
        .into_inner()
}

#[tokio::test]
async fn watch_sees_five_failures_trip_the_circuit() {
    let server = TestServer::start().await;
    let (mut stream, initial) = watch(&server, &["payments"]).await;
    assert_eq!(initial.len(), 1);
    let closed = &initial[0];
    assert_eq!(closed.name, "payments");
    assert_eq!(closed.state(), pb::CircuitState::Closed);
    assert_eq!(closed.policy.and_then(|p| p.consecutive_failures), Some(5));

    let mut breaker = server.breaker();
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        let d = breaker
            .acquire(pb::AcquireRequest {
                circuit: "payments".into(),
                node_id: "web-1".into(),
            })
            .await
            .expect("acquire")
            .into_inner();
        assert!(d.allowed);
        assert_eq!(d.generation, closed.generation);
        outcomes.push(outcome("payments", d.generation, pb::Outcome::Failure));
    }
    let res = breaker
        .report(pb::ReportRequest {
            node_id: "web-1".into(),
            outcomes,
        })
        .await
        .expect("report")
        .into_inner();
    assert_eq!((res.applied, res.stale, res.unknown), (5, 0, 0));

    let open = wait_snapshot(&mut stream, "payments", |s| {
        s.state() == pb::CircuitState::Open
    })
    .await;
    assert!(open.generation > closed.generation, "{open:?}");
    assert!(
        open.open_remaining_ms > 0 && open.open_remaining_ms <= 66_000,
        "{open:?}"
    );

    let d = breaker
        .acquire(pb::AcquireRequest {
            circuit: "payments".into(),
            node_id: "web-2".into(),
        })
        .await
        .expect("acquire")
        .into_inner();
    assert!(!d.allowed);
    assert_eq!(d.reject_reason(), pb::RejectReason::Open);
    assert_eq!(d.generation, open.generation);
    assert!(d.retry_after_ms > 0);

    // A late outcome from the closed generation is stale and changes nothing.
    let res = breaker
        .report(pb::ReportRequest {
            node_id: "web-1".into(),
            outcomes: vec![outcome("payments", closed.generation, pb::Outcome::Success)],
        })
        .await
        .expect("report")
        .into_inner();
    assert_eq!((res.applied, res.stale), (0, 1));
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn watch_sees_admin_overrides() {
    let server = TestServer::start().await;
    let (mut stream, initial) = watch(&server, &["recs:v2"]).await;
    let g0 = initial[0].generation;
    let mut admin = server.admin();
    let d = admin
        .set_override(pb::SetOverrideRequest {
            name: "recs:v2".into(),
            kind: pb::OverrideKind::ForcedOpen.into(),
            actor: "alice".into(),
            reason: "incident 42".into(),
            expires_in_ms: 0,
        })
        .await
        .expect("set override")
        .into_inner();
    let forced = d
        .snapshot
        .and_then(|s| s.r#override)
        .expect("override in the answer");
    assert_eq!(forced.kind(), pb::OverrideKind::ForcedOpen);

    let s = wait_snapshot(&mut stream, "recs:v2", |s| s.r#override.is_some()).await;
    let ov = s.r#override.clone().unwrap_or_default();
    assert_eq!(ov.kind(), pb::OverrideKind::ForcedOpen);
    assert_eq!(
        (ov.actor.as_str(), ov.reason.as_str(), ov.expires_in_ms),
        ("alice", "incident 42", 0)
    );
    assert!(s.generation > g0);

    let d = server
        .breaker()
        .acquire(pb::AcquireRequest {
            circuit: "recs:v2".into(),
            node_id: String::new(),
        })
        .await
        .expect("acquire")
        .into_inner();
    assert!(!d.allowed);
    assert_eq!(d.reject_reason(), pb::RejectReason::ForcedOpen);

    admin
        .clear_override(pb::ClearOverrideRequest {
            name: "recs:v2".into(),
            actor: "alice".into(),
            reason: "fixed".into(),
        })
        .await
        .expect("clear override");
    let cleared = wait_snapshot(&mut stream, "recs:v2", |s| s.r#override.is_none()).await;
    assert!(cleared.generation > s.generation);

    admin
        .delete_circuit(pb::DeleteCircuitRequest {
            name: "recs:v2".into(),
            actor: "alice".into(),
            reason: "cleanup".into(),
        })
        .await
        .expect("delete");
    wait_snapshot(&mut stream, "recs:v2", |s| s.deleted).await;
}

#[tokio::test]
async fn bad_names_are_invalid_argument_and_create_nothing() {
    let server = TestServer::start().await;
    let mut breaker = server.breaker();
    let long = "x".repeat(201);
    for bad in ["", "pay ments", "café", "a*", long.as_str()] {
        let r = breaker
            .acquire(pb::AcquireRequest {
                circuit: bad.into(),
                node_id: "web-1".into(),
            })
            .await;
        assert_status(r, Code::InvalidArgument, "circuit name");
    }
    let r = breaker
        .acquire(pb::AcquireRequest {
            circuit: "ok".into(),
            node_id: "web 1".into(),
        })
        .await;
    assert_status(r, Code::InvalidArgument, "node id");
    let r = breaker
        .watch(pb::WatchRequest {
            circuits: vec!["good".into(), "b@d".into()],
            node_id: String::new(),
        })
        .await;
    assert_status(r, Code::InvalidArgument, "circuits[1]");
    let r = server
        .admin()
        .set_policy(pb::SetPolicyRequest {
            name: "bad name".into(),
            policy: Some(pb::Policy::default()),
            actor: "alice".into(),
            reason: "r".into(),
        })
        .await;
    assert_status(r, Code::InvalidArgument, "circuit name");
    assert_eq!(list_names(&server).await, (0, vec![]));

    // One bad name refuses the whole batch: the good outcome before it is
    // not applied either.
    let g = breaker
        .acquire(pb::AcquireRequest {
            circuit: "db".into(),
            node_id: "web-1".into(),
        })
        .await
        .expect("acquire")
        .into_inner()
        .generation;
    let r = breaker
        .report(pb::ReportRequest {
            node_id: "web-1".into(),
            outcomes: vec![
                outcome("db", g, pb::Outcome::Failure),
                outcome("d b", g, pb::Outcome::Failure),
            ],
        })
        .await;
    assert_status(r, Code::InvalidArgument, "outcomes[1].circuit");
    let counters = detail(&server, "db").await.counters.unwrap_or_default();
    assert_eq!(
        (counters.total_failures, counters.consecutive_failures),
        (0, 0)
    );
    assert_eq!(list_names(&server).await, (1, vec!["db".to_owned()]));
}

#[tokio::test]
async fn bad_enums_are_invalid_argument_and_change_nothing() {
    let server = TestServer::start().await;
    let mut breaker = server.breaker();
    let g = breaker
        .acquire(pb::AcquireRequest {
            circuit: "db".into(),
            node_id: "web-1".into(),
        })
        .await
        .expect("acquire")
        .into_inner()
        .generation;
    let mut unspecified = outcome("db", g, pb::Outcome::Failure);
    unspecified.outcome = pb::Outcome::Unspecified.into();
    let r = breaker
        .report(pb::ReportRequest {
            node_id: "web-1".into(),
            outcomes: vec![outcome("db", g, pb::Outcome::Failure), unspecified],
        })
        .await;
    assert_status(r, Code::InvalidArgument, "outcomes[1].outcome");
    let mut unknown = outcome("db", g, pb::Outcome::Failure);
    unknown.outcome = 42;
    let r = breaker
        .report(pb::ReportRequest {
            node_id: "web-1".into(),
            outcomes: vec![unknown],
        })
        .await;
    assert_status(r, Code::InvalidArgument, "unknown Outcome 42");
    let counters = detail(&server, "db").await.counters.unwrap_or_default();
    assert_eq!(counters.total_failures, 0);

    let mut admin = server.admin();
    let before = detail(&server, "db").await;
    for (kind, needle) in [
        (pb::OverrideKind::None as i32, "OVERRIDE_KIND_NONE"),
        (9, "unknown OverrideKind 9"),
    ] {
        let r = admin
            .set_override(pb::SetOverrideRequest {
                name: "db".into(),
                kind,
                actor: "alice".into(),
                reason: "r".into(),
                expires_in_ms: 0,
            })
            .await;
        assert_status(r, Code::InvalidArgument, needle);
    }
    let r = admin
        .list_circuits(pb::ListCircuitsRequest {
            state: 7,
            ..Default::default()
        })
        .await;
    assert_status(r, Code::InvalidArgument, "state");
    assert_eq!(detail(&server, "db").await.snapshot, before.snapshot);
}

#[tokio::test]
async fn bad_policy_is_invalid_argument_and_keeps_the_old_policy() {
    let server = TestServer::start().await;
    let mut admin = server.admin();
    let set = |policy: pb::Policy| pb::SetPolicyRequest {
        name: "payments".into(),
        policy: Some(policy),
        actor: "alice".into(),
        reason: "tuning".into(),
    };
    let d = admin
        .set_policy(set(pb::Policy {
            consecutive_failures: Some(3),
            ..Default::default()
        }))
        .await
        .expect("valid policy")
        .into_inner();
    let good = d.snapshot.expect("snapshot");
    assert_eq!(good.policy.and_then(|p| p.consecutive_failures), Some(3));

    let r = admin
        .set_policy(set(pb::Policy {
            half_open_max_probes: Some(0),
            ..Default::default()
        }))
        .await;
    assert_status(
        r,
        Code::InvalidArgument,
        "policy.half_open_max_probes: must be within 1..=1000, not 0",
    );
    let r = admin
        .set_policy(set(pb::Policy {
            window_kind: Some(9),
            ..Default::default()
        }))
        .await;
    assert_status(r, Code::InvalidArgument, "policy.window_kind");
    let r = admin
        .set_policy(set(pb::Policy {
            failure_rate_threshold: Some(f64::NAN),
            ..Default::default()
        }))
        .await;
    assert_status(r, Code::InvalidArgument, "policy.failure_rate_threshold");
    let r = admin
        .set_policy(pb::SetPolicyRequest {
            policy: None,
            ..set(pb::Policy::default())
        })
        .await;
    assert_status(r, Code::InvalidArgument, "policy");
    let r = admin
        .set_policy(pb::SetPolicyRequest {
            actor: String::new(),
            ..set(pb::Policy::default())
        })
        .await;
    assert_status(r, Code::InvalidArgument, "actor");

    let now = detail(&server, "payments")
        .await
        .snapshot
        .expect("snapshot");
    assert_eq!(now.policy, good.policy);
    assert_eq!(now.policy_version, good.policy_version);

    // UNSPECIFIED enums mean "unchanged".
    let d = admin
        .set_policy(set(pb::Policy {
            window_kind: Some(pb::WindowKind::Unspecified.into()),
            degraded_mode: Some(pb::DegradedMode::FailOpen.into()),
            ..Default::default()
        }))
        .await
        .expect("valid policy")
        .into_inner();
    let p = d.snapshot.and_then(|s| s.policy).expect("policy");
    assert_eq!(p.window_kind(), pb::WindowKind::Count);
    assert_eq!(p.degraded_mode(), pb::DegradedMode::FailOpen);
    assert_eq!(p.consecutive_failures, Some(3));
}

/// Values that would leave a rule unable to fire (or an override that
/// would hold for years) are refused naming the field and its range, and
/// change nothing: no circuit is created, and an existing one keeps its
/// policy, version, generation and override.
#[tokio::test]
async fn out_of_bounds_policy_values_are_invalid_argument_and_change_nothing() {
    let server = TestServer::start().await;
    let mut admin = server.admin();
    let set = |name: &str, policy: pb::Policy| pb::SetPolicyRequest {
        name: name.into(),
        policy: Some(policy),
        actor: "alice".into(),
        reason: "tuning".into(),
    };
    // On a circuit that does not exist yet: refused before it is created.
    let r = admin
        .set_policy(set(
            "fresh",
            pb::Policy {
                slow_call_rate_threshold: Some(0.5),
                slow_call_duration_ms: Some(u64::MAX),
                ..Default::default()
            },
        ))
        .await;
    assert_status(
        r,
        Code::InvalidArgument,
        "policy.slow_call_duration_ms: must be within 1..=3600000 ms, not 18446744073709551615",
    );
    let r = admin
        .get_circuit(pb::GetCircuitRequest {
            name: "fresh".into(),
        })
        .await;
    assert_status(r, Code::NotFound, "fresh");

    // On an existing one: its policy, version and generation stay.
    admin
        .set_policy(set(
            "payments",
            pb::Policy {
                consecutive_failures: Some(3),
                ..Default::default()
            },
        ))
        .await
        .expect("valid policy");
    let before = detail(&server, "payments").await;
    let time = pb::WindowKind::Time as i32;
    let cases = [
        (
            pb::Policy {
                window_buckets: Some(u32::MAX),
                ..Default::default()
            },
            "policy.window_buckets: must be within 1..=600, not 4294967295",
        ),
        (
            pb::Policy {
                window_kind: Some(time),
                window_size: Some(60_000),
                failure_rate_threshold: Some(0.5),
                minimum_calls: Some(u32::MAX),
                ..Default::default()
            },
            "policy.minimum_calls: must be within 1..=1000000, not 4294967295",
        ),
        (
            pb::Policy {
                window_size: Some(10),
                minimum_calls: Some(5),
                quorum_nodes: Some(11),
                ..Default::default()
            },
            "policy.quorum_nodes: must be within 0..=10",
        ),
    ];
    for (policy, needle) in cases {
        let r = admin.set_policy(set("payments", policy)).await;
        assert_status(r, Code::InvalidArgument, needle);
    }
    let r = admin
        .set_override(pb::SetOverrideRequest {
            name: "payments".into(),
            kind: pb::OverrideKind::ForcedOpen.into(),
            actor: "alice".into(),
            reason: "maintenance".into(),
            expires_in_ms: 31 * 24 * 3600 * 1000,
        })
        .await;
    assert_status(
        r,
        Code::InvalidArgument,
        "expires_in_ms: must be within 1..=2592000000",
    );
    let after = detail(&server, "payments").await;
    assert_eq!(after.snapshot, before.snapshot);
}

#[tokio::test]
async fn unknown_circuits_are_not_found() {
    let server = TestServer::start().await;
    let mut admin = server.admin();
    let (actor, reason) = (String::from("alice"), String::from("r"));
    assert_status(
        admin
            .get_circuit(pb::GetCircuitRequest {
                name: "nope".into(),
            })
            .await,
        Code::NotFound,
        "nope",
    );
    assert_status(
        admin
            .reset_circuit(pb::ResetCircuitRequest {
                name: "nope".into(),
                actor: actor.clone(),
                reason: reason.clone(),
            })
            .await,
        Code::NotFound,
        "nope",
    );
    assert_status(
        admin
            .delete_circuit(pb::DeleteCircuitRequest {
                name: "nope".into(),
                actor: actor.clone(),
                reason: reason.clone(),
            })
            .await,
        Code::NotFound,
        "nope",
    );
    assert_status(
        admin
            .clear_override(pb::ClearOverrideRequest {
                name: "nope".into(),
                actor,
                reason,
            })
            .await,
        Code::NotFound,
        "nope",
    );
    assert_eq!(list_names(&server).await, (0, vec![]));

    // Outcomes for unknown circuits are counted, and create nothing.
    let res = server
        .breaker()
        .report(pb::ReportRequest {
            node_id: String::new(),
            outcomes: vec![outcome("nope", 1, pb::Outcome::Failure)],
        })
        .await
        .expect("report")
        .into_inner();
    assert_eq!(res.unknown, 1);
    assert_eq!(list_names(&server).await, (0, vec![]));
}

#[tokio::test]
async fn the_circuit_cap_is_resource_exhausted() {
    let server = TestServer::start_with(config(
        "[limits]\nmax_circuits = 3\n[server]\nshutdown_drain_ms = 2000\n",
    ))
    .await;
    let mut breaker = server.breaker();
    for name in ["a", "b", "c"] {
        breaker
            .acquire(pb::AcquireRequest {
                circuit: name.into(),
                node_id: String::new(),
            })
            .await
            .expect("under the cap");
    }
    let r = breaker
        .acquire(pb::AcquireRequest {
            circuit: "d".into(),
            node_id: String::new(),
        })
        .await;
    assert_status(r, Code::ResourceExhausted, "3");
    let r = server
        .admin()
        .set_override(pb::SetOverrideRequest {
            name: "e".into(),
            kind: pb::OverrideKind::ForcedOpen.into(),
            actor: "alice".into(),
            reason: "r".into(),
            expires_in_ms: 0,
        })
        .await;
    assert_status(r, Code::ResourceExhausted, "too many circuits");
    let r = breaker
        .watch(pb::WatchRequest {
            circuits: vec!["a".into(), "f".into()],
            node_id: String::new(),
        })
        .await;
    assert_status(r, Code::ResourceExhausted, "too many circuits");
    // Existing circuits still work.
    breaker
        .acquire(pb::AcquireRequest {
            circuit: "a".into(),
            node_id: String::new(),
        })
        .await
        .expect("existing circuit");
    assert_eq!(
        list_names(&server).await,
        (3, vec!["a".into(), "b".into(), "c".into()])
    );
}

#[tokio::test]
async fn report_stream_answers_each_batch_and_ends_on_a_bad_one() {
    let server = TestServer::start().await;
    let mut breaker = server.breaker();
    let g = breaker
        .acquire(pb::AcquireRequest {
            circuit: "db".into(),
            node_id: "web-1".into(),
        })
        .await
        .expect("acquire")
        .into_inner()
        .generation;
    let mut bad = outcome("db", g, pb::Outcome::Failure);
    bad.outcome = pb::Outcome::Unspecified.into();
    let batches = vec![
        pb::ReportRequest {
            node_id: "web-1".into(),
            outcomes: vec![outcome("db", g, pb::Outcome::Failure)],
        },
        pb::ReportRequest {
            node_id: "web-1".into(),
            outcomes: vec![
                outcome("db", g, pb::Outcome::Success),
                outcome("db", g + 100, pb::Outcome::Failure),
            ],
        },
        pb::ReportRequest {
            node_id: "web-1".into(),
            outcomes: vec![bad],
        },
        pb::ReportRequest {
            node_id: "web-1".into(),
            outcomes: vec![outcome("db", g, pb::Outcome::Failure)],
        },
    ];
    let mut responses = breaker
        .report_stream(tokio_stream::iter(batches))
        .await
        .expect("report stream")
        .into_inner();
    let first = within("first response", responses.message())
        .await
        .expect("ok")
        .expect("a response");
    assert_eq!((first.applied, first.stale), (1, 0));
    let second = within("second response", responses.message())
        .await
        .expect("ok")
        .expect("a response");
    assert_eq!((second.applied, second.stale), (1, 1));
    let third = within("the error", responses.message()).await;
    assert_status(third, Code::InvalidArgument, "outcomes[0].outcome");
    let c = detail(&server, "db").await.counters.unwrap_or_default();
    // The two good batches were applied, the bad one and the one after it were not.
    assert_eq!(
        (c.total_failures, c.total_successes, c.total_stale),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn health_is_serving_after_start_and_not_serving_on_shutdown() {
    let mut server = TestServer::start().await;
    let mut health = server.health();
    for service in ["", "breakerd.v1.Breaker", "breakerd.v1.Admin"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("check")
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }
    let mut statuses = health
        .watch(HealthCheckRequest {
            service: "breakerd.v1.Breaker".into(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let first = within("health", statuses.message())
        .await
        .expect("ok")
        .expect("a status");
    assert_eq!(first.status(), ServingStatus::Serving);
    let (mut watch_stream, _) = watch(&server, &["payments"]).await;

    server.begin_shutdown();
    let next = within("NOT_SERVING", statuses.message())
        .await
        .expect("ok")
        .expect("a status");
    assert_eq!(next.status(), ServingStatus::NotServing);
    // Long-lived streams end at once so the drain does not wait for them.
    let end = within("the watch to end", watch_stream.message()).await;
    assert_status(end, Code::Unavailable, "shutting down");
    // So does the health watch, once it has said NOT_SERVING.
    let end = within("the health watch to end", statuses.message()).await;
    assert_status(end, Code::Unavailable, "shutting down");
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn reflection_lists_the_services() {
    let server = TestServer::start().await;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = server
        .reflection()
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("reflection")
        .into_inner();
    let res = within("reflection answer", responses.message())
        .await
        .expect("ok")
        .expect("an answer");
    let Some(MessageResponse::ListServicesResponse(list)) = res.message_response else {
        panic!("unexpected answer {res:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "breakerd.v1.Breaker",
        "breakerd.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn trace_ids_are_echoed_or_generated() {
    let server = TestServer::start().await;
    let mut breaker = server.breaker();
    let acquire = || pb::AcquireRequest {
        circuit: "payments".into(),
        node_id: "web-1".into(),
    };

    let mut req = Request::new(acquire());
    req.metadata_mut()
        .insert("x-trace-id", "e2e-trace-1".parse().expect("ascii"));
    let res = breaker.acquire(req).await.expect("acquire");
    assert_eq!(
        res.metadata()
            .get("x-trace-id")
            .and_then(|v| v.to_str().ok()),
        Some("e2e-trace-1")
    );

    let mut req = Request::new(acquire());
    req.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .expect("ascii"),
    );
    let res = breaker.acquire(req).await.expect("acquire");
    assert_eq!(
        res.metadata()
            .get("x-trace-id")
            .and_then(|v| v.to_str().ok()),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );

    // Garbage is ignored and a fresh id is generated; errors carry it too.
    let mut req = Request::new(pb::AcquireRequest {
        circuit: "bad name".into(),
        node_id: String::new(),
    });
    req.metadata_mut().insert(
        "x-trace-id",
        "has spaces and {json}".parse().expect("ascii"),
    );
    let status = breaker.acquire(req).await.expect_err("bad name");
    let id = status
        .metadata()
        .get("x-trace-id")
        .and_then(|v| v.to_str().ok())
        .expect("an x-trace-id");
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
}

#[tokio::test]
async fn shutdown_drain_is_bounded_by_config() {
    let server = TestServer::start_with(config("[server]\nshutdown_drain_ms = 200\n")).await;
    // A reflection stream whose client never closes its side holds the
    // connection open past the drain; the server must stop anyway.
    let (requests, rx) = tokio::sync::mpsc::channel::<ServerReflectionRequest>(1);
    requests
        .send(ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        })
        .await
        .expect("queue a request");
    let mut responses = server
        .reflection()
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("reflection")
        .into_inner();
    within("reflection answer", responses.message())
        .await
        .expect("ok")
        .expect("an answer");
    let started = std::time::Instant::now();
    server
        .stop()
        .await
        .expect("stopped after the drain deadline");
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
    drop(requests);
}
