//! What the side port's handlers share: [`HttpState`], the checked
//! [`HttpConfig`] it is served with, and the limits every request meets.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicUsize},
    time::SystemTime,
};

use breakerd_core::Registry;

use crate::{middleware::metrics::RpcMetrics, shutdown::ShutdownSignal, token::Token};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Most `/events` streams open at once; more get 503.
pub const MAX_SSE_CLIENTS: usize = 64;

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
}

/// What the handlers share.
#[derive(Debug)]
pub struct HttpState {
    pub(super) registry: Arc<Registry>,
    pub(super) rpc: Arc<RpcMetrics>,
    pub(super) config: HttpConfig,
    pub(super) shutdown: ShutdownSignal,
    pub(super) sse_clients: AtomicUsize,
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
        Arc::new(Self {
            registry,
            rpc,
            config,
            shutdown,
            sse_clients: AtomicUsize::new(0),
            started: SystemTime::now(),
        })
    }
}
