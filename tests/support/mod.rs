//! Shared helpers for the end-to-end tests: start a coordinator, connect clients.
//!
//! [`TestServer::start`] runs the real [`breakerd::app::serve`] in-process on
//! `127.0.0.1:0` and stops it through a oneshot, so every test gets its own
//! server on its own port. Waiting helpers take a deadline: no test sleeps
//! to wait for a state change.

use std::{future::Future, net::SocketAddr, time::Duration};

use breakerd::{
    app::ServeError,
    config::{Cli, Config, FileConfig},
};
use breakerd_proto::v1::{admin_client::AdminClient, breaker_client::BreakerClient};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::{Channel, ClientTlsConfig};
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;

/// How long a test waits for anything before it fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A config from TOML text, checked like the binary checks it. Without a
/// `[store]` section it runs in memory, so tests never share a store.
pub fn config(toml: &str) -> Config {
    let mut file = FileConfig::parse(toml).unwrap_or_else(|e| panic!("{e}"));
    if !toml.contains("[store]") {
        file.store.path = "none".to_owned();
    }
    Config::from_file(file, &Cli::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// Awaits `fut`, failing the test after [`DEADLINE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// A coordinator running in this process.
#[derive(Debug)]
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// A connected channel, shared by the clients below.
    pub channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestServer {
    /// Starts a coordinator with the built-in defaults and a short drain.
    pub async fn start() -> Self {
        Self::start_with(config("[server]\nshutdown_drain_ms = 2000\n")).await
    }

    /// Starts a coordinator with `config` on `127.0.0.1:0`.
    pub async fn start_with(config: Config) -> Self {
        Self::start_on(config, None).await
    }

    /// Starts a coordinator whose `config` serves TLS (`[tls]`), and
    /// connects [`TestServer::channel`] to `https://127.0.0.1:PORT` with
    /// `tls` (give it the test CA, and `domain_name` matching the server
    /// certificate).
    pub async fn start_tls(config: Config, tls: ClientTlsConfig) -> Self {
        Self::start_on(config, Some(tls)).await
    }

    async fn start_on(config: Config, tls: Option<ClientTlsConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(breakerd::app::serve(config, listener, async {
            let _ = stopped.await;
        }));
        let endpoint = match tls {
            None => Channel::from_shared(format!("http://{addr}")).expect("uri"),
            Some(tls) => Channel::from_shared(format!("https://{addr}"))
                .expect("uri")
                .tls_config(tls)
                .expect("client TLS config"),
        };
        let channel = within("connecting", endpoint.connect())
            .await
            .expect("connect to the test server");
        Self {
            addr,
            channel,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A data-plane client.
    pub fn breaker(&self) -> BreakerClient<Channel> {
        BreakerClient::new(self.channel.clone())
    }

    /// An admin client.
    pub fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel.clone())
    }

    /// A `grpc.health.v1` client.
    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }

    /// A `grpc.reflection.v1` client.
    pub fn reflection(&self) -> ServerReflectionClient<Channel> {
        ServerReflectionClient::new(self.channel.clone())
    }

    /// Begins shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the server the hard way, as close to `kill -9` as one process
    /// allows: the serving task is aborted with no shutdown or drain, so only
    /// what was already made durable survives.
    pub async fn crash(mut self) {
        self.stop.take();
        let task = self.task.take().expect("server task");
        task.abort();
        let _ = task.await;
    }

    /// Shuts down and waits until `serve` has returned.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        self.begin_shutdown();
        let task = self.task.take().expect("server task");
        within("the server to stop", task)
            .await
            .expect("server task panicked")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}
