//! Phase (iv): oversized and malformed input, from raw TCP up to well-formed
//! gRPC carrying bad contents. Every case must be refused (an error status,
//! an HTTP error, or the connection closed) within a bound, never accepted
//! and never left hanging, while the legitimate load goes on.
//!
//! gRPC frames are built by hand and sent over a raw HTTP/2 connection
//! (`h2`), so the length prefix, the compression flag and the body can lie.
//!
//! Not a case: a well-formed Acquire with a `content-type` other than
//! `application/grpc`. tonic does not check the request's content type, so
//! it is answered like any Acquire; nothing in it is malformed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use breakerd_proto::v1 as pb;
use bytes::Bytes;
use prost::Message;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest a case may take before it counts as hanging.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(5);
/// The coordinator's default largest message (`server.max_message_bytes`).
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Refused with this gRPC status code (or `http NNN`).
    Refused(String),
    /// The coordinator closed or reset the connection or stream.
    Closed(String),
    /// Answered OK: the bad input was accepted.
    Accepted,
    /// No answer within [`CASE_TIMEOUT`].
    Hung,
}

impl Outcome {
    /// A short label for the summary.
    pub fn label(&self) -> String {
        match self {
            Outcome::Refused(c) => c.clone(),
            Outcome::Closed(why) => format!("closed ({why})"),
            Outcome::Accepted => "ACCEPTED".into(),
            Outcome::Hung => "HUNG".into(),
        }
    }
}

/// The cases, by name.
pub const CASES: [&str; 12] = [
    "tcp-garbage",
    "h2-preface-then-garbage",
    "http1-request",
    "grpc-invalid-protobuf",
    "grpc-length-prefix-4GiB",
    "grpc-truncated-frame",
    "grpc-compressed-flag-no-encoding",
    "grpc-oversized-5MiB",
    "grpc-unknown-method",
    "stub-name-201-bytes",
    "stub-report-batch-10001",
    "stub-watch-10001-names",
];

/// Figures of one case over the phase.
#[derive(Debug, Clone, Default)]
pub struct CaseFigures {
    /// Case name.
    pub name: &'static str,
    /// Times run.
    pub runs: u64,
    /// Outcomes by label.
    pub outcomes: BTreeMap<String, u64>,
    /// Runs accepted.
    pub accepted: u64,
    /// Runs that hung.
    pub hung: u64,
    /// Slowest run.
    pub slowest: Duration,
}

impl CaseFigures {
    /// Record one run.
    pub fn record(&mut self, o: &Outcome, took: Duration) {
        self.runs += 1;
        *self.outcomes.entry(o.label()).or_default() += 1;
        self.accepted += u64::from(*o == Outcome::Accepted);
        self.hung += u64::from(*o == Outcome::Hung);
        self.slowest = self.slowest.max(took);
    }
}

/// Run case `name` once against `addr`.
pub async fn run_case(name: &str, addr: SocketAddr, seed: u64) -> Outcome {
    match tokio::time::timeout(CASE_TIMEOUT, case(name, addr, seed)).await {
        Ok(o) => o,
        Err(_) => Outcome::Hung,
    }
}

fn frame(flag: u8, declared_len: u32, body: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(5 + body.len());
    b.push(flag);
    b.extend_from_slice(&declared_len.to_be_bytes());
    b.extend_from_slice(body);
    Bytes::from(b)
}

fn acquire_bytes(name: &str) -> Vec<u8> {
    pb::AcquireRequest {
        circuit: name.to_owned(),
        node_id: "chaos-malformed".into(),
    }
    .encode_to_vec()
}

const ACQUIRE: &str = "/breakerd.v1.Breaker/Acquire";

async fn case(name: &str, addr: SocketAddr, seed: u64) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut garbage = vec![0u8; 4096];
    rng.fill(&mut garbage[..]);
    match name {
        "tcp-garbage" => raw_tcp(addr, &garbage).await,
        "h2-preface-then-garbage" => {
            let mut b = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            b.extend_from_slice(&garbage);
            raw_tcp(addr, &b).await
        }
        "http1-request" => {
            raw_tcp(
                addr,
                b"POST /breakerd.v1.Breaker/Acquire HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd",
            )
            .await
        }
        "grpc-invalid-protobuf" => {
            // 0xff.. is a field with an invalid wire type.
            let body = vec![0xffu8; 64];
            grpc_raw(addr, ACQUIRE, "application/grpc", frame(0, 64, &body)).await
        }
        "grpc-length-prefix-4GiB" => {
            grpc_raw(
                addr,
                ACQUIRE,
                "application/grpc",
                frame(0, u32::MAX, &garbage[..16]),
            )
            .await
        }
        "grpc-truncated-frame" => {
            let body = acquire_bytes("chaos-steady-0");
            grpc_raw(
                addr,
                ACQUIRE,
                "application/grpc",
                frame(0, body.len() as u32 + 1000, &body),
            )
            .await
        }
        "grpc-compressed-flag-no-encoding" => {
            let body = acquire_bytes("chaos-steady-0");
            grpc_raw(
                addr,
                ACQUIRE,
                "application/grpc",
                frame(1, body.len() as u32, &body),
            )
            .await
        }
        "grpc-oversized-5MiB" => {
            let body = acquire_bytes(&"a".repeat(MAX_MESSAGE + MAX_MESSAGE / 4));
            grpc_raw(
                addr,
                ACQUIRE,
                "application/grpc",
                frame(0, body.len() as u32, &body),
            )
            .await
        }
        "grpc-unknown-method" => {
            let body = acquire_bytes("chaos-steady-0");
            grpc_raw(
                addr,
                "/breakerd.v1.Breaker/NoSuchMethod",
                "application/grpc",
                frame(0, body.len() as u32, &body),
            )
            .await
        }
        "stub-name-201-bytes" => stub(addr, StubCase::LongName).await,
        "stub-report-batch-10001" => stub(addr, StubCase::BigBatch).await,
        "stub-watch-10001-names" => stub(addr, StubCase::ManyNames).await,
        _ => Outcome::Refused("unknown case".into()),
    }
}

/// Write `bytes` on a fresh connection, then read until the coordinator
/// closes it. Whatever it answers first (an HTTP/1 status line, an HTTP/2
/// GOAWAY frame) is noted.
async fn raw_tcp(addr: SocketAddr, bytes: &[u8]) -> Outcome {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return Outcome::Closed("connect refused".into());
    };
    if s.write_all(bytes).await.is_err() {
        return Outcome::Closed("reset while writing".into());
    }
    let mut first = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if first.len() < 64 {
                    first.extend_from_slice(&buf[..n.min(64)]);
                }
            }
            Err(_) => return Outcome::Closed(describe(&first, "reset")),
        }
    }
    Outcome::Closed(describe(&first, "eof"))
}

fn describe(first: &[u8], how: &str) -> String {
    if first.starts_with(b"HTTP/1.") {
        let line = String::from_utf8_lossy(&first[..first.len().min(12)]).into_owned();
        format!("{how} after {line}")
    } else if first.len() >= 9 && first[3] == 0x07 {
        format!("{how} after GOAWAY")
    } else if first.is_empty() {
        how.to_owned()
    } else {
        format!("{how} after {} bytes", first.len())
    }
}

/// One request over a fresh raw HTTP/2 connection; the outcome from the
/// response's `grpc-status` (headers or trailers) or HTTP status.
async fn grpc_raw(addr: SocketAddr, path: &str, content_type: &str, body: Bytes) -> Outcome {
    let tcp = match TcpStream::connect(addr).await {
        Ok(t) => t,
        Err(e) => return Outcome::Closed(format!("connect: {}", e.kind())),
    };
    let _ = tcp.set_nodelay(true);
    let (client, conn) = match h2::client::handshake(tcp).await {
        Ok(x) => x,
        Err(e) => return Outcome::Closed(h2_reason(&e)),
    };
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let outcome = async {
        let mut client = client.ready().await.map_err(|e| h2_reason(&e))?;
        let req = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("http://{addr}{path}"))
            .header("content-type", content_type)
            .header("te", "trailers")
            .body(())
            .map_err(|e| e.to_string())?;
        let (resp, mut send) = client.send_request(req, false).map_err(|e| h2_reason(&e))?;
        // An early answer may reset the stream while this is still queued.
        let _ = send.send_data(body, true);
        let resp = resp.await.map_err(|e| h2_reason(&e))?;
        let (parts, mut recv) = resp.into_parts();
        if parts.status != http::StatusCode::OK {
            return Ok(Outcome::Refused(format!("http {}", parts.status.as_u16())));
        }
        if let Some(code) = grpc_status(&parts.headers) {
            return Ok(code);
        }
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(|e| h2_reason(&e))?;
            let _ = recv.flow_control().release_capacity(chunk.len());
        }
        let trailers = recv.trailers().await.map_err(|e| h2_reason(&e))?;
        Ok(trailers
            .as_ref()
            .and_then(grpc_status)
            .unwrap_or(Outcome::Closed("no grpc-status".into())))
    }
    .await
    .unwrap_or_else(Outcome::Closed);
    conn.abort();
    outcome
}

fn grpc_status(h: &http::HeaderMap) -> Option<Outcome> {
    let v = h.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(if v == 0 {
        Outcome::Accepted
    } else {
        Outcome::Refused(format!("{:?}", tonic::Code::from_i32(v)))
    })
}

fn h2_reason(e: &h2::Error) -> String {
    match e.reason() {
        Some(r) if e.is_go_away() => format!("GOAWAY {r:?}"),
        Some(r) => format!("RST_STREAM {r:?}"),
        None if e.is_io() => "io error".into(),
        None => "h2 error".into(),
    }
}

enum StubCase {
    LongName,
    BigBatch,
    ManyNames,
}

/// Well-formed gRPC through the generated stubs, with contents the
/// coordinator must refuse.
async fn stub(addr: SocketAddr, which: StubCase) -> Outcome {
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else {
        return Outcome::Refused("bad endpoint".into());
    };
    let channel = match endpoint
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
    {
        Ok(c) => c,
        Err(_) => return Outcome::Closed("connect".into()),
    };
    let mut client =
        pb::breaker_client::BreakerClient::new(channel).max_encoding_message_size(64 * 1024 * 1024);
    let status = match which {
        StubCase::LongName => client
            .acquire(pb::AcquireRequest {
                circuit: "n".repeat(201),
                node_id: "chaos-malformed".into(),
            })
            .await
            .err(),
        StubCase::BigBatch => client
            .report(pb::ReportRequest {
                node_id: "chaos-malformed".into(),
                outcomes: (0..10_001)
                    .map(|i| pb::OutcomeReport {
                        circuit: format!("chaos-steady-{}", i % 8),
                        generation: 1,
                        lease_id: 0,
                        outcome: pb::Outcome::Failure as i32,
                        latency_us: 1,
                        age_us: 0,
                    })
                    .collect(),
            })
            .await
            .err(),
        StubCase::ManyNames => {
            match client
                .watch(pb::WatchRequest {
                    circuits: (0..10_001).map(|i| format!("chaos-watch-{i}")).collect(),
                    node_id: "chaos-malformed".into(),
                })
                .await
            {
                // A stream that opens must end in an error at once.
                Ok(resp) => resp.into_inner().message().await.err(),
                Err(s) => Some(s),
            }
        }
    };
    match status {
        None => Outcome::Accepted,
        Some(s) => Outcome::Refused(format!("{:?}", s.code())),
    }
}

/// Run every case in a loop from `workers` tasks until `duration` has
/// passed (at most `max_rounds` rounds per worker).
pub async fn run(
    addr: SocketAddr,
    duration: Duration,
    workers: usize,
    max_rounds: u64,
) -> Vec<CaseFigures> {
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    for w in 0..workers {
        tasks.push(tokio::spawn(async move {
            let mut figs: Vec<CaseFigures> = CASES
                .iter()
                .map(|n| CaseFigures {
                    name: n,
                    ..Default::default()
                })
                .collect();
            let mut round = 0u64;
            // Every case runs at least once, even in a short phase.
            while round == 0 || (Instant::now() < end && round < max_rounds) {
                for (i, name) in CASES.iter().enumerate() {
                    let t = Instant::now();
                    let o = run_case(name, addr, (w as u64) << 32 | round << 8 | i as u64).await;
                    figs[i].record(&o, t.elapsed());
                }
                round += 1;
            }
            figs
        }));
    }
    let mut all: Vec<CaseFigures> = CASES
        .iter()
        .map(|n| CaseFigures {
            name: n,
            ..Default::default()
        })
        .collect();
    for t in tasks {
        if let Ok(figs) = t.await {
            for (a, f) in all.iter_mut().zip(figs) {
                a.runs += f.runs;
                a.accepted += f.accepted;
                a.hung += f.hung;
                a.slowest = a.slowest.max(f.slowest);
                for (k, v) in f.outcomes {
                    *a.outcomes.entry(k).or_default() += v;
                }
            }
        }
    }
    all
}

/// The figures as one JSON line (what a malformed worker process prints).
pub fn to_json(figs: &[CaseFigures]) -> String {
    serde_json::Value::Array(
        figs.iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "runs": c.runs,
                    "outcomes": c.outcomes,
                    "accepted": c.accepted,
                    "hung": c.hung,
                    "slowest_us": c.slowest.as_micros() as u64,
                })
            })
            .collect(),
    )
    .to_string()
}

/// Figures back from [`to_json`]'s line (cases this build knows).
pub fn from_json(line: &str) -> Option<Vec<CaseFigures>> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v.as_array()?
        .iter()
        .map(|c| {
            let wanted = c["name"].as_str()?;
            let name = CASES.iter().find(|n| **n == wanted)?;
            Some(CaseFigures {
                name,
                runs: c["runs"].as_u64()?,
                outcomes: c["outcomes"]
                    .as_object()?
                    .iter()
                    .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                    .collect(),
                accepted: c["accepted"].as_u64()?,
                hung: c["hung"].as_u64()?,
                slowest: Duration::from_micros(c["slowest_us"].as_u64()?),
            })
        })
        .collect()
}

/// Run [`run`] in a separate process (this executable with
/// `--malformed-worker`) under `nice -n nice`, like the flood.
pub async fn run_in_child(
    nice: i32,
    addr: SocketAddr,
    duration: Duration,
    workers: usize,
    max_rounds: u64,
) -> Result<Vec<CaseFigures>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let child = std::process::Command::new("nice")
        .arg("-n")
        .arg(nice.to_string())
        .arg(exe)
        .arg("--malformed-worker")
        .arg(addr.to_string())
        .arg("--malformed-ms")
        .arg(duration.as_millis().to_string())
        .arg("--malformed-workers")
        .arg(workers.to_string())
        .arg("--malformed-rounds")
        .arg(max_rounds.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start malformed worker: {e}"))?;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("malformed worker: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(from_json)
        .ok_or_else(|| format!("malformed worker ({}) printed no figures", out.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_declared_length() {
        let f = frame(1, 0xdead_beef, b"ab");
        assert_eq!(&f[..], &[1, 0xde, 0xad, 0xbe, 0xef, b'a', b'b']);
    }

    #[test]
    fn outcomes_are_labelled_and_judged() {
        let mut c = CaseFigures::default();
        c.record(
            &Outcome::Refused("InvalidArgument".into()),
            Duration::from_millis(2),
        );
        c.record(&Outcome::Closed("eof".into()), Duration::from_millis(5));
        c.record(&Outcome::Accepted, Duration::from_millis(1));
        c.record(&Outcome::Hung, CASE_TIMEOUT);
        assert_eq!(c.runs, 4);
        assert_eq!((c.accepted, c.hung), (1, 1));
        assert_eq!(c.slowest, CASE_TIMEOUT);
        assert_eq!(c.outcomes.get("closed (eof)"), Some(&1));
    }

    #[test]
    fn figures_survive_the_worker_pipe() {
        let mut c = CaseFigures {
            name: CASES[3],
            ..Default::default()
        };
        c.record(
            &Outcome::Refused("Internal".into()),
            Duration::from_millis(7),
        );
        let back = from_json(&to_json(std::slice::from_ref(&c))).expect("parses");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].name, c.name);
        assert_eq!(back[0].outcomes, c.outcomes);
        assert_eq!(
            (back[0].runs, back[0].slowest),
            (1, Duration::from_millis(7))
        );
        assert!(from_json("[{\"name\":\"nope\"}]").is_none());
    }

    #[test]
    fn first_bytes_are_described() {
        assert_eq!(
            describe(b"HTTP/1.1 400 Bad Request", "eof"),
            "eof after HTTP/1.1 400"
        );
        let goaway = [0, 0, 8, 0x07, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(describe(&goaway, "eof"), "eof after GOAWAY");
        assert_eq!(describe(b"", "reset"), "reset");
    }
}
