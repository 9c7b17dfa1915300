//! A connection's checked settings, and the transport built from them.
//!
//! The builder only collects and checks values; turning them into a tonic
//! channel (endpoint, TLS, keep-alive, the bearer-token interceptor) happens
//! here, so no public type of the crate names a tonic one.

use std::fmt;
use std::time::Duration;

use tonic::metadata::AsciiMetadataValue;
use tonic::service::{Interceptor, interceptor::InterceptedService};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use crate::backoff::Backoff;
use crate::error::Error;

/// The settings of one coordinator connection, as the builder collected them.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) endpoint: String,
    pub(crate) node_id: String,
    pub(crate) rpc_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    /// RPC deadlines missed in a row that switch to degraded mode.
    pub(crate) degrade_after_missed: u32,
    pub(crate) queue_capacity: usize,
    pub(crate) batch_size: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) tls: Option<ClientTls>,
    pub(crate) token: Option<Secret>,
}

/// A bearer token; `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// TLS settings of the connection to a coordinator serving TLS (`[tls]` in
/// its config): the CA that signed its certificate, the name to verify,
/// and this node's own certificate when the coordinator requires mutual
/// TLS.
///
/// ```no_run
/// # fn demo(ca: Vec<u8>, cert: Vec<u8>, key: Vec<u8>) {
/// use breakerd_client::{ClientTls, Coordinator};
///
/// let builder = Coordinator::builder()
///     .endpoint("https://breakerd.internal:50051")
///     .tls(ClientTls::new(ca).identity(cert, key))
///     .token(std::env::var("BREAKERD_DATA_TOKEN").unwrap_or_default());
/// # }
/// ```
#[derive(Clone)]
pub struct ClientTls {
    ca_pem: Vec<u8>,
    domain: Option<String>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("domain", &self.domain)
            .field(
                "identity",
                &self.identity.as_ref().map(|_| "<cert and key>"),
            )
            .finish()
    }
}

impl ClientTls {
    /// Trust the coordinator certificates signed by the CA(s) in `ca_pem`
    /// (PEM). No system roots are used.
    pub fn new(ca_pem: impl Into<Vec<u8>>) -> Self {
        Self {
            ca_pem: ca_pem.into(),
            domain: None,
            identity: None,
        }
    }

    /// The name the coordinator's certificate must carry. Default: the
    /// host of the endpoint URI.
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// This node's certificate chain and private key (PEM), for a
    /// coordinator that requires client certificates (mutual TLS).
    pub fn identity(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    fn to_tonic(&self) -> ClientTlsConfig {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some(domain) = &self.domain {
            tls = tls.domain_name(domain.clone());
        }
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        tls
    }
}

/// Puts `authorization: Bearer <token>` on every coordinator RPC, streams
/// included.
#[derive(Clone)]
pub(crate) struct BearerAuth(Option<AsciiMetadataValue>);

impl Interceptor for BearerAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The transport of every coordinator RPC.
pub(crate) type RpcChannel = InterceptedService<Channel, BearerAuth>;

impl Config {
    /// The lazily connecting channel these settings describe: never waits
    /// on the network. Refuses a token that is not header text, and TLS
    /// settings that disagree with the endpoint's scheme.
    pub(crate) fn channel(&self) -> Result<RpcChannel, Error> {
        let auth = match &self.token {
            None => None,
            Some(Secret(t)) => {
                let mut v = AsciiMetadataValue::try_from(format!("Bearer {t}")).map_err(|_| {
                    Error::Config("token: only visible ASCII characters are allowed".into())
                })?;
                // Never put the token in an HPACK table.
                v.set_sensitive(true);
                Some(v)
            }
        };
        let https = self.endpoint.starts_with("https://");
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| Error::Config(format!("endpoint {:?}: {e}", self.endpoint)))?;
        match (&self.tls, https) {
            (Some(tls), true) => {
                endpoint = endpoint
                    .tls_config(tls.to_tonic())
                    .map_err(|e| Error::Config(format!("tls: {e}")))?;
            }
            (None, false) => {}
            (Some(_), false) => {
                return Err(Error::Config(format!(
                    "tls is set but endpoint {:?} is not https://",
                    self.endpoint
                )));
            }
            (None, true) => {
                return Err(Error::Config(format!(
                    "endpoint {:?} is https:// but no tls(ClientTls) is set",
                    self.endpoint
                )));
            }
        }
        let endpoint = endpoint
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            // Notice a coordinator that vanished without closing the
            // connection (host down, partition).
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true);
        Ok(InterceptedService::new(
            endpoint.connect_lazy(),
            BearerAuth(auth),
        ))
    }
}
