//! What the side port's handlers share: [`HttpState`], the checked
//! [`HttpConfig`] it is served with, and the limits every request meets.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use breakerd_core::Registry;

use super::{cache::SnapshotCache, hosts::AllowedHosts};
use crate::{middleware::metrics::RpcMetrics, shutdown::ShutdownSignal, token::Token};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Default of [`HttpLimits::sse_max_clients`].
pub const MAX_SSE_CLIENTS: usize = 64;

/// The side port's bounds on connections and streams (`[http]` keys of the
/// same names; the defaults are these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Most connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Most connections from one IP address; more are answered 429 and
    /// closed, so one peer cannot hold every slot.
    pub max_connections_per_peer: usize,
    /// A client must send each request's headers within this.
    pub header_timeout: Duration,
    /// Most `/events` streams open at once; more get 503.
    pub sse_max_clients: usize,
    /// Most `/events` streams from one IP address; more get 429.
    pub sse_max_clients_per_peer: usize,
    /// A stream whose client reads nothing for this long, while its small
    /// buffer is full, is closed.
    pub sse_stall_timeout: Duration,
    /// Lists are served from a copy at most this old, and taken at most
    /// once per this interval for new event streams.
    pub list_cache: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: super::server::MAX_CONNECTIONS,
            max_connections_per_peer: 32,
            header_timeout: super::server::HEADER_TIMEOUT,
            sse_max_clients: MAX_SSE_CLIENTS,
            sse_max_clients_per_peer: 8,
            sse_stall_timeout: Duration::from_secs(10),
            list_cache: Duration::from_secs(1),
        }
    }
}

/// The admin token of the write routes.
pub type AdminToken = Token;

/// The checked `[http]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Where to serve (`None`: the side port is off).
    pub listen: Option<SocketAddr>,
    /// Whether `listen` was asked for (by flag, variable or file) rather
    /// than being the built-in default: only then is failing to bind it
    /// fatal. The default port may well be taken by another breakerd on the
    /// same host (tests, a second instance), and the side port is not worth
    /// refusing to coordinate for.
    pub listen_required: bool,
    /// The admin token (`None`: write actions are refused).
    pub admin_token: Option<AdminToken>,
    /// Cap on per-circuit metric series.
    pub max_circuit_series: usize,
    /// Connection and stream bounds.
    pub limits: HttpLimits,
    /// The `Host` headers served.
    pub allowed_hosts: AllowedHosts,
}

impl HttpConfig {
    /// Off, without token, every bound at its default (for tests).
    pub fn new(max_circuit_series: usize) -> Self {
        Self {
            listen: None,
            listen_required: false,
            admin_token: None,
            max_circuit_series,
            limits: HttpLimits::default(),
            allowed_hosts: AllowedHosts::default(),
        }
    }
}

/// Open `/events` streams, in total and per peer address (an address is
/// forgotten with its last stream).
#[derive(Debug, Default)]
pub(super) struct SseClients {
    pub total: usize,
    pub per_peer: HashMap<IpAddr, usize>,
}

/// What the handlers share.
#[derive(Debug)]
pub struct HttpState {
    pub(super) registry: Arc<Registry>,
    pub(super) rpc: Arc<RpcMetrics>,
    pub(super) config: HttpConfig,
    pub(super) shutdown: ShutdownSignal,
    pub(super) sse_clients: Mutex<SseClients>,
    pub(super) cache: SnapshotCache,
    pub(super) started: SystemTime,
}

impl HttpState {
    /// State over `registry` and the gRPC figures of `rpc`; `/events`
    /// streams end when `shutdown` fires.
    pub fn new(
        registry: Arc<Registry>,
        rpc: Arc<RpcMetrics>,
        config: HttpConfig,
        shutdown: ShutdownSignal,
    ) -> Arc<Self> {
        let cache = SnapshotCache::new(registry.clone(), config.limits.list_cache);
        Arc::new(Self {
            cache,
            registry,
            rpc,
            config,
            shutdown,
            sse_clients: Mutex::new(SseClients::default()),
            started: SystemTime::now(),
        })
    }
}
