//! Per-client limits of the gRPC API: how many requests a client may make
//! per second, and how many *new* circuit names it may create per minute.
//!
//! A client is its [`Principal`]: its client certificate under mutual TLS,
//! else its peer IP address, never the self-declared `node_id` (a client
//! that rotates node ids would get fresh buckets for free; the node id only
//! appears in refusals). Nodes behind one address share its limits. Each
//! client has two token buckets, kept as GCRA "theoretical arrival times"
//! in atomics: a lookup is a `DashMap` read plus a compare-and-swap, and a
//! bucket that has refilled holds no information, so dropping it loses
//! nothing. That is what keeps memory bounded under a flood of addresses:
//! at most `max_tracked_clients` entries; idle (refilled) entries are swept
//! when the table fills up and every [`SWEEP_INTERVAL`]; a client that
//! finds the table full shares one overflow bucket with every other such
//! client.
//!
//! The new-circuit limit is not checked ahead of the core: a call hands the
//! registry the client's [`NewCircuitBudget`], which the registry charges
//! inside its creation path, only for names it is about to create. Every
//! name costs one token, whatever the size of the request: a request for
//! more names than the bucket holds is granted only when that many tokens
//! are there, and one for more than a full bucket holds never is.
//!
//! Over a limit the call fails with `RESOURCE_EXHAUSTED`, a message saying
//! which limit and when to retry, and the same hint in milliseconds as the
//! `retry-after-ms` response metadata (trailers). Time comes from tokio's
//! clock, so paused-clock tests drive the refill.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use dashmap::{DashMap, mapref::entry::Entry};
use tonic::{Request, Status, metadata::MetadataValue};

use breakerd_core::{Admission, validate_node_id};

use super::principal::Principal;

/// Response metadata key of the retry hint, in milliseconds.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// Idle entries are swept at least this often (when a new client shows up).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// When the table is full, sweep at most this often: a full table of busy
/// clients must not make every newcomer pay for a scan.
const FULL_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// What [`ClientLimits`] enforce; 0 disables a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimitsConfig {
    /// Requests per second per client (every RPC; a Report batch or a
    /// ReportStream message is one request). Bursts of twice this are let
    /// through. 0: unlimited.
    pub requests_per_second: u32,
    /// New circuit names per minute per client (Acquire, Watch, SetPolicy,
    /// SetOverride of a name that does not exist). Bursts of one minute's
    /// worth. 0: unlimited.
    pub new_circuits_per_minute: u32,
    /// Most clients tracked at once.
    pub max_tracked_clients: usize,
}

impl Default for ClientLimitsConfig {
    fn default() -> Self {
        Self {
            requests_per_second: 10_000,
            new_circuits_per_minute: 600,
            max_tracked_clients: 10_000,
        }
    }
}

impl ClientLimitsConfig {
    /// No limit at all.
    pub fn disabled() -> Self {
        Self {
            requests_per_second: 0,
            new_circuits_per_minute: 0,
            max_tracked_clients: 1,
        }
    }
}

/// Who a request counts against: its [`Principal`], and the node id it
/// declared (for messages only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId {
    principal: Principal,
    /// A valid, non-empty declared node id.
    node: Option<String>,
}

impl ClientId {
    /// The client of `request`, which declared `node_id`.
    pub fn of<T>(request: &Request<T>, node_id: &str) -> Self {
        Self::new(Principal::of(request), node_id)
    }

    /// `principal`, having declared `node_id`.
    pub fn new(principal: Principal, node_id: &str) -> Self {
        let node =
            (!node_id.is_empty() && validate_node_id(node_id).is_ok()).then(|| node_id.to_owned());
        Self { principal, node }
    }

    /// What the limits are keyed by.
    pub fn principal(&self) -> Principal {
        self.principal
    }

    fn describe(&self) -> String {
        match &self.node {
            Some(node) => format!("{} (node {node:?})", self.principal.describe()),
            None => self.principal.describe(),
        }
    }
}

/// A GCRA rate: one token every `interval`, at most `capacity` stored.
#[derive(Debug, Clone, Copy)]
struct Rate {
    interval_ns: u64,
    capacity_ns: u64,
}

impl Rate {
    /// `per` tokens per `period`, storing up to `burst` of them.
    fn new(per: u32, period: Duration, burst: u64) -> Option<Self> {
        if per == 0 {
            return None;
        }
        let period_ns = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        let interval_ns = (period_ns / u64::from(per)).max(1);
        Some(Self {
            interval_ns,
            capacity_ns: interval_ns.saturating_mul(burst.max(1)),
        })
    }

    /// Takes `n` tokens from the bucket whose theoretical arrival time is
    /// `tat`, or says why not: how long until that many are there, or that
    /// a full bucket never holds that many.
    fn take(&self, tat: &AtomicU64, now: u64, n: u64) -> Result<(), Shortfall> {
        let cost = n.saturating_mul(self.interval_ns);
        if cost > self.capacity_ns {
            return Err(Shortfall::Never);
        }
        let mut old = tat.load(Ordering::Acquire);
        loop {
            let base = old.max(now);
            let new = base.saturating_add(cost);
            if new - now > self.capacity_ns {
                return Err(Shortfall::Wait(Duration::from_nanos(
                    new - now - self.capacity_ns,
                )));
            }
            match tat.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(current) => old = current,
            }
        }
    }
}

/// Why a bucket refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shortfall {
    /// Enough tokens will be there after this long.
    Wait(Duration),
    /// More than a full bucket holds.
    Never,
}

/// The two buckets of one client.
#[derive(Debug, Default)]
struct Buckets {
    requests: AtomicU64,
    new_circuits: AtomicU64,
}

impl Buckets {
    /// Both buckets refilled: the entry says nothing a fresh one would not.
    fn idle(&self, now: u64) -> bool {
        self.requests.load(Ordering::Relaxed) <= now
            && self.new_circuits.load(Ordering::Relaxed) <= now
    }
}

/// A bounded table of clients' buckets.
#[derive(Debug)]
struct Table<K: std::hash::Hash + Eq> {
    map: DashMap<K, Buckets>,
    /// Entries held or being inserted (reserved first, so the cap is exact).
    len: AtomicUsize,
}

impl<K: std::hash::Hash + Eq> Table<K> {
    fn new() -> Self {
        Self {
            map: DashMap::new(),
            len: AtomicUsize::new(0),
        }
    }

    /// Runs `f` on the buckets of `key`, inserting them if there is room
    /// (the hot path, a known client, allocates nothing). `None` when the
    /// key is new and the table is full.
    fn with<Q, T>(&self, key: &Q, max: usize, f: impl FnOnce(&Buckets) -> T) -> Option<T>
    where
        K: std::borrow::Borrow<Q> + From<Q::Owned>,
        Q: std::hash::Hash + Eq + ToOwned + ?Sized,
    {
        if let Some(b) = self.map.get(key) {
            return Some(f(&b));
        }
        self.len
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        let entry = self.map.entry(K::from(key.to_owned()));
        if matches!(entry, Entry::Occupied(_)) {
            // Someone else inserted it meanwhile.
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
        let b = entry.or_default();
        Some(f(&b))
    }

    fn sweep(&self, now: u64) -> usize {
        let mut removed = 0;
        self.map.retain(|_, b| {
            let keep = !b.idle(now);
            removed += usize::from(!keep);
            keep
        });
        self.len.fetch_sub(removed, Ordering::AcqRel);
        removed
    }
}

/// Which limit a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Requests,
    NewCircuits,
}

/// A clock for the limits that only moves when told to, for tests that
/// must not depend on how fast the machine runs their requests (the
/// limits then never refill by themselves). Clones share one clock.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(ns, Ordering::AcqRel);
    }

    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// Per-client request-rate and new-circuit limits; share it as an `Arc`
/// between the services.
#[derive(Debug)]
pub struct ClientLimits {
    config: ClientLimitsConfig,
    requests: Option<Rate>,
    new_circuits: Option<Rate>,
    clients: Table<Principal>,
    /// Shared by every client that finds the table full.
    overflow: Buckets,
    epoch: tokio::time::Instant,
    /// Replaces tokio's clock when set.
    manual: Option<ManualClock>,
    /// Nanoseconds since `epoch` of the last sweep.
    last_sweep: AtomicU64,
}

impl ClientLimits {
    /// Limits as configured.
    pub fn new(config: ClientLimitsConfig) -> Arc<Self> {
        Self::with_clock(config, None)
    }

    /// Limits as configured, on `clock` when given, else on tokio's.
    pub fn with_clock(config: ClientLimitsConfig, clock: Option<ManualClock>) -> Arc<Self> {
        let rps = config.requests_per_second;
        let per_minute = config.new_circuits_per_minute;
        Arc::new(Self {
            config,
            requests: Rate::new(rps, Duration::from_secs(1), 2 * u64::from(rps)),
            new_circuits: Rate::new(per_minute, Duration::from_secs(60), u64::from(per_minute)),
            clients: Table::new(),
            overflow: Buckets::default(),
            epoch: tokio::time::Instant::now(),
            manual: clock,
            last_sweep: AtomicU64::new(0),
        })
    }

    /// No limits (in-process tests, or both limits configured to 0).
    pub fn disabled() -> Arc<Self> {
        Self::new(ClientLimitsConfig::disabled())
    }

    /// The limits in force.
    pub fn config(&self) -> ClientLimitsConfig {
        self.config
    }

    /// Clients tracked now.
    pub fn tracked(&self) -> usize {
        self.clients.map.len()
    }

    fn now_ns(&self) -> u64 {
        if let Some(clock) = &self.manual {
            return clock.now_ns();
        }
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.epoch);
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Counts one request of `client`.
    pub fn check_request(&self, client: &ClientId) -> Result<(), Status> {
        match self.requests {
            Some(rate) => self.take(client, Limit::Requests, rate, 1),
            None => Ok(()),
        }
    }

    /// The new-circuit budget of `client`, to hand the registry with a call
    /// that may create circuits (its `*_admitted` methods). The registry
    /// charges it inside its creation path, only for names it is about to
    /// create: a circuit that exists costs nothing, a refused call creates
    /// nothing, and racing creators of one name pay for it once.
    pub fn new_circuit_budget<'a>(&'a self, client: &'a ClientId) -> NewCircuitBudget<'a> {
        NewCircuitBudget {
            limits: self,
            client,
        }
    }

    fn take(&self, client: &ClientId, limit: Limit, rate: Rate, n: u64) -> Result<(), Status> {
        let now = self.now_ns();
        let take = |b: &Buckets| {
            let tat = match limit {
                Limit::Requests => &b.requests,
                Limit::NewCircuits => &b.new_circuits,
            };
            rate.take(tat, now, n)
        };
        let max = self.config.max_tracked_clients;
        let key = client.principal;
        let result = self
            .clients
            .with(&key, max, take)
            .or_else(|| {
                self.sweep_if_due(now, true)
                    .then(|| self.clients.with(&key, max, take))
                    .flatten()
            })
            .unwrap_or_else(|| take(&self.overflow));
        self.sweep_if_due(now, false);
        result.map_err(|short| self.refusal(client, limit, n, short))
    }

    /// Sweeps idle entries when [`SWEEP_INTERVAL`] has passed since the
    /// last sweep (or [`FULL_SWEEP_INTERVAL`] when a table is `full`).
    /// Returns whether it swept.
    fn sweep_if_due(&self, now: u64, full: bool) -> bool {
        let every = if full {
            FULL_SWEEP_INTERVAL
        } else {
            SWEEP_INTERVAL
        };
        let every = u64::try_from(every.as_nanos()).unwrap_or(u64::MAX);
        let last = self.last_sweep.load(Ordering::Acquire);
        if now.saturating_sub(last) < every
            || self
                .last_sweep
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return false;
        }
        let removed = self.clients.sweep(now);
        if removed > 0 {
            tracing::debug!(removed, "idle client limit entries swept");
        }
        true
    }

    fn refusal(&self, client: &ClientId, limit: Limit, n: u64, short: Shortfall) -> Status {
        let retry_after = match short {
            Shortfall::Wait(d) => d,
            Shortfall::Never => {
                let burst = self.config.new_circuits_per_minute;
                return Status::resource_exhausted(format!(
                    "{} asks to create {n} new circuits at once, more than the {burst} a client may create per minute; ask for fewer names",
                    client.describe()
                ));
            }
        };
        let retry_ms = u64::try_from(retry_after.as_micros().div_ceil(1000))
            .unwrap_or(u64::MAX)
            .max(1);
        let what = match limit {
            Limit::Requests => format!(
                "too many requests from {}: the limit is {} per second (bursts of {})",
                client.describe(),
                self.config.requests_per_second,
                2 * u64::from(self.config.requests_per_second)
            ),
            Limit::NewCircuits => format!(
                "too many new circuits from {}: the limit is {} per minute",
                client.describe(),
                self.config.new_circuits_per_minute
            ),
        };
        let mut status = Status::resource_exhausted(format!("{what}; retry after {retry_ms} ms"));
        status
            .metadata_mut()
            .insert(RETRY_AFTER_MS, MetadataValue::from(retry_ms));
        status
    }
}

/// The new-circuit budget of one client: see
/// [`ClientLimits::new_circuit_budget`].
#[derive(Debug, Clone, Copy)]
pub struct NewCircuitBudget<'a> {
    limits: &'a ClientLimits,
    client: &'a ClientId,
}

impl Admission for NewCircuitBudget<'_> {
    type Refusal = Status;

    /// Takes `count` tokens from the client's new-circuit bucket, or refuses
    /// with `RESOURCE_EXHAUSTED` and a retry hint. Atomics and the client
    /// table only: quick enough to run under the registry's shard lock.
    fn admit(&self, count: usize) -> Result<(), Status> {
        match self.limits.new_circuits {
            Some(rate) => self
                .limits
                .take(self.client, Limit::NewCircuits, rate, count as u64),
            None => Ok(()),
        }
    }
}

/// The retry hint of a status made by [`ClientLimits`], in milliseconds.
pub fn retry_after_ms(status: &Status) -> Option<u64> {
    status
        .metadata()
        .get(RETRY_AFTER_MS)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use breakerd_core::{CoreError, PolicyResolver, Refused, Registry, RegistryConfig};
    use std::net::IpAddr;

    /// Node `n` calling from 10.0.0.`ip`.
    fn node_at(n: &str, ip: u8) -> ClientId {
        ClientId::new(Principal::Peer(IpAddr::from([10, 0, 0, ip])), n)
    }

    fn node(n: &str) -> ClientId {
        node_at(n, 1)
    }

    fn limits(rps: u32, per_minute: u32, max: usize) -> Arc<ClientLimits> {
        ClientLimits::new(ClientLimitsConfig {
            requests_per_second: rps,
            new_circuits_per_minute: per_minute,
            max_tracked_clients: max,
        })
    }

    #[test]
    fn gcra_grants_the_burst_then_one_per_interval() {
        let rate = Rate::new(10, Duration::from_secs(1), 20).unwrap();
        let tat = AtomicU64::new(0);
        for _ in 0..20 {
            rate.take(&tat, 0, 1).unwrap();
        }
        let wait = rate.take(&tat, 0, 1).unwrap_err();
        assert_eq!(wait, Shortfall::Wait(Duration::from_millis(100)));
        assert!(rate.take(&tat, 99_999_999, 1).is_err());
        rate.take(&tat, 100_000_000, 1).unwrap();
        assert_eq!(
            rate.take(&tat, 100_000_000, 1).unwrap_err(),
            Shortfall::Wait(Duration::from_millis(100))
        );
    }

    #[test]
    fn gcra_charges_every_token_of_a_large_request() {
        let rate = Rate::new(60, Duration::from_secs(60), 60).unwrap();
        let tat = AtomicU64::new(0);
        // More than a full bucket holds: never, not even from a full one.
        assert_eq!(rate.take(&tat, 0, 61).unwrap_err(), Shortfall::Never);
        assert_eq!(tat.load(Ordering::Relaxed), 0, "a refusal costs nothing");
        // A full bucket's worth, then nothing until it refills.
        rate.take(&tat, 0, 60).unwrap();
        assert_eq!(
            rate.take(&tat, 0, 1).unwrap_err(),
            Shortfall::Wait(Duration::from_secs(1))
        );
        // 30 s later 30 tokens are back: 30 is granted, 31 waits 1 s more.
        assert_eq!(
            rate.take(&tat, 30_000_000_000, 31).unwrap_err(),
            Shortfall::Wait(Duration::from_secs(1))
        );
        rate.take(&tat, 30_000_000_000, 30).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn requests_refill_with_tokio_time() {
        let l = limits(5, 0, 10);
        for _ in 0..10 {
            l.check_request(&node("a")).unwrap();
        }
        let s = l.check_request(&node("a")).unwrap_err();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert_eq!(retry_after_ms(&s), Some(200));
        assert!(
            s.message().contains("peer 10.0.0.1 (node \"a\")"),
            "{}",
            s.message()
        );
        assert!(
            s.message().contains("retry after 200 ms"),
            "{}",
            s.message()
        );
        // Another address has its own bucket.
        l.check_request(&node_at("b", 2)).unwrap();
        tokio::time::advance(Duration::from_millis(200)).await;
        l.check_request(&node("a")).unwrap();
        assert!(l.check_request(&node("a")).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn rotating_node_ids_gives_no_fresh_bucket() {
        let l = limits(5, 2, 10);
        for i in 0..10 {
            l.check_request(&node(&format!("rotated-{i}"))).unwrap();
        }
        assert!(l.check_request(&node("yet-another")).is_err());
        let r = Registry::new(
            RegistryConfig::default(),
            PolicyResolver::new(Default::default(), Vec::new()).unwrap(),
        );
        let (a, b, c) = (node("a"), node("b"), node("c"));
        r.acquire_admitted("x", "a", &l.new_circuit_budget(&a))
            .unwrap();
        r.acquire_admitted("y", "b", &l.new_circuit_budget(&b))
            .unwrap();
        assert!(matches!(
            r.acquire_admitted("z", "c", &l.new_circuit_budget(&c)),
            Err(Refused::Admission(_))
        ));
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn zero_disables() {
        let l = limits(0, 0, 1);
        let r = Registry::new(
            RegistryConfig::default(),
            PolicyResolver::new(Default::default(), Vec::new()).unwrap(),
        );
        let a = node("a");
        for i in 0..10_000 {
            l.check_request(&node(&format!("n{i}"))).unwrap();
            r.acquire_admitted(&format!("c{i}"), "", &l.new_circuit_budget(&a))
                .unwrap();
        }
        assert_eq!(l.tracked(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn new_circuits_count_only_valid_missing_distinct_names() {
        let l = limits(0, 2, 10);
        let r = Registry::new(
            RegistryConfig::default(),
            PolicyResolver::new(Default::default(), Vec::new()).unwrap(),
        );
        r.acquire("exists", "").unwrap();
        let c = node("a");
        let budget = l.new_circuit_budget(&c);
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        r.watch_admitted(&names(&["exists", "exists"]), &budget)
            .unwrap();
        r.acquire_admitted("exists", "a", &budget).unwrap();
        assert!(matches!(
            r.acquire_admitted("bad name", "a", &budget),
            Err(Refused::Core(CoreError::InvalidName { .. }))
        ));
        r.watch_admitted(&names(&["x", "x"]), &budget).unwrap();
        r.acquire_admitted("y", "a", &budget).unwrap();
        let s = match r.acquire_admitted("z", "a", &budget) {
            Err(Refused::Admission(s)) => s,
            other => panic!("expected the limit, got {other:?}"),
        };
        assert!(s.message().contains("new circuits"), "{}", s.message());
        assert_eq!(retry_after_ms(&s), Some(30_000));
        assert!(r.get("z").is_err(), "a refused name is not created");
        // Names that exist never count.
        r.acquire_admitted("exists", "a", &budget).unwrap();
        r.watch_admitted(&names(&["exists", "x", "y"]), &budget)
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_of_more_new_names_than_a_full_bucket_is_refused_and_creates_nothing() {
        let l = limits(0, 3, 10);
        let r = Registry::new(
            RegistryConfig::default(),
            PolicyResolver::new(Default::default(), Vec::new()).unwrap(),
        );
        let c = node("a");
        let names: Vec<String> = (0..4).map(|i| format!("made-up-{i}")).collect();
        let s = match r.watch_admitted(&names, &l.new_circuit_budget(&c)) {
            Err(Refused::Admission(s)) => s,
            other => panic!("expected the limit, got {other:?}"),
        };
        assert!(
            s.message()
                .contains("asks to create 4 new circuits at once"),
            "{}",
            s.message()
        );
        assert_eq!(retry_after_ms(&s), None, "retrying cannot help");
        assert!(r.is_empty());
        // Three fit a full bucket, and then the bucket is empty.
        r.watch_admitted(&names[..3], &l.new_circuit_budget(&c))
            .unwrap();
        assert!(
            r.acquire_admitted("one-more", "a", &l.new_circuit_budget(&c))
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_shares_the_overflow_bucket_and_idle_entries_are_swept() {
        let l = limits(1, 0, 2);
        l.check_request(&node_at("a", 1)).unwrap();
        l.check_request(&node_at("b", 2)).unwrap();
        // The table is full: 3 and 4 share the overflow bucket (burst 2).
        l.check_request(&node_at("c", 3)).unwrap();
        l.check_request(&node_at("d", 4)).unwrap();
        let s = l.check_request(&node_at("e", 5)).unwrap_err();
        assert!(s.message().contains("peer 10.0.0.5"), "{}", s.message());
        assert_eq!(l.tracked(), 2);
        // Once every bucket has refilled, a newcomer's sweep frees room.
        tokio::time::advance(SWEEP_INTERVAL).await;
        l.check_request(&node_at("f", 6)).unwrap();
        assert_eq!(l.tracked(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_distinct_addresses_stays_bounded() {
        let l = limits(1000, 0, 100);
        for i in 0..10_000u32 {
            let c = ClientId::new(Principal::Peer(IpAddr::from(i.to_be_bytes())), "flood");
            let _ = l.check_request(&c);
            tokio::time::advance(Duration::from_micros(100)).await;
        }
        assert!(l.tracked() <= 100, "{}", l.tracked());
    }
}
