//! Serving: wires the core, the gRPC services, health, reflection and the
//! transport limits together, and shuts down gracefully within a bound.
//!
//! [`serve`] is what both the binary and the end-to-end tests run, so the
//! tests exercise the real wiring. The caller binds the listener (port 0
//! works: the bound address is logged as `listen_addr`).

use std::{future::Future, io, net::SocketAddr, sync::Arc};

use breakerd_core::{Registry, store::Store};
use tokio::{net::TcpListener, sync::oneshot};
use tonic::transport::Server;
use tonic_health::{ServingStatus, pb::health_server::HealthServer, server::HealthReporter};

use crate::{
    config::{Config, security_warnings},
    grpc::{self, ADMIN_SERVICE_NAME, BREAKER_SERVICE_NAME, health::DrainingHealth},
    http::{self as side_port, HttpState},
    listener,
    middleware::{
        auth::AuthLayer,
        metrics::{RpcMetrics, RpcMetricsLayer},
        trace::TraceLayer,
    },
    shutdown::ShutdownSignal,
};

/// Health-checked service names: the whole server (`""`) and both APIs.
pub const HEALTH_SERVICES: [&str; 3] = ["", BREAKER_SERVICE_NAME, ADMIN_SERVICE_NAME];

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The listener has no local address.
    #[error("cannot read the listen address: {0}")]
    LocalAddr(#[source] io::Error),
    /// The reflection service could not be built from the descriptors.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The store could not be opened or loaded.
    #[error("cannot load the store: {0}")]
    Store(#[from] breakerd_core::store::StoreError),
    /// The task loading the store died.
    #[error("store loading task failed: {0}")]
    StoreTask(#[from] tokio::task::JoinError),
}

/// The registry, restored from the store in `config.store` when there is
/// one. Runs before anything is served, so no call sees a half-loaded state.
async fn load_registry(config: &Config) -> Result<Arc<Registry>, ServeError> {
    let Some(dir) = config.store.clone() else {
        tracing::warn!(
            "no store configured: overrides and open circuits will not survive a restart"
        );
        return Ok(Registry::new(
            config.registry_config(),
            config.resolver.clone(),
        ));
    };
    let started = std::time::Instant::now();
    let (store, loaded) = tokio::task::spawn_blocking(move || Store::open(&dir)).await??;
    let circuits = loaded.circuits.len();
    let registry = Registry::restore(
        config.registry_config(),
        config.resolver.clone(),
        store,
        loaded,
    );
    tracing::info!(
        circuits,
        store_load_ms = started.elapsed().as_millis() as u64,
        "state loaded"
    );
    Ok(registry)
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for name in HEALTH_SERVICES {
        health.set_service_status(name, status).await;
    }
}

/// Serves the API on `listener` until `shutdown` completes, then drains.
///
/// Health reports `NOT_SERVING` until the registry is ready, `SERVING`
/// while it serves, and `NOT_SERVING` again as soon as shutdown begins. On
/// shutdown the listener closes, Watch and ReportStream streams end with
/// `UNAVAILABLE`, and in-flight calls get `config.shutdown_drain` to finish
/// before this returns anyway.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_with_http(config, listener, None, shutdown).await
}

/// [`serve`], plus the HTTP side port (metrics, dashboard) on
/// `http_listener` when given; its bound address is logged as `http_addr`.
/// It stops with the gRPC server.
pub async fn serve_with_http(
    config: Config,
    listener: TcpListener,
    http_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let listen_addr = listener.local_addr().map_err(ServeError::LocalAddr)?;
    // A reporter starts with "" SERVING: flip everything before a single
    // connection is accepted.
    let health = HealthReporter::new();
    set_health(&health, ServingStatus::NotServing).await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(breakerd_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(breakerd_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    // TLS files were checked with the config; this fails only if they
    // changed since, and before anything is loaded or spawned.
    let mut builder = Server::builder();
    if let Some(tls) = &config.tls {
        builder = builder.tls_config(tls.server_config())?;
    }

    let (stop_tx, stop) = ShutdownSignal::new();
    let registry = load_registry(&config).await?;
    let background = registry.spawn_background({
        let mut stop = stop.clone();
        async move { stop.wait().await }
    });
    let (breaker, admin) = grpc::services(
        registry.clone(),
        config.max_message_bytes,
        grpc::ClientLimits::with_clock(config.client_limits, config.client_limits_clock.clone()),
        grpc::WatchStreams::new(config.watch_limits),
        stop.clone(),
    );
    let rpc_metrics = RpcMetrics::new();
    let http_addr = match &http_listener {
        Some(l) => l.local_addr().map_err(ServeError::LocalAddr)?.to_string(),
        None => "off".to_owned(),
    };
    let http_task = http_listener.map(|l| {
        let state = HttpState::new(
            registry.clone(),
            rpc_metrics.clone(),
            config.http.clone(),
            stop.clone(),
        );
        tokio::spawn(side_port::serve(l, state, config.shutdown_drain))
    });

    for warning in security_warnings(&config) {
        tracing::warn!("{warning}");
    }

    // The store is loaded (`load_registry` above): ready to serve.
    set_health(&health, ServingStatus::Serving).await;
    tracing::info!(
        listen_addr = %listen_addr,
        http_addr = %http_addr,
        tls = match &config.tls {
            None => "off",
            Some(t) if t.is_mutual() => "mutual",
            Some(_) => "on",
        },
        auth = config.auth.mode(),
        max_circuits = config.max_circuits,
        max_connections = config.connections.max_connections,
        version = env!("CARGO_PKG_VERSION"),
        "breakerd listening"
    );

    let drain = config.shutdown_drain;
    let (drain_tx, drain_rx) = oneshot::channel::<()>();
    let signal = {
        let health = health.clone();
        async move {
            shutdown.await;
            tracing::info!(
                drain_ms = drain.as_millis() as u64,
                "shutdown requested; draining"
            );
            set_health(&health, ServingStatus::NotServing).await;
            // Ends streams and the background driver.
            let _ = stop_tx.send(true);
            let _ = drain_tx.send(());
        }
    };

    let (incoming, connections) = listener::incoming(listener, config.connections);
    if let Some(age) = config.max_connection_age {
        builder = builder
            .max_connection_age(age)
            .max_connection_age_grace(config.max_connection_age_grace);
    }
    let server = builder
        .timeout(config.request_timeout)
        .max_concurrent_streams(config.http2_max_concurrent_streams)
        .http2_keepalive_interval(config.http2_keepalive_interval)
        .http2_keepalive_timeout(Some(config.http2_keepalive_timeout))
        .http2_max_header_list_size(config.http2_max_header_list_size)
        .http2_max_pending_accept_reset_streams(Some(config.http2_max_pending_accept_reset_streams))
        .http2_max_local_error_reset_streams(Some(config.http2_max_local_error_reset_streams))
        .layer(TraceLayer)
        .layer(RpcMetricsLayer::new(rpc_metrics))
        // Innermost: refusals are traced and counted like any answer, and
        // answered before a handler could change anything.
        .layer(AuthLayer::new(config.auth.clone()))
        .add_service(HealthServer::new(DrainingHealth::new(
            health.clone(),
            stop.clone(),
        )))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(breaker)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming, signal);

    let result = tokio::select! {
        result = server => result.map_err(ServeError::from),
        () = async {
            if drain_rx.await.is_err() {
                // The server ended before shutdown began; its branch wins.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(drain).await;
        } => {
            tracing::warn!(drain_ms = drain.as_millis() as u64, "drain deadline passed; closing remaining connections");
            Ok(())
        }
    };
    if let Some(background) = background {
        background.abort();
    }
    if let Some(mut http_task) = http_task {
        // It drains on the same signal; do not wait past the drain bound.
        if tokio::time::timeout(drain, &mut http_task).await.is_err() {
            http_task.abort();
        }
    }
    // Whatever was queued for the store (transitions since the last admin
    // call) reaches the disk before the process exits.
    if let Err(e) = registry.durable().await {
        tracing::error!(error = %e, "store flush on shutdown failed");
    }
    tracing::info!(
        connections_accepted = connections.accepted(),
        connections_refused_at_cap = connections.refused_at_cap(),
        preface_timeouts = connections.preface_timeouts(),
        accept_errors = connections.accept_errors(),
        "breakerd stopped"
    );
    result
}

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "signal received"),
        () = term => tracing::info!(signal = "SIGTERM", "signal received"),
    }
}
