//! Fuzzing of request handling, in process: no network, the generated
//! service traits and tower services are called directly.
//!
//! - `raw_bytes_*`: arbitrary bytes, and valid messages with bytes flipped,
//!   cut or inserted, decoded as every request type (prost must not panic)
//!   and handed to the handlers; the same bytes also go, gRPC-framed (with
//!   random flags and lengths), through the tower services, which is the
//!   only way to reach ReportStream in process.
//! - `structured_requests`: well-formed messages with hostile contents:
//!   names that are empty, too long, unicode or control characters; policies
//!   with NaN, infinities and huge values; unknown enum numbers; random
//!   generations, leases and batch sizes; on a paused clock that jumps
//!   around, with per-client limits small enough to bite.
//!
//! Every answer must be `Ok` or a status with an expected code, nothing may
//! panic, and the registry and the limiter stay within their caps.
//!
//! The number of cases is `BREAKERD_FUZZ_CASES` (split over the tests), by
//! default [`DEFAULT_CASES`]; e.g. `BREAKERD_FUZZ_CASES=2000000 cargo test
//! -p breakerd --release --test fuzz` for a long run.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use breakerd::grpc::{
    AdminService, BreakerService, ClientLimits, ClientLimitsConfig, ShutdownSignal,
};
use breakerd_core::{PolicyResolver, Registry, RegistryConfig};
use breakerd_proto::v1::{
    self as pb, admin_server::Admin, admin_server::AdminServer, breaker_server::Breaker,
    breaker_server::BreakerServer,
};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use prost::Message;
use tonic::{Code, Request, Status, codegen::Bytes};
use tower::ServiceExt;

/// Cases run by default, over the whole suite (see the module docs).
const DEFAULT_CASES: u32 = 120_000;

/// Cap of circuits in the fuzzed registry: small, so that it is reached.
const MAX_CIRCUITS: usize = 64;
/// Cap of tracked clients of the limited services.
const MAX_CLIENTS: usize = 16;
/// Longest override expiry, in ms: generated on both sides.
const EXPIRY_CAP_MS: u64 = breakerd_policy::MAX_OVERRIDE_TTL.as_millis() as u64;

/// This test's share of the cases.
fn cases(share: f64) -> u32 {
    let total = std::env::var("BREAKERD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(DEFAULT_CASES);
    ((f64::from(total) * share).ceil() as u32).max(1)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        // Shared state between cases: a failure is reported with its input,
        // and no regression file is written into the tree.
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    })
}

/// The services under test, over one registry whose state builds up across
/// cases (so later cases hit existing, open and overridden circuits).
struct Target {
    rt: tokio::runtime::Runtime,
    registry: Arc<Registry>,
    limits: Arc<ClientLimits>,
    breaker: BreakerService,
    admin: AdminService,
    limited_breaker: BreakerService,
    limited_admin: AdminService,
    _stop: tokio::sync::watch::Sender<bool>,
}

impl Target {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let (stop_tx, stop) = ShutdownSignal::new();
        let (registry, limits) = rt.block_on(async {
            let registry = Registry::new(
                RegistryConfig {
                    max_circuits: MAX_CIRCUITS,
                    max_report_batch: 100,
                    max_watch_circuits: 40,
                    idle_evict_after: Duration::from_secs(5),
                    evict_interval: Duration::from_secs(1),
                    ..RegistryConfig::default()
                },
                PolicyResolver::new(Default::default(), Vec::new()).unwrap(),
            );
            let mut s = stop.clone();
            registry.spawn_background(async move { s.wait().await });
            let limits = ClientLimits::new(ClientLimitsConfig {
                requests_per_second: 50,
                new_circuits_per_minute: 30,
                max_tracked_clients: MAX_CLIENTS,
            });
            (registry, limits)
        });
        Self {
            breaker: BreakerService::new(registry.clone(), stop.clone()),
            admin: AdminService::new(registry.clone()),
            limited_breaker: BreakerService::new(registry.clone(), stop.clone())
                .with_limits(limits.clone()),
            limited_admin: AdminService::new(registry.clone()).with_limits(limits.clone()),
            registry,
            limits,
            rt,
            _stop: stop_tx,
        }
    }

    fn breaker(&self, limited: bool) -> &BreakerService {
        if limited {
            &self.limited_breaker
        } else {
            &self.breaker
        }
    }

    fn admin(&self, limited: bool) -> &AdminService {
        if limited {
            &self.limited_admin
        } else {
            &self.admin
        }
    }

    /// The caps hold.
    fn invariants(&self) -> Result<(), TestCaseError> {
        let n = self.registry.len();
        prop_assert!(n <= MAX_CIRCUITS, "{n} circuits > cap {MAX_CIRCUITS}");
        let tracked = self.limits.tracked();
        prop_assert!(
            tracked <= MAX_CLIENTS,
            "tracked clients {tracked} > cap {MAX_CLIENTS}"
        );
        Ok(())
    }
}

/// Codes a handler may answer with on bad or excessive input.
const HANDLER_CODES: [Code; 3] = [
    Code::InvalidArgument,
    Code::NotFound,
    Code::ResourceExhausted,
];

/// Answers seen by [`expect_handler`], by gRPC code number: printed at the
/// end so that a run shows it reached past input checks.
static CODES_SEEN: [AtomicU64; 17] = [const { AtomicU64::new(0) }; 17];

fn codes_seen() -> String {
    CODES_SEEN
        .iter()
        .enumerate()
        .filter(|(_, n)| n.load(Ordering::Relaxed) > 0)
        .map(|(c, n)| format!("{:?}={}", Code::from(c as i32), n.load(Ordering::Relaxed)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn expect_handler<T>(what: &str, r: &Result<T, Status>) -> Result<(), TestCaseError> {
    let code = r.as_ref().err().map_or(Code::Ok, Status::code);
    CODES_SEEN[(code as usize).min(16)].fetch_add(1, Ordering::Relaxed);
    if let Err(s) = r {
        prop_assert!(
            HANDLER_CODES.contains(&s.code()),
            "{what}: unexpected {:?}: {}",
            s.code(),
            s.message()
        );
        if s.code() == Code::ResourceExhausted && s.message().contains("too many requests") {
            prop_assert!(s.metadata().get("retry-after-ms").is_some(), "{s:?}");
        }
    }
    Ok(())
}

/// Calls the handler of `method` with `req`; streams are polled for their
/// first item.
async fn call(t: &Target, limited: bool, req: Req, who: &str) -> Result<(), TestCaseError> {
    let b = t.breaker(limited);
    let a = t.admin(limited);
    match req {
        Req::Acquire(r) => {
            let res = b.acquire(Request::new(r)).await;
            if let Ok(ok) = &res {
                let ok = ok.get_ref();
                prop_assert!(ok.allowed == (ok.reject_reason == 0), "{ok:?}");
                prop_assert!(ok.allowed || ok.lease_id == 0, "{ok:?}");
            }
            expect_handler(who, &res)
        }
        Req::Report(r) => {
            let n = r.outcomes.len() as u32;
            let res = b.report(Request::new(r)).await;
            if let Ok(ok) = &res {
                let ok = ok.get_ref();
                prop_assert_eq!(ok.applied + ok.stale + ok.unknown, n);
            }
            expect_handler(who, &res)
        }
        Req::Watch(r) => match b.watch(Request::new(r)).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                let first = stream.next().await;
                prop_assert!(
                    matches!(&first, Some(Ok(ev)) if ev.initial),
                    "{who}: first watch event {first:?}"
                );
                Ok(())
            }
            Err(s) => expect_handler(who, &Err::<(), _>(s)),
        },
        Req::Get(r) => expect_handler(who, &a.get_circuit(Request::new(r)).await),
        Req::List(r) => {
            let res = a.list_circuits(Request::new(r)).await;
            if let Ok(ok) = &res {
                prop_assert!(ok.get_ref().circuits.len() <= 1000);
            }
            expect_handler(who, &res)
        }
        Req::SetPolicy(r) => expect_handler(who, &a.set_policy(Request::new(r)).await),
        Req::SetOverride(r) => expect_handler(who, &a.set_override(Request::new(r)).await),
        Req::Clear(r) => expect_handler(who, &a.clear_override(Request::new(r)).await),
        Req::Reset(r) => expect_handler(who, &a.reset_circuit(Request::new(r)).await),
        Req::Delete(r) => expect_handler(who, &a.delete_circuit(Request::new(r)).await),
        Req::Audit(r) => expect_handler(who, &a.list_audit_events(Request::new(r)).await),
    }
}

/// One request of any type.
#[derive(Debug, Clone)]
enum Req {
    Acquire(pb::AcquireRequest),
    Report(pb::ReportRequest),
    Watch(pb::WatchRequest),
    Get(pb::GetCircuitRequest),
    List(pb::ListCircuitsRequest),
    SetPolicy(pb::SetPolicyRequest),
    SetOverride(pb::SetOverrideRequest),
    Clear(pb::ClearOverrideRequest),
    Reset(pb::ResetCircuitRequest),
    Delete(pb::DeleteCircuitRequest),
    Audit(pb::ListAuditEventsRequest),
}

/// Request types by index, for raw bytes: (gRPC path, decoder).
const METHODS: [&str; 12] = [
    "/breakerd.v1.Breaker/Acquire",
    "/breakerd.v1.Breaker/Report",
    "/breakerd.v1.Breaker/Watch",
    "/breakerd.v1.Admin/GetCircuit",
    "/breakerd.v1.Admin/ListCircuits",
    "/breakerd.v1.Admin/SetPolicy",
    "/breakerd.v1.Admin/SetOverride",
    "/breakerd.v1.Admin/ClearOverride",
    "/breakerd.v1.Admin/ResetCircuit",
    "/breakerd.v1.Admin/DeleteCircuit",
    "/breakerd.v1.Admin/ListAuditEvents",
    "/breakerd.v1.Breaker/ReportStream",
];

fn decode(method: usize, bytes: &[u8]) -> Option<Req> {
    fn d<M: Message + Default>(b: &[u8]) -> Option<M> {
        M::decode(b).ok()
    }
    Some(match method {
        0 => Req::Acquire(d(bytes)?),
        1 | 11 => Req::Report(d(bytes)?),
        2 => Req::Watch(d(bytes)?),
        3 => Req::Get(d(bytes)?),
        4 => Req::List(d(bytes)?),
        5 => Req::SetPolicy(d(bytes)?),
        6 => Req::SetOverride(d(bytes)?),
        7 => Req::Clear(d(bytes)?),
        8 => Req::Reset(d(bytes)?),
        9 => Req::Delete(d(bytes)?),
        _ => Req::Audit(d(bytes)?),
    })
}

fn encode(req: &Req) -> (usize, Vec<u8>) {
    match req {
        Req::Acquire(r) => (0, r.encode_to_vec()),
        Req::Report(r) => (1, r.encode_to_vec()),
        Req::Watch(r) => (2, r.encode_to_vec()),
        Req::Get(r) => (3, r.encode_to_vec()),
        Req::List(r) => (4, r.encode_to_vec()),
        Req::SetPolicy(r) => (5, r.encode_to_vec()),
        Req::SetOverride(r) => (6, r.encode_to_vec()),
        Req::Clear(r) => (7, r.encode_to_vec()),
        Req::Reset(r) => (8, r.encode_to_vec()),
        Req::Delete(r) => (9, r.encode_to_vec()),
        Req::Audit(r) => (10, r.encode_to_vec()),
    }
}

// ---- strategies ----

/// Every byte a valid circuit name may hold.
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:/-";

/// `len` characters of `alphabet` from `seed`: long strings at the cost of
/// one value (generating them character by character is slow in debug
/// builds, and shrinking them teaches nothing).
fn spread(seed: u64, len: usize, alphabet: &[u8]) -> String {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(alphabet[(x % alphabet.len() as u64) as usize])
        })
        .collect()
}

fn spread_of(
    len: std::ops::Range<usize>,
    alphabet: &'static [u8],
) -> impl Strategy<Value = String> {
    (any::<u64>(), len).prop_map(move |(seed, len)| spread(seed, len, alphabet))
}

/// Short strings of any characters: unicode, controls, NUL, surrogates'
/// neighbours, right-to-left marks.
fn wild() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            2 => any::<char>(),
            1 => proptest::sample::select(vec!['\0', '\n', '\x7f', ' ', 'é', '☃', '\u{202e}', '\u{fffd}', '\u{10ffff}']),
            2 => proptest::sample::select(ALPHABET.iter().map(|&b| char::from(b)).collect::<Vec<_>>()),
        ],
        1..6,
    )
    .prop_map(String::from_iter)
}

/// A small pool of valid names, so that circuits are met again.
fn pool() -> impl Strategy<Value = String> {
    proptest::sample::select(vec!["a", "b", "c", "d", "ab", "pay:v1", "x/y", "a.b-c_d"])
        .prop_map(str::to_owned)
}

/// Circuit names: mostly a small valid pool (so circuits are met again),
/// and every kind of invalid name.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => pool(),
        2 => spread_of(1..201, ALPHABET),
        1 => Just(String::new()),
        1 => spread_of(201..300, ALPHABET),
        1 => spread_of(200..201, ALPHABET),
        2 => wild(),
    ]
}

fn node() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        3 => (0..40u32).prop_map(|n| format!("node-{n}")),
        1 => name(),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        30 => proptest::sample::select(vec!["ops", "alice", "incident 42", "x"]).prop_map(str::to_owned),
        1 => Just(String::new()),
        1 => Just("   ".to_owned()),
        1 => spread_of(1001..1100, b"abc "),
        1 => spread_of(190..210, b"abc "),
        1 => wild(),
    ]
}

/// An enum number: mostly known values, sometimes anything.
fn enum_of(kind: u8, raw: u64) -> i32 {
    match kind % 8 {
        0 => raw as i32,
        1 => [0, 4][(raw % 2) as usize],
        _ => 1 + (raw % 3) as i32,
    }
}

fn enum_number() -> impl Strategy<Value = i32> {
    any::<(u8, u64)>().prop_map(|(k, v)| enum_of(k, v))
}

/// Optional policy fields from a selector byte and a raw value, so that a
/// whole policy is two arrays (cheap to generate, unlike 17 nested unions).
fn opt_u64(kind: u8, raw: u64) -> Option<u64> {
    match kind % 8 {
        0..=2 => None,
        3 => Some(raw % 100),
        4 => Some(1_000 + raw % 100_000),
        5 => Some(u64::MAX),
        // At or just past one of the policy bounds.
        6 => Some(BOUNDS[(raw % BOUNDS.len() as u64) as usize] + (raw >> 32) % 2),
        _ => Some(raw),
    }
}

/// The upper bounds of the policy's numeric fields (breakerd_policy::bounds).
const BOUNDS: [u64; 8] = [
    64,
    600,
    1_000,
    10_000,
    1_000_000,
    3_600_000,
    604_800_000,
    2_592_000_000,
];

fn opt_u32(kind: u8, raw: u64) -> Option<u32> {
    opt_u64(kind, raw).map(|v| match kind % 8 {
        5 => u32::MAX,
        4 => (v % 2_000) as u32,
        _ => v as u32,
    })
}

fn opt_f64(kind: u8, raw: u64) -> Option<f64> {
    Some(match kind % 14 {
        0 | 1 => return None,
        2..=4 => (raw % 10_001) as f64 / 10_000.0,
        5 => f64::NAN,
        6 => f64::INFINITY,
        7 => f64::NEG_INFINITY,
        8 => -0.0,
        9 => f64::MAX,
        10 => f64::MIN_POSITIVE,
        11 => 1.0 + f64::EPSILON,
        12 => 1.0 + (raw % 200) as f64,
        _ => f64::from_bits(raw),
    })
}

fn policy() -> impl Strategy<Value = pb::Policy> {
    (any::<bool>(), any::<[u8; 17]>(), any::<[u64; 17]>()).prop_map(|(sane, mut k, mut v)| {
        if sane {
            // Half the policies keep to small, mostly valid values, so that
            // changes get applied and circuits trip, reopen and probe.
            for (k, v) in k.iter_mut().zip(v.iter_mut()) {
                *k = [0, 3][usize::from(*k % 2)];
                *v %= 50;
            }
        }
        policy_of(k, v)
    })
}

fn policy_of(k: [u8; 17], v: [u64; 17]) -> pb::Policy {
    pb::Policy {
        consecutive_failures: opt_u32(k[0], v[0]),
        window_kind: (!k[1].is_multiple_of(3)).then(|| enum_of(k[1] / 3, v[1])),
        window_size: opt_u64(k[2], v[2]),
        window_buckets: opt_u32(k[3], v[3]),
        minimum_calls: opt_u32(k[4], v[4]),
        failure_rate_threshold: opt_f64(k[5], v[5]),
        slow_call_rate_threshold: opt_f64(k[6], v[6]),
        slow_call_duration_ms: opt_u64(k[7], v[7]),
        quorum_nodes: opt_u32(k[8], v[8]),
        open_base_ms: opt_u64(k[9], v[9]),
        open_backoff_multiplier: opt_f64(k[10], v[10]),
        open_max_ms: opt_u64(k[11], v[11]),
        open_jitter: opt_f64(k[12], v[12]),
        half_open_max_probes: opt_u32(k[13], v[13]),
        probe_lease_ms: opt_u64(k[14], v[14]),
        successes_to_close: opt_u32(k[15], v[15]),
        degraded_mode: (!k[16].is_multiple_of(3)).then(|| enum_of(k[16] / 3, v[16])),
    }
}

fn outcome() -> impl Strategy<Value = pb::OutcomeReport> {
    // Mostly valid names: one bad name refuses the whole batch.
    (
        prop_oneof![20 => pool(), 1 => name()],
        any::<(u8, u64, u64, u8, u64, u64, u64)>(),
    )
        .prop_map(
            |(circuit, (k, generation, lease_id, ko, outcome, latency_us, age_us))| {
                pb::OutcomeReport {
                    circuit,
                    generation: if k.is_multiple_of(4) {
                        generation
                    } else {
                        generation % 8
                    },
                    lease_id: if k % 8 == 1 { lease_id } else { lease_id % 4 },
                    // Rarely a bad one: it refuses the whole batch.
                    outcome: enum_of(if ko.is_multiple_of(16) { ko } else { 2 }, outcome),
                    latency_us,
                    // Any age, up to u64::MAX µs: clamped, never a panic.
                    age_us,
                }
            },
        )
}

fn request() -> impl Strategy<Value = Req> {
    prop_oneof![
        6 => (name(), node()).prop_map(|(circuit, node_id)| Req::Acquire(pb::AcquireRequest { circuit, node_id })),
        4 => (node(), prop_oneof![
                12 => proptest::collection::vec(outcome(), 0..6),
                1 => (outcome(), 90..110usize).prop_map(|(o, n)| {
                    // Large batches around the limit (100), cheaply.
                    (0..n as u64).map(|i| pb::OutcomeReport { generation: o.generation + i % 3, ..o.clone() }).collect()
                }),
            ])
            .prop_map(|(node_id, outcomes)| Req::Report(pb::ReportRequest { node_id, outcomes })),
        2 => (prop_oneof![
                8 => proptest::collection::vec(name(), 0..6),
                // Many names at once, most of them new: the circuit cap and
                // the new-name limit.
                1 => (any::<u64>(), 30..45u64).prop_map(|(seed, n)| (0..n).map(|i| format!("w{}", seed.wrapping_add(i) % 200)).collect()),
            ], node())
            .prop_map(|(circuits, node_id)| Req::Watch(pb::WatchRequest { circuits, node_id })),
        1 => name().prop_map(|name| Req::Get(pb::GetCircuitRequest { name })),
        1 => (prop_oneof![Just(String::new()), name()], enum_number(), prop_oneof![0..5u32, any::<u32>()], prop_oneof![Just(String::new()), name()])
            .prop_map(|(prefix, state, page_size, page_token)| Req::List(pb::ListCircuitsRequest { prefix, state, page_size, page_token })),
        3 => (name(), prop_oneof![1 => Just(None), 6 => policy().prop_map(Some)], text(), text())
            .prop_map(|(name, policy, actor, reason)| Req::SetPolicy(pb::SetPolicyRequest { name, policy, actor, reason })),
        2 => (name(), enum_number(), text(), text(), prop_oneof![Just(0u64), 1..100_000u64, any::<u64>(), EXPIRY_CAP_MS - 1_000..EXPIRY_CAP_MS + 1_000])
            .prop_map(|(name, kind, actor, reason, expires_in_ms)| Req::SetOverride(pb::SetOverrideRequest { name, kind, actor, reason, expires_in_ms })),
        1 => (name(), text(), text()).prop_map(|(name, actor, reason)| Req::Clear(pb::ClearOverrideRequest { name, actor, reason })),
        1 => (name(), text(), text()).prop_map(|(name, actor, reason)| Req::Reset(pb::ResetCircuitRequest { name, actor, reason })),
        1 => (name(), text(), text()).prop_map(|(name, actor, reason)| Req::Delete(pb::DeleteCircuitRequest { name, actor, reason })),
        1 => (prop_oneof![Just(String::new()), name()], prop_oneof![0..5u32, any::<u32>()])
            .prop_map(|(circuit, limit)| Req::Audit(pb::ListAuditEventsRequest { circuit, limit })),
    ]
}

/// How a valid encoding is damaged.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match m {
            Mutation::Flip(at, x) if len > 0 => bytes[at % len] ^= x,
            Mutation::Flip(..) => {}
            Mutation::Truncate(at) => bytes.truncate(at % (len + 1)),
            Mutation::Insert(at, b) => {
                let at = at % (len + 1);
                bytes.splice(at..at, b.iter().copied());
            }
        }
    }
    bytes
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(a, x)| Mutation::Flip(a, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(a, b)| Mutation::Insert(a, b)),
    ]
}

/// A request body as raw bytes: pure noise, or a valid message damaged.
fn raw_message() -> impl Strategy<Value = (usize, Vec<u8>)> {
    prop_oneof![
        1 => (0..METHODS.len(), proptest::collection::vec(any::<u8>(), 0..200)),
        3 => (request(), proptest::collection::vec(mutation(), 0..4), 0..8usize).prop_map(
            |(req, muts, pick)| {
                let (method, bytes) = encode(&req);
                // Sometimes send a Report's bytes to ReportStream.
                let method = if method == 1 && pick == 0 { 11 } else { method };
                (method, mutate(bytes, &muts))
            }
        ),
    ]
}

/// gRPC framing of one message: compression flag, length (sometimes a
/// lie), bytes.
fn frame() -> impl Strategy<Value = (u8, Option<u32>)> {
    (
        prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => any::<u8>()],
        prop_oneof![8 => Just(None), 1 => any::<u32>().prop_map(Some), 1 => (0..300u32).prop_map(Some)],
    )
}

// ---- tests ----

/// `(limited, advance_ms, request)`: which services, how far the clock
/// jumps first (leases expire, circuits half-open, buckets refill).
fn structured_case() -> impl Strategy<Value = (bool, u64, Req)> {
    (
        prop_oneof![3 => Just(false), 1 => Just(true)],
        prop_oneof![6 => Just(0u64), 3 => 1..2_000u64, 1 => 10_000..200_000u64],
        request(),
    )
}

#[test]
fn structured_requests() {
    let t = Target::new();
    let mut runner = runner(cases(0.6));
    let started = std::time::Instant::now();
    runner
        .run(&structured_case(), |(limited, advance, req)| {
            t.rt.block_on(async {
                if advance > 0 {
                    tokio::time::advance(Duration::from_millis(advance)).await;
                    // Let the driver apply what fell due.
                    tokio::task::yield_now().await;
                }
                call(&t, limited, req, "structured").await
            })?;
            t.invariants()
        })
        .unwrap();
    eprintln!(
        "structured_requests: {} cases in {:?}; handler answers so far: {}",
        cases(0.6),
        started.elapsed(),
        codes_seen()
    );
}

#[test]
fn raw_bytes_decoded_and_handled() {
    let t = Target::new();
    let mut runner = runner(cases(0.25));
    let started = std::time::Instant::now();
    runner
        .run(
            &(raw_message(), any::<bool>()),
            |((method, bytes), limited)| {
                // Decoding must not panic; what decodes goes to the handler.
                if let Some(req) = decode(method, &bytes) {
                    t.rt.block_on(call(&t, limited, req, METHODS[method]))?;
                }
                t.invariants()
            },
        )
        .unwrap();
    eprintln!(
        "raw_bytes_decoded_and_handled: {} cases in {:?}",
        cases(0.25),
        started.elapsed()
    );
}

/// Codes the tower service may answer raw gRPC bodies with: the handlers',
/// plus decoding errors (`INTERNAL`), compression flags it does not support
/// (`UNIMPLEMENTED`/`INTERNAL`) and oversized lengths (`OUT_OF_RANGE`).
const WIRE_CODES: [Code; 6] = [
    Code::InvalidArgument,
    Code::NotFound,
    Code::ResourceExhausted,
    Code::Internal,
    Code::Unimplemented,
    Code::OutOfRange,
];

#[test]
fn raw_bytes_through_the_grpc_services() {
    let t = Target::new();
    let breaker = BreakerServer::new(t.limited_breaker.clone()).max_decoding_message_size(4096);
    let admin = AdminServer::new(t.limited_admin.clone()).max_decoding_message_size(4096);
    let mut runner = runner(cases(0.15));
    let started = std::time::Instant::now();
    let strategy = proptest::collection::vec((raw_message(), frame()), 1..4);
    runner
        .run(&strategy, |messages| {
            // All messages go to the first one's method (several only make
            // sense for ReportStream; the others must refuse the extras).
            let method = METHODS[messages[0].0.0];
            let mut body = Vec::new();
            for ((_, bytes), (flag, len)) in &messages {
                body.push(*flag);
                let len = len.unwrap_or(bytes.len() as u32);
                body.extend_from_slice(&len.to_be_bytes());
                body.extend_from_slice(bytes);
            }
            let req = http::Request::builder()
                .method("POST")
                .uri(format!("http://localhost{method}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(tonic::body::Body::new(Full::new(Bytes::from(body))))
                .unwrap();
            let code = t.rt.block_on(async {
                // Boxed: debug-build futures of the whole tonic stack are
                // large, and the test thread's stack is small.
                let resp = if method.starts_with("/breakerd.v1.Breaker/") {
                    Box::pin(breaker.clone().oneshot(req)).await
                } else {
                    Box::pin(admin.clone().oneshot(req)).await
                }
                .unwrap();
                let (parts, mut body) = resp.into_parts();
                if let Some(s) = parts.headers.get("grpc-status") {
                    // Trailers-only: refused before any message.
                    return Some(Code::from_bytes(s.as_bytes()));
                }
                if method.ends_with("/Watch") {
                    // Never ends by itself: a first message is success.
                    let first = tokio::time::timeout(Duration::from_secs(30), body.frame())
                        .await
                        .expect("a first watch frame");
                    return match first {
                        Some(Ok(f)) if f.is_data() => Some(Code::Ok),
                        Some(Ok(f)) => f
                            .trailers_ref()
                            .and_then(|t| t.get("grpc-status"))
                            .map(|s| Code::from_bytes(s.as_bytes())),
                        _ => None,
                    };
                }
                let collected = tokio::time::timeout(Duration::from_secs(30), body.collect())
                    .await
                    .expect("the response body ends")
                    .ok();
                let status = parts.headers.get("grpc-status").cloned().or_else(|| {
                    collected
                        .as_ref()
                        .and_then(|c| c.trailers())
                        .and_then(|t| t.get("grpc-status").cloned())
                });
                status.map(|s| Code::from_bytes(s.as_bytes()))
            });
            match code {
                None => {} // The body failed mid-way: the connection would close.
                Some(Code::Ok) => {}
                Some(c) => prop_assert!(WIRE_CODES.contains(&c), "{method}: {c:?}"),
            }
            t.invariants()
        })
        .unwrap();
    eprintln!(
        "raw_bytes_through_the_grpc_services: {} cases in {:?}",
        cases(0.15),
        started.elapsed()
    );
}
