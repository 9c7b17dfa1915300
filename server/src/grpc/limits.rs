//! Per-client limits of the gRPC API: how many requests a client may make
//! per second, and how many *new* circuit names it may create per minute.
//!
//! A client is its `node_id` when the request carries a valid one, else its
//! peer IP (admin calls carry no node id, so they are always per IP). Each
//! client has two token buckets, kept as GCRA "theoretical arrival times" in
//! atomics: a lookup is a `DashMap` read plus a compare-and-swap, and a
//! bucket that has refilled holds no information, so dropping it loses
//! nothing. That is what keeps memory bounded under a flood of made-up node
//! ids: at most `max_tracked_clients` node entries and as many IP entries;
//! idle (refilled) entries are swept when the table fills up and every
//! [`SWEEP_INTERVAL`]; a node that finds the table full is limited by its
//! peer IP instead, and an IP that finds the IP table full shares one
//! overflow bucket with every other such IP.
//!
//! The new-circuit limit is not checked ahead of the core: a call hands the
//! registry the client's [`NewCircuitBudget`], which the registry charges
//! inside its creation path, only for names it is about to create.
//!
//! Over a limit the call fails with `RESOURCE_EXHAUSTED`, a message saying
//! which limit and when to retry, and the same hint in milliseconds as the
//! `retry-after-ms` response metadata (trailers). Time comes from tokio's
//! clock, so paused-clock tests drive the refill.

use std::{
    net::{IpAddr, Ipv6Addr},
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use dashmap::{DashMap, mapref::entry::Entry};
use tonic::{Request, Status, metadata::MetadataValue};

use breakerd_core::{Admission, validate_node_id};

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
    /// Most clients tracked by node id, and most tracked by IP.
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

/// Who a request counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientId {
    /// A node that named itself (a valid, non-empty `node_id`), with the
    /// peer IP to fall back to.
    Node {
        /// The node id.
        node: String,
        /// Its peer address, when known.
        ip: Option<IpAddr>,
    },
    /// Anyone else, by peer IP (`None`: no peer address, e.g. in-process).
    Peer(Option<IpAddr>),
}

impl ClientId {
    /// The client of `request`, by `node_id` when it is a valid non-empty
    /// node id, else by peer IP.
    pub fn of<T>(request: &Request<T>, node_id: &str) -> Self {
        Self::new(node_id, request.remote_addr().map(|a| a.ip()))
    }

    /// The client named `node_id` (when valid and non-empty) calling from
    /// `ip`.
    pub fn new(node_id: &str, ip: Option<IpAddr>) -> Self {
        if !node_id.is_empty() && validate_node_id(node_id).is_ok() {
            ClientId::Node {
                node: node_id.to_owned(),
                ip,
            }
        } else {
            ClientId::Peer(ip)
        }
    }

    fn describe(&self) -> String {
        match self {
            ClientId::Node { node, .. } => format!("node {node:?}"),
            ClientId::Peer(Some(ip)) => format!("peer {ip}"),
            ClientId::Peer(None) => "this peer".to_owned(),
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
    /// `tat`, or says how long until it could. A request for more than the
    /// capacity is granted only from a full bucket, and paid back before
    /// anything else is granted.
    fn take(&self, tat: &AtomicU64, now: u64, n: u64) -> Result<(), Duration> {
        let cost = n.saturating_mul(self.interval_ns);
        let mut old = tat.load(Ordering::Acquire);
        loop {
            let base = old.max(now);
            let new = base.saturating_add(cost);
            if old > now && new - now > self.capacity_ns {
                let earliest = old.saturating_add(cost).saturating_sub(self.capacity_ns);
                return Err(Duration::from_nanos(earliest.min(old) - now));
            }
            match tat.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(current) => old = current,
            }
        }
    }
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

/// Per-client request-rate and new-circuit limits; share it as an `Arc`
/// between the services.
#[derive(Debug)]
pub struct ClientLimits {
    config: ClientLimitsConfig,
    requests: Option<Rate>,
    new_circuits: Option<Rate>,
    nodes: Table<Box<str>>,
    peers: Table<IpAddr>,
    /// Shared by every IP that finds the IP table full.
    overflow: Buckets,
    epoch: tokio::time::Instant,
    /// Nanoseconds since `epoch` of the last sweep.
    last_sweep: AtomicU64,
}

/// The key of requests without a peer address (in-process calls).
const NO_PEER: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

impl ClientLimits {
    /// Limits as configured.
    pub fn new(config: ClientLimitsConfig) -> Arc<Self> {
        let rps = config.requests_per_second;
        let per_minute = config.new_circuits_per_minute;
        Arc::new(Self {
            config,
            requests: Rate::new(rps, Duration::from_secs(1), 2 * u64::from(rps)),
            new_circuits: Rate::new(per_minute, Duration::from_secs(60), u64::from(per_minute)),
            nodes: Table::new(),
            peers: Table::new(),
            overflow: Buckets::default(),
            epoch: tokio::time::Instant::now(),
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

    /// Clients tracked now (by node id, by IP).
    pub fn tracked(&self) -> (usize, usize) {
        (self.nodes.map.len(), self.peers.map.len())
    }

    fn now_ns(&self) -> u64 {
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
        let by_node = match client {
            ClientId::Node { node, .. } => {
                let key = node.as_str();
                self.nodes.with(key, max, take).or_else(|| {
                    self.sweep_if_due(now, true)
                        .then(|| self.nodes.with(key, max, take))
                        .flatten()
                })
            }
            ClientId::Peer(_) => None,
        };
        let result = match by_node {
            Some(r) => r,
            None => {
                let ip = match client {
                    ClientId::Node { ip, .. } | ClientId::Peer(ip) => ip.unwrap_or(NO_PEER),
                };
                self.peers
                    .with(&ip, max, take)
                    .or_else(|| {
                        self.sweep_if_due(now, true)
                            .then(|| self.peers.with(&ip, max, take))
                            .flatten()
                    })
                    .unwrap_or_else(|| take(&self.overflow))
            }
        };
        self.sweep_if_due(now, false);
        result.map_err(|retry_after| self.refusal(client, limit, retry_after))
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
        let removed = self.nodes.sweep(now) + self.peers.sweep(now);
        if removed > 0 {
            tracing::debug!(removed, "idle client limit entries swept");
        }
        true
    }

    fn refusal(&self, client: &ClientId, limit: Limit, retry_after: Duration) -> Status {
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

    fn node(n: &str) -> ClientId {
        ClientId::Node {
            node: n.to_owned(),
            ip: Some(IpAddr::from([10, 0, 0, 1])),
        }
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
        assert_eq!(wait, Duration::from_millis(100));
        assert!(rate.take(&tat, 99_999_999, 1).is_err());
        rate.take(&tat, 100_000_000, 1).unwrap();
        assert_eq!(
            rate.take(&tat, 100_000_000, 1).unwrap_err(),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn gcra_grants_a_large_request_only_from_a_full_bucket_and_charges_it() {
        let rate = Rate::new(60, Duration::from_secs(60), 60).unwrap();
        let tat = AtomicU64::new(0);
        rate.take(&tat, 0, 100).unwrap();
        // 100 s of debt, minus the 60 s the bucket holds, before one more.
        assert_eq!(rate.take(&tat, 0, 1).unwrap_err(), Duration::from_secs(41));
        // Another oversized request waits for the bucket to be full again.
        assert_eq!(
            rate.take(&tat, 0, 100).unwrap_err(),
            Duration::from_secs(100)
        );
        rate.take(&tat, 100_000_000_000, 100).unwrap();
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
        assert!(s.message().contains("node \"a\""), "{}", s.message());
        assert!(
            s.message().contains("retry after 200 ms"),
            "{}",
            s.message()
        );
        // Another node has its own bucket.
        l.check_request(&node("b")).unwrap();
        tokio::time::advance(Duration::from_millis(200)).await;
        l.check_request(&node("a")).unwrap();
        assert!(l.check_request(&node("a")).is_err());
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
        assert_eq!(l.tracked(), (0, 0));
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
    async fn a_full_table_falls_back_to_the_peer_ip_and_idle_entries_are_swept() {
        let l = limits(1, 0, 2);
        l.check_request(&node("a")).unwrap();
        l.check_request(&node("b")).unwrap();
        // The table is full: "c" and "d" share their IP's bucket (burst 2).
        l.check_request(&node("c")).unwrap();
        l.check_request(&node("d")).unwrap();
        let s = l.check_request(&node("e")).unwrap_err();
        assert!(s.message().contains("node \"e\""), "{}", s.message());
        assert_eq!(l.tracked(), (2, 1));
        // Once every bucket has refilled, a newcomer's sweep frees room.
        tokio::time::advance(SWEEP_INTERVAL).await;
        l.check_request(&node("f")).unwrap();
        assert_eq!(l.tracked(), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_distinct_ids_and_ips_stays_bounded() {
        let l = limits(1000, 0, 100);
        for i in 0..10_000u32 {
            let c = ClientId::Node {
                node: format!("flood-{i}"),
                ip: Some(IpAddr::from(i.to_be_bytes())),
            };
            let _ = l.check_request(&c);
            tokio::time::advance(Duration::from_micros(100)).await;
        }
        let (nodes, peers) = l.tracked();
        assert!(nodes <= 100 && peers <= 100, "{nodes} {peers}");
    }
}
