//! The gRPC adapter: `breakerd.v1.Breaker` and `breakerd.v1.Admin` on top
//! of the core [`Registry`].
//!
//! Handlers only check and convert their input ([`convert`]) and call the
//! core; they hold no state of their own. Long-lived streams end when the
//! server starts shutting down, so a graceful drain does not wait for them.

pub mod admin;
pub mod auth;
pub mod breaker;
pub mod convert;
pub mod health;
pub mod limits;
pub mod tls;
pub mod trace;

use std::sync::Arc;

use breakerd_proto::v1::{admin_server::AdminServer, breaker_server::BreakerServer};
use tokio::sync::watch;
use tonic::server::NamedService;

pub use admin::AdminService;
pub use breaker::BreakerService;
pub use limits::{ClientLimits, ClientLimitsConfig};

use breakerd_core::Registry;

/// Full gRPC name of the data-plane service, as health checks know it.
pub const BREAKER_SERVICE_NAME: &str = <BreakerServer<BreakerService> as NamedService>::NAME;
/// Full gRPC name of the admin service, as health checks know it.
pub const ADMIN_SERVICE_NAME: &str = <AdminServer<AdminService> as NamedService>::NAME;

/// Says when the server begins shutting down: streams watch it and end.
/// A dropped sender counts as shutdown too.
#[derive(Debug, Clone)]
pub struct ShutdownSignal(watch::Receiver<bool>);

impl ShutdownSignal {
    /// A signal and the sender that fires it (`send(true)`).
    pub fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    /// Completes once shutdown has begun.
    pub async fn wait(&mut self) {
        // An error means the sender is gone, which is shutdown as well.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

/// The two API services, with message size and per-client limits applied.
pub fn services(
    registry: Arc<Registry>,
    max_message_bytes: usize,
    limits: Arc<ClientLimits>,
    shutdown: ShutdownSignal,
) -> (BreakerServer<BreakerService>, AdminServer<AdminService>) {
    let breaker = BreakerServer::new(
        BreakerService::new(registry.clone(), shutdown).with_limits(limits.clone()),
    )
    .max_decoding_message_size(max_message_bytes)
    .max_encoding_message_size(max_message_bytes);
    let admin = AdminServer::new(AdminService::new(registry).with_limits(limits))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    (breaker, admin)
}
