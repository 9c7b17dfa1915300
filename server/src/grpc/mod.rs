//! The gRPC adapter: `breakerd.v1.Breaker` and `breakerd.v1.Admin` on top
//! of the core [`Registry`].
//!
//! Handlers only check and convert their input ([`convert`]) and call the
//! core; they hold no state of their own. Long-lived streams end when the
//! server starts shutting down, so a graceful drain does not wait for them.

pub mod admin;
pub mod breaker;
pub mod convert;
pub mod health;
pub mod limits;
pub mod principal;
pub mod streams;

use std::sync::Arc;

use breakerd_proto::v1::{admin_server::AdminServer, breaker_server::BreakerServer};
use tonic::server::NamedService;

pub use admin::AdminService;
pub use breaker::BreakerService;
pub use limits::{ClientLimits, ClientLimitsConfig, ManualClock};
pub use principal::Principal;
pub use streams::{WatchLimits, WatchStreams};

pub use crate::shutdown::ShutdownSignal;
use breakerd_core::Registry;

/// Full gRPC name of the data-plane service, as health checks know it.
pub const BREAKER_SERVICE_NAME: &str = <BreakerServer<BreakerService> as NamedService>::NAME;
/// Full gRPC name of the admin service, as health checks know it.
pub const ADMIN_SERVICE_NAME: &str = <AdminServer<AdminService> as NamedService>::NAME;

/// The two API services, with message size, per-client limits and the
/// Watch stream caps applied.
pub fn services(
    registry: Arc<Registry>,
    max_message_bytes: usize,
    limits: Arc<ClientLimits>,
    watch_streams: Arc<WatchStreams>,
    shutdown: ShutdownSignal,
) -> (BreakerServer<BreakerService>, AdminServer<AdminService>) {
    let breaker = BreakerServer::new(
        BreakerService::new(registry.clone(), shutdown)
            .with_limits(limits.clone())
            .with_watch_streams(watch_streams, max_message_bytes),
    )
    .max_decoding_message_size(max_message_bytes)
    .max_encoding_message_size(max_message_bytes);
    let admin = AdminServer::new(AdminService::new(registry).with_limits(limits))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    (breaker, admin)
}
