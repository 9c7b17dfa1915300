//! Configuration of a [`Coordinator`] connection: the public builder, its
//! defaults, and `Coordinator::builder`.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::circuit::validate_name;
use crate::coordinator::Coordinator;
use crate::error::Error;
use crate::shared::{ClientTls, Config, Secret};

/// Default deadline of every coordinator RPC.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_millis(30);
/// Default TCP connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// Default number of RPC deadlines missed in a row that switch the client
/// to degraded mode.
pub const DEFAULT_DEGRADE_AFTER_MISSED: u32 = 3;
/// Default capacity of the report queue.
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;
/// Default largest report batch.
pub const DEFAULT_BATCH_SIZE: usize = 512;
/// Default longest time an outcome waits in the client before it is sent.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(10);

impl Coordinator {
    /// Start configuring a coordinator connection.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

/// Builds a [`Coordinator`]; start with [`Coordinator::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct Builder {
    config: Config,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            config: Config {
                endpoint: "http://127.0.0.1:50051".into(),
                node_id: String::new(),
                rpc_timeout: DEFAULT_RPC_TIMEOUT,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                degrade_after_missed: DEFAULT_DEGRADE_AFTER_MISSED,
                queue_capacity: DEFAULT_QUEUE_CAPACITY,
                batch_size: DEFAULT_BATCH_SIZE,
                flush_interval: DEFAULT_FLUSH_INTERVAL,
                backoff: Backoff::RECONNECT,
                tls: None,
                token: None,
            },
        }
    }
}

impl Builder {
    /// The coordinator's URI, e.g. `http://127.0.0.1:50051`.
    pub fn endpoint(mut self, uri: impl Into<String>) -> Self {
        self.config.endpoint = uri.into();
        self
    }

    /// This node's identity (1-200 bytes of `[A-Za-z0-9._:/-]`), used by
    /// the quorum rule and in the coordinator's logs. Default: anonymous.
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.config.node_id = id.into();
        self
    }

    /// Deadline of every coordinator RPC: no application call waits longer
    /// on the coordinator. Default 30 ms.
    pub fn rpc_timeout(mut self, d: Duration) -> Self {
        self.config.rpc_timeout = d;
        self
    }

    /// How many coordinator RPC deadlines must be missed in a row before
    /// the client takes the coordinator for gone and switches to degraded
    /// mode. Default 3. One slow RPC is not evidence: a stalled node misses
    /// every deadline inside the stall, and those count once (see the
    /// crate docs). A broken Watch stream or a failed connection switches
    /// at once, whatever this says. A call never waits for the evidence:
    /// a missed deadline decides that call from the last pushed state.
    pub fn degrade_after_missed_deadlines(mut self, n: u32) -> Self {
        self.config.degrade_after_missed = n;
        self
    }

    /// TCP connect timeout. Default 250 ms.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout = d;
        self
    }

    /// Capacity of the report queue; outcomes beyond it are dropped and
    /// counted. Default 65 536.
    pub fn report_queue_capacity(mut self, n: usize) -> Self {
        self.config.queue_capacity = n;
        self
    }

    /// Largest batch sent at once. Default 512.
    pub fn report_batch_size(mut self, n: usize) -> Self {
        self.config.batch_size = n;
        self
    }

    /// Longest time an outcome waits before it is sent (failures and probe
    /// outcomes are sent at once). Default 10 ms.
    pub fn flush_interval(mut self, d: Duration) -> Self {
        self.config.flush_interval = d;
        self
    }

    /// Reconnect backoff: full jitter between 0 and `min(cap, base * 2^n)`.
    /// Default 50 ms base, 5 s cap.
    pub fn reconnect_backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.config.backoff = Backoff::new(base, cap);
        self
    }

    /// Connect with TLS: the endpoint must then be `https://`.
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// Send `authorization: Bearer <token>` on every RPC: the data-plane
    /// token of a coordinator with `[auth] data_token` set. An empty token
    /// sends nothing.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.config.token = (!token.is_empty()).then_some(Secret(token));
        self
    }

    /// Check the configuration and start the connection. Never waits on the
    /// network: the channel connects lazily and the Watch and report
    /// streams are opened by background tasks. Must be called within a
    /// tokio runtime.
    pub fn build(self) -> Result<Coordinator, Error> {
        let c = self.checked()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::Config("Coordinator::build must run inside a tokio runtime".into())
        })?;
        let channel = c.channel()?;
        Ok(Coordinator::start(c, channel, runtime))
    }

    /// [`build`](Self::build) without the background tasks (unit tests).
    #[cfg(test)]
    pub(crate) fn build_detached(self) -> Result<Coordinator, Error> {
        let c = self.checked()?;
        let channel = c.channel()?;
        Ok(Coordinator::start_detached(c, channel))
    }

    fn checked(self) -> Result<Config, Error> {
        let c = self.config;
        if !c.node_id.is_empty() {
            validate_name(&c.node_id).map_err(|e| Error::Config(format!("node id: {e}")))?;
        }
        if c.rpc_timeout.is_zero() {
            return Err(Error::Config("rpc_timeout must be positive".into()));
        }
        if c.degrade_after_missed == 0 {
            return Err(Error::Config(
                "degrade_after_missed_deadlines must be at least 1".into(),
            ));
        }
        if c.queue_capacity == 0 || c.batch_size == 0 || c.batch_size > 10_000 {
            return Err(Error::Config(
                "report_queue_capacity must be positive and report_batch_size within 1..=10000"
                    .into(),
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_keys_never_print() {
        let b = Coordinator::builder()
            .token("data-token-0123456789")
            .tls(ClientTls::new("ca").identity("cert", "PRIVATE-KEY-BYTES"));
        let text = format!("{b:?}");
        assert!(!text.contains("data-token"), "{text}");
        assert!(!text.contains("PRIVATE-KEY-BYTES"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[tokio::test]
    async fn tls_and_scheme_must_agree() {
        let err = Coordinator::builder()
            .endpoint("https://127.0.0.1:1")
            .build()
            .unwrap_err();
        assert!(
            matches!(err, Error::Config(ref m) if m.contains("https")),
            "{err}"
        );
        let err = Coordinator::builder()
            .endpoint("http://127.0.0.1:1")
            .tls(ClientTls::new("ca"))
            .build()
            .unwrap_err();
        assert!(
            matches!(err, Error::Config(ref m) if m.contains("not https")),
            "{err}"
        );
        let err = Coordinator::builder()
            .token("bad\ntoken-0123456789")
            .build()
            .unwrap_err();
        assert!(
            matches!(err, Error::Config(ref m) if m.contains("token")),
            "{err}"
        );
        assert!(!err.to_string().contains("0123456789"));
        Coordinator::builder()
            .token("data-token-0123456789")
            .build()
            .unwrap();
    }
}
