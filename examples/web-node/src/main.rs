//! web-node: a web node that serves `GET /quote?symbol=ACME` from a flaky
//! upstream, protected by breakerd.
//!
//! Every quote goes through the fleet-wide circuit (one per upstream), with
//! a per-attempt timeout, up to 3 attempts with exponential backoff and
//! jitter bounded by a retry budget, and then fallback tiers: the last good
//! price (60 s), a reference-price table (the "alternative path"), and
//! finally a static "no price" answer. Logs are JSON; the incoming
//! `x-trace-id` / `traceparent` travels to the upstream and to the
//! coordinator.
//!
//! ```text
//! cargo run -p web-node -- --coordinator http://127.0.0.1:50051 --listen 127.0.0.1:8080
//! ```

mod quote;
mod trace_ctx;
mod upstream;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use breakerd_client::Coordinator;
use breakerd_client::fallback::Fallback;
use breakerd_client::retry::RetryPolicy;
use clap::Parser;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use crate::quote::App;
use crate::upstream::{Chaos, UpstreamClient};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "A web node serving quotes from a flaky upstream through breakerd."
)]
struct Args {
    /// The breakerd coordinator.
    #[arg(
        long,
        env = "BREAKERD_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    coordinator: String,
    /// Where this node serves HTTP.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// This node's id, as the coordinator sees it.
    #[arg(long, env = "NODE_ID", default_value = "web-node-1")]
    node_id: String,
    /// The circuit guarding the upstream (shared by every node).
    #[arg(long, default_value = "pricing")]
    circuit: String,
    /// Base URL of a real upstream; without it a simulated one is started
    /// in-process on --upstream-listen.
    #[arg(long)]
    upstream: Option<String>,
    /// Where the simulated upstream listens (port 0: any).
    #[arg(long, default_value = "127.0.0.1:0")]
    upstream_listen: SocketAddr,
    /// Share of simulated upstream answers that are 503.
    #[arg(long, default_value_t = 0.2)]
    failure_rate: f64,
    /// Share of simulated upstream answers that take 5 s.
    #[arg(long, default_value_t = 0.05)]
    slow_rate: f64,
    /// Latency of a normal simulated answer, in milliseconds.
    #[arg(long, default_value_t = 15)]
    upstream_latency_ms: u64,
    /// Timeout of each upstream attempt, in milliseconds.
    #[arg(long, default_value_t = 250)]
    timeout_ms: u64,
    /// Attempts per quote (1..=10).
    #[arg(long, default_value_t = 3)]
    attempts: u32,
    /// How long a last good price may be served, in seconds.
    #[arg(long, default_value_t = 60)]
    cache_ttl_secs: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let chaos = Arc::new(Chaos::new(
        args.failure_rate,
        args.slow_rate,
        Duration::from_millis(args.upstream_latency_ms),
    ));
    let upstream_base = match &args.upstream {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let addr = upstream::spawn_simulated(args.upstream_listen, Arc::clone(&chaos)).await?;
            info!(%addr, failure_rate = args.failure_rate, slow_rate = args.slow_rate, "simulated upstream listening");
            format!("http://{addr}")
        }
    };

    // Never waits on the network: a coordinator that is down only means
    // the circuit decides locally (degraded mode) until it is back.
    let coordinator = Coordinator::builder()
        .endpoint(args.coordinator.clone())
        .node_id(args.node_id.clone())
        .build()?;
    let circuit = coordinator.circuit(&args.circuit)?;
    let retry = RetryPolicy::builder()
        .max_attempts(args.attempts)
        .base_delay(Duration::from_millis(50))
        .max_delay(Duration::from_millis(500))
        .build()?;
    let fallback = Fallback::new()
        .last_known_good(Duration::from_secs(args.cache_ttl_secs))
        .max_entries(10_000)
        .alternative(|symbol: String| async move {
            // A slower, end-of-day reference table: still a real price.
            tokio::time::sleep(Duration::from_millis(5)).await;
            upstream::reference_price(&symbol)
                .map(Some)
                .ok_or("no reference price")
        })
        .static_value(None);

    let app = Arc::new(App {
        coordinator,
        circuit,
        retry,
        fallback,
        upstream: UpstreamClient::new(upstream_base),
        timeout: Duration::from_millis(args.timeout_ms),
        chaos,
    });

    let listener = TcpListener::bind(args.listen).await?;
    info!(addr = %listener.local_addr()?, coordinator = %args.coordinator, circuit = %args.circuit, "web-node listening");
    serve(listener, Arc::clone(&app), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    info!("shutting down");
    // Hand the last outcomes to the coordinator before leaving.
    let _ = tokio::time::timeout(Duration::from_secs(1), app.coordinator.flush()).await;
    Ok(())
}

/// Serve HTTP/1 on `listener` until `shutdown` completes.
async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<Incoming>| {
                let app = Arc::clone(&app);
                async move { Ok::<_, Infallible>(app.handle(req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                warn!(%peer, error = %e, "connection error");
            }
        });
    }
}

/// A JSON response.
pub(crate) fn json(
    status: http::StatusCode,
    body: &serde_json::Value,
) -> hyper::Response<Full<Bytes>> {
    let mut res = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    res
}

#[cfg(test)]
mod tests;
