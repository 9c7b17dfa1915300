//! Authentication end to end: a real coordinator serving TLS (and mutual
//! TLS) with a data-plane and an admin token, driven over real gRPC by the
//! generated clients and by `breakerd-client`.
//!
//! Certificates are made at test time with rcgen (a CA, a server
//! certificate for `localhost` / 127.0.0.1, client certificates); no private
//! key is committed.

use std::{net::IpAddr, path::Path, time::Duration};

use breakerd_client::{ClientTls, Coordinator, Error as ClientError, RefusalCode};
use breakerd_e2e::{TestServer, config, within};
use breakerd_proto::v1::{
    self as pb, AcquireRequest, GetCircuitRequest, OverrideKind, SetOverrideRequest, WatchRequest,
    admin_client::AdminClient, breaker_client::BreakerClient,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use tonic::{
    Code, Request, Status,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

const DATA: &str = "data-token-e2e-0123456789";
const ADMIN: &str = "admin-token-e2e-0123456789";
const WRONG: &str = "wrong-token-e2e-0123456789";

/// A PEM certificate and its key.
struct Pair {
    cert: String,
    key: String,
}

/// A CA and what it signed, plus a second CA nobody trusts.
struct Pki {
    ca: String,
    server: Pair,
    client: Pair,
    /// Another node's certificate from the same CA.
    second_client: Pair,
    rogue_client: Pair,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, name: &str, server: bool) -> Pair {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    if server {
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    } else {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    let cert = params.signed_by(&key, issuer).unwrap();
    Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

fn pki() -> Pki {
    let ca_ = ca("breakerd test CA");
    let rogue = ca("somebody else's CA");
    Pki {
        ca: ca_.pem(),
        server: leaf(&ca_, "localhost", true),
        client: leaf(&ca_, "web-1", false),
        second_client: leaf(&ca_, "web-2", false),
        rogue_client: leaf(&rogue, "web-1", false),
    }
}

/// Writes the server's files into `dir` and returns the `[tls]` table.
fn tls_table(dir: &Path, pki: &Pki, mutual: bool) -> String {
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let cert = write("server.pem", &pki.server.cert);
    let key = write("server.key", &pki.server.key);
    let mut table = format!("[tls]\ncert_path = {cert:?}\nkey_path = {key:?}\n");
    if mutual {
        let ca = write("ca.pem", &pki.ca);
        table.push_str(&format!("client_ca_path = {ca:?}\n"));
    }
    table
}

fn client_tls(pki: &Pki) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost")
}

fn with_token<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut req = Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    req
}

async fn start(dir: &Path, pki: &Pki, mutual: bool) -> TestServer {
    start_with(dir, pki, mutual, "").await
}

/// [`start`], with `extra` TOML tables appended.
async fn start_with(dir: &Path, pki: &Pki, mutual: bool, extra: &str) -> TestServer {
    let toml = format!(
        "[server]\nshutdown_drain_ms = 2000\n[auth]\ndata_token = {DATA:?}\nadmin_token = {ADMIN:?}\n{}{extra}",
        tls_table(dir, pki, mutual)
    );
    let mut tls = client_tls(pki);
    if mutual {
        tls = tls.identity(Identity::from_pem(&pki.client.cert, &pki.client.key));
    }
    TestServer::start_tls(config(&toml), tls).await
}

async fn acquire(
    client: &mut BreakerClient<Channel>,
    circuit: &str,
    token: Option<&str>,
) -> Result<pb::AcquireResponse, Status> {
    let req = AcquireRequest {
        circuit: circuit.into(),
        node_id: "web-1".into(),
    };
    within("acquire", client.acquire(with_token(req, token)))
        .await
        .map(|r| r.into_inner())
}

async fn detail(admin: &mut AdminClient<Channel>, circuit: &str) -> pb::CircuitDetail {
    let req = GetCircuitRequest {
        name: circuit.into(),
    };
    within(
        "get circuit",
        admin.get_circuit(with_token(req, Some(ADMIN))),
    )
    .await
    .expect("GetCircuit with the admin token")
    .into_inner()
}

fn force_open(circuit: &str) -> SetOverrideRequest {
    SetOverrideRequest {
        name: circuit.into(),
        kind: OverrideKind::ForcedOpen as i32,
        reason: "auth test".into(),
        actor: "tester".into(),
        expires_in_ms: 0,
    }
}

#[tokio::test]
async fn admin_rpcs_need_the_admin_token_and_refusals_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let server = start(dir.path(), &pki, false).await;
    let mut breaker = server.breaker();
    let mut admin = server.admin();

    acquire(&mut breaker, "payments", Some(DATA))
        .await
        .expect("acquire with the data token");
    let before = detail(&mut admin, "payments").await;

    for (token, code) in [
        (Some(DATA), Code::PermissionDenied),
        (None, Code::Unauthenticated),
        (Some(WRONG), Code::Unauthenticated),
    ] {
        let status = within(
            "set override",
            admin.set_override(with_token(force_open("payments"), token)),
        )
        .await
        .expect_err("refused");
        assert_eq!(status.code(), code, "{token:?}: {status:?}");
        assert!(!status.message().contains("token-e2e"), "{status:?}");

        let reset = pb::ResetCircuitRequest {
            name: "payments".into(),
            reason: "auth test".into(),
            actor: "tester".into(),
        };
        let status = within("reset", admin.reset_circuit(with_token(reset, token)))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{token:?}: {status:?}");

        let get = GetCircuitRequest {
            name: "payments".into(),
        };
        let status = within("get", admin.get_circuit(with_token(get, token)))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{token:?}: {status:?}");
    }

    let after = detail(&mut admin, "payments").await;
    let snapshot = |d: &pb::CircuitDetail| d.snapshot.clone().expect("circuit snapshot");
    assert_eq!(snapshot(&after).generation, snapshot(&before).generation);
    assert_eq!(snapshot(&after).state, snapshot(&before).state);
    assert_eq!(snapshot(&after).r#override, None, "{after:?}");
    assert_eq!(after.history.len(), before.history.len());

    // The admin token may do it, and everything else.
    within(
        "set override",
        admin.set_override(with_token(force_open("payments"), Some(ADMIN))),
    )
    .await
    .expect("SetOverride with the admin token");
    let r = acquire(&mut breaker, "payments", Some(ADMIN))
        .await
        .expect("the admin token works on the data plane");
    assert!(!r.allowed, "forced open: {r:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn data_plane_needs_a_token_and_probes_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let server = start(dir.path(), &pki, false).await;
    let mut breaker = server.breaker();

    let r = acquire(&mut breaker, "search", Some(DATA)).await.unwrap();
    assert!(r.allowed);
    for token in [None, Some(WRONG)] {
        let status = acquire(&mut breaker, "search", token).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}");
    }
    // Streams are checked too.
    let watch = WatchRequest {
        circuits: vec!["search".into()],
        node_id: "web-1".into(),
    };
    let status = within("watch", breaker.watch(with_token(watch, None)))
        .await
        .expect_err("watch without a token");
    assert_eq!(status.code(), Code::Unauthenticated);

    // Health needs no token (probes carry no secret).
    let health = within(
        "health",
        server.health().check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .expect("health without a token")
    .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_plaintext_client_cannot_talk_to_the_tls_port() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let server = start(dir.path(), &pki, false).await;
    let plain = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2));
    let result = within("plaintext call", async {
        let channel = plain.connect().await?;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|s| Box::new(s) as Box<dyn std::error::Error + Send + Sync>)?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })
    .await;
    assert!(result.is_err(), "plaintext h2c reached the TLS port");
    server.stop().await.unwrap();
}

async fn health_over(addr: std::net::SocketAddr, tls: ClientTlsConfig) -> Result<(), String> {
    let endpoint = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2));
    within("mTLS call", async {
        let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|_| ())
            .map_err(|s| s.to_string())
    })
    .await
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_trusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let server = start(dir.path(), &pki, true).await;

    // The TestServer's own channel presents the CA-signed client certificate.
    let r = acquire(&mut server.breaker(), "payments", Some(DATA)).await;
    assert!(r.unwrap().allowed);

    let no_cert = health_over(server.addr, client_tls(&pki)).await;
    assert!(
        no_cert.is_err(),
        "a client without a certificate was served"
    );
    let rogue = client_tls(&pki).identity(Identity::from_pem(
        &pki.rogue_client.cert,
        &pki.rogue_client.key,
    ));
    assert!(
        health_over(server.addr, rogue).await.is_err(),
        "a certificate from an untrusted CA was accepted"
    );
    let good = client_tls(&pki).identity(Identity::from_pem(&pki.client.cert, &pki.client.key));
    health_over(server.addr, good)
        .await
        .expect("trusted client");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn under_mutual_tls_the_quorum_counts_certificates_not_node_ids() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let server = start_with(
        dir.path(),
        &pki,
        true,
        "[defaults]\nconsecutive_failures = 3\nquorum_nodes = 2\n",
    )
    .await;
    let g = acquire(&mut server.breaker(), "quorum", Some(DATA))
        .await
        .unwrap()
        .generation;
    let failure = |node: &str| pb::ReportRequest {
        node_id: node.into(),
        outcomes: vec![pb::OutcomeReport {
            circuit: "quorum".into(),
            generation: g,
            lease_id: 0,
            outcome: pb::Outcome::Failure.into(),
            latency_us: 1000,
            age_us: 0,
        }],
    };
    // One certificate rotating its node id is one node: no quorum.
    let mut one = server.breaker();
    for node in ["web-1", "web-1b", "web-1c", "web-1d", "web-1e"] {
        within("report", one.report(with_token(failure(node), Some(DATA))))
            .await
            .unwrap();
    }
    let mut admin = AdminClient::new(server.channel.clone());
    let d = detail(&mut admin, "quorum").await;
    assert_eq!(
        d.snapshot.unwrap().state(),
        pb::CircuitState::Closed,
        "one certificate met a quorum of 2"
    );
    // A second certificate makes two.
    let tls = client_tls(&pki).identity(Identity::from_pem(
        &pki.second_client.cert,
        &pki.second_client.key,
    ));
    let channel = within(
        "connecting with the second certificate",
        Channel::from_shared(format!("https://{}", server.addr))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect(),
    )
    .await
    .unwrap();
    within(
        "report",
        BreakerClient::new(channel).report(with_token(failure("web-2"), Some(DATA))),
    )
    .await
    .unwrap();
    let d = detail(&mut admin, "quorum").await;
    assert_eq!(d.snapshot.unwrap().state(), pb::CircuitState::Open);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_client_crate_connects_with_tls_and_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let server = start(dir.path(), &pki, true).await;
    let tls = ClientTls::new(pki.ca.clone())
        .domain("localhost")
        .identity(pki.client.cert.clone(), pki.client.key.clone());
    let builder = Coordinator::builder()
        .endpoint(format!("https://{}", server.addr))
        .node_id("web-1")
        // A TLS handshake in a debug build can take longer than the 30 ms
        // default; this test is about credentials, not latency.
        .rpc_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
        .tls(tls.clone());

    let good = builder.clone().token(DATA).build().unwrap();
    let payments = good.circuit("payments").unwrap();
    let permit = within("acquire", payments.acquire())
        .await
        .expect("allowed with the data token");
    permit.failure();
    let mut up = good.connectivity();
    within("the watch stream", up.wait_for(|up| *up))
        .await
        .expect("connectivity sender alive");
    assert!(within("flush", good.flush()).await, "reports delivered");
    let d = detail(&mut server.admin(), "payments").await;
    let counters = d.counters.expect("counters");
    assert_eq!(counters.consecutive_failures, 1, "{counters:?}");

    let bad = builder.token(WRONG).build().unwrap();
    let err = within("acquire", bad.circuit("search").unwrap().acquire())
        .await
        .expect_err("a wrong token is refused");
    assert!(
        matches!(
            err,
            ClientError::Refused {
                code: RefusalCode::Unauthenticated,
                ..
            }
        ),
        "{err:?}"
    );
    drop((good, bad));
    server.stop().await.unwrap();
}

#[test]
fn exposed_listeners_without_auth_are_warned_about() {
    let exposed = config("[server]\nlisten = \"0.0.0.0:50051\"\n[http]\nlisten = \"off\"\n");
    let warnings = breakerd::config::security_warnings(&exposed);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("without an admin token")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("without TLS")),
        "{warnings:?}"
    );
    let local = config("[http]\nlisten = \"off\"\n");
    assert!(breakerd::config::security_warnings(&local).is_empty());
}
