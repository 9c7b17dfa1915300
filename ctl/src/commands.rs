//! Running a parsed command: connect once, make the calls (each under
//! `--timeout`, each carrying the bearer token when one is set), print the
//! result as a table or as JSON.

use std::{
    future::Future,
    io::{self, Write},
    time::Duration,
};

use breakerd_proto::v1::{
    self as pb, OverrideKind, admin_client::AdminClient, breaker_client::BreakerClient,
};
use serde::Serialize;
use tonic::{
    Request, Response, Status,
    metadata::{Ascii, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use crate::{
    cli::{ChangeArgs, Cli, Command, OverrideArgs, StateFilter, default_actor},
    error::CtlError,
    policy_args::parse_policy_args,
    view::{self, CircuitView, DetailView, ListView, WatchLine},
};

/// What `watch` calls itself on the Watch stream (node ids may not hold `@`).
const WATCH_NODE_ID: &str = "breakerctl";

/// Runs one command to completion.
pub async fn run(cli: Cli) -> Result<(), CtlError> {
    if let Command::ExportStore { data_dir, tables } = &cli.command {
        return export_store(data_dir, *tables);
    }
    // Check everything local before touching the network.
    let policy = match &cli.command {
        Command::SetPolicy { settings, .. } => {
            Some(parse_policy_args(settings).map_err(|e| CtlError::Usage(e.to_string()))?)
        }
        _ => None,
    };
    let endpoint = normalize_endpoint(&cli.endpoint)?;
    let tls = tls_config(&cli, &endpoint)?;
    let auth = bearer(cli.token.as_deref())?;
    let actor = cli.actor.clone().unwrap_or_else(default_actor);
    let ctl = Ctl::connect(endpoint, cli.timeout, auth, tls).await?;
    let json = cli.json;

    match cli.command {
        Command::List {
            prefix,
            state,
            limit,
            page_size,
        } => {
            let list = ctl.list(prefix, state, limit, page_size.into()).await?;
            if json {
                print_json(&list)
            } else {
                print(&view::render_list(&list))
            }
        }
        Command::Get { name } => {
            let detail = ctl
                .admin(
                    |mut a, r| async move { a.get_circuit(r).await },
                    pb::GetCircuitRequest { name },
                )
                .await?;
            print_detail(json, &DetailView::from(&detail))
        }
        Command::Watch { names } => ctl.watch(names, json).await,
        Command::ForceOpen(args) => {
            ctl.set_override(OverrideKind::ForcedOpen, args, actor, json)
                .await
        }
        Command::ForceClosed(args) => {
            ctl.set_override(OverrideKind::ForcedClosed, args, actor, json)
                .await
        }
        Command::Disable(args) => {
            ctl.set_override(OverrideKind::Disabled, args, actor, json)
                .await
        }
        Command::Clear(ChangeArgs { name, reason }) => {
            let req = pb::ClearOverrideRequest {
                name,
                actor,
                reason,
            };
            let detail = ctl
                .admin(|mut a, r| async move { a.clear_override(r).await }, req)
                .await?;
            print_change(json, &DetailView::from(&detail))
        }
        Command::SetPolicy {
            change: ChangeArgs { name, reason },
            ..
        } => {
            let req = pb::SetPolicyRequest {
                name,
                policy,
                actor,
                reason,
            };
            let detail = ctl
                .admin(|mut a, r| async move { a.set_policy(r).await }, req)
                .await?;
            let detail = DetailView::from(&detail);
            if json {
                print_json(&detail)
            } else {
                let mut text = view::render_summary(&detail.circuit);
                text.push('\n');
                text.push_str(&format!(
                    "policy version {}:\n",
                    detail.circuit.policy_version
                ));
                if let Some(p) = &detail.circuit.policy {
                    text.push_str(&view::render_policy(p));
                }
                print(&text)
            }
        }
        Command::Reset(ChangeArgs { name, reason }) => {
            let req = pb::ResetCircuitRequest {
                name,
                actor,
                reason,
            };
            let detail = ctl
                .admin(|mut a, r| async move { a.reset_circuit(r).await }, req)
                .await?;
            print_change(json, &DetailView::from(&detail))
        }
        Command::Delete(ChangeArgs { name, reason }) => {
            let req = pb::DeleteCircuitRequest {
                name,
                actor,
                reason,
            };
            let resp = ctl
                .admin(|mut a, r| async move { a.delete_circuit(r).await }, req)
                .await?;
            #[derive(Serialize)]
            struct Deleted {
                name: String,
                deleted: bool,
            }
            if json {
                print_json(&Deleted {
                    name: resp.name,
                    deleted: true,
                })
            } else {
                print(&format!("{}: deleted\n", resp.name))
            }
        }
        Command::ExportStore { data_dir, tables } => export_store(&data_dir, tables),
    }
}

/// `host:port` becomes `http://host:port`; schemes other than http and
/// https are refused up front (they would fail later, less clearly).
fn normalize_endpoint(raw: &str) -> Result<String, CtlError> {
    let raw = raw.trim().trim_end_matches('/');
    let endpoint = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    };
    if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
        return Err(CtlError::Usage(format!(
            "--endpoint {endpoint:?}: only http:// and https:// endpoints are supported"
        )));
    }
    Endpoint::from_shared(endpoint.clone()).map_err(|e| {
        CtlError::Usage(format!(
            "--endpoint {endpoint:?} is not a valid address: {e}"
        ))
    })?;
    Ok(endpoint)
}

/// The TLS settings for an https:// `endpoint` from --tls-ca, --tls-cert,
/// --tls-key and --tls-domain; `None` for http://.
fn tls_config(cli: &Cli, endpoint: &str) -> Result<Option<ClientTlsConfig>, CtlError> {
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| CtlError::Usage(format!("{flag} {}: cannot read: {e}", path.display())))
    };
    if !endpoint.starts_with("https://") {
        if cli.tls_ca.is_some() || cli.tls_cert.is_some() || cli.tls_domain.is_some() {
            return Err(CtlError::Usage(format!(
                "--tls-* options need an https:// endpoint, not {endpoint:?}"
            )));
        }
        return Ok(None);
    }
    let Some(ca) = &cli.tls_ca else {
        return Err(CtlError::Usage(format!(
            "--endpoint {endpoint:?}: give --tls-ca PATH, the CA that signed breakerd's certificate"
        )));
    };
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?));
    if let Some(domain) = &cli.tls_domain {
        tls = tls.domain_name(domain.clone());
    }
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        tls = tls.identity(Identity::from_pem(
            read("--tls-cert", cert)?,
            read("--tls-key", key)?,
        ));
    }
    Ok(Some(tls))
}

/// The `authorization` metadata value for a token, if one is set.
fn bearer(token: Option<&str>) -> Result<Option<MetadataValue<Ascii>>, CtlError> {
    match token.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => MetadataValue::try_from(format!("Bearer {t}"))
            .map(Some)
            .map_err(|_| {
                CtlError::Usage(
                    "--token / BREAKERD_TOKEN holds characters not allowed in a header".into(),
                )
            }),
    }
}

fn print(text: &str) -> Result<(), CtlError> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CtlError::Output)
}

fn print_json<T: Serialize>(value: &T) -> Result<(), CtlError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| CtlError::Output(e.into()))?;
    text.push('\n');
    print(&text)
}

fn print_detail(json: bool, detail: &DetailView) -> Result<(), CtlError> {
    if json {
        print_json(detail)
    } else {
        print(&view::render_detail(detail))
    }
}

/// After a change: the full detail as JSON, or one summary line.
fn print_change(json: bool, detail: &DetailView) -> Result<(), CtlError> {
    if json {
        print_json(detail)
    } else {
        print(&format!("{}\n", view::render_summary(&detail.circuit)))
    }
}

/// A connection to breakerd and the settings every call shares.
struct Ctl {
    endpoint: String,
    timeout: Duration,
    auth: Option<MetadataValue<Ascii>>,
    channel: Channel,
}

impl Ctl {
    /// Connects eagerly, so that a coordinator that is down is reported as
    /// such, once, before any command runs.
    async fn connect(
        endpoint: String,
        timeout: Duration,
        auth: Option<MetadataValue<Ascii>>,
        tls: Option<ClientTlsConfig>,
    ) -> Result<Self, CtlError> {
        let mut channel = Endpoint::from_shared(endpoint.clone())
            .map_err(|e| CtlError::Usage(format!("--endpoint {endpoint:?}: {e}")))?
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        if let Some(tls) = tls {
            channel = channel
                .tls_config(tls)
                .map_err(|e| CtlError::Usage(format!("TLS settings: {e}")))?;
        }
        let channel = match tokio::time::timeout(timeout, channel.connect()).await {
            Err(_) => return Err(CtlError::Timeout { endpoint, timeout }),
            Ok(Err(e)) => return Err(CtlError::unreachable(&endpoint, &e)),
            Ok(Ok(channel)) => channel,
        };
        Ok(Ctl {
            endpoint,
            timeout,
            auth,
            channel,
        })
    }

    /// A request carrying the token, and the deadline as `grpc-timeout` so
    /// the server stops working on it when we stop waiting.
    fn request<T>(&self, msg: T, deadline: bool) -> Request<T> {
        let mut req = Request::new(msg);
        if deadline {
            req.set_timeout(self.timeout);
        }
        if let Some(auth) = &self.auth {
            req.metadata_mut().insert("authorization", auth.clone());
        }
        req
    }

    /// Waits for a call under `--timeout` and maps its failure.
    async fn finish<T>(
        &self,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, CtlError> {
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(CtlError::Timeout {
                endpoint: self.endpoint.clone(),
                timeout: self.timeout,
            }),
            // The server gave up at our grpc-timeout first: the same thing.
            Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
                Err(CtlError::Timeout {
                    endpoint: self.endpoint.clone(),
                    timeout: self.timeout,
                })
            }
            Ok(Err(status)) => Err(CtlError::from_status(&self.endpoint, status)),
            Ok(Ok(resp)) => Ok(resp.into_inner()),
        }
    }

    /// One unary Admin call.
    async fn admin<Req, Resp, F, Fut>(&self, call: F, msg: Req) -> Result<Resp, CtlError>
    where
        F: FnOnce(AdminClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let client = AdminClient::new(self.channel.clone());
        self.finish(call(client, self.request(msg, true))).await
    }

    async fn set_override(
        &self,
        kind: OverrideKind,
        args: OverrideArgs,
        actor: String,
        json: bool,
    ) -> Result<(), CtlError> {
        let OverrideArgs {
            change: ChangeArgs { name, reason },
            expires,
        } = args;
        let req = pb::SetOverrideRequest {
            name,
            kind: kind as i32,
            actor,
            reason,
            expires_in_ms: expires.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        let detail = self
            .admin(|mut a, r| async move { a.set_override(r).await }, req)
            .await?;
        print_change(json, &DetailView::from(&detail))
    }

    /// Every page of ListCircuits, up to `limit` circuits.
    async fn list(
        &self,
        prefix: String,
        state: Option<StateFilter>,
        limit: Option<u64>,
        page_size: u64,
    ) -> Result<ListView, CtlError> {
        let state = match state {
            None => pb::CircuitState::Unspecified,
            Some(StateFilter::Closed) => pb::CircuitState::Closed,
            Some(StateFilter::Open) => pb::CircuitState::Open,
            Some(StateFilter::HalfOpen) => pb::CircuitState::HalfOpen,
        };
        let mut circuits: Vec<CircuitView> = Vec::new();
        let mut total_matching;
        let mut page_token = String::new();
        loop {
            let want = limit.map_or(page_size, |l| (l - circuits.len() as u64).min(page_size));
            let req = pb::ListCircuitsRequest {
                prefix: prefix.clone(),
                state: state as i32,
                page_size: want as u32,
                page_token: page_token.clone(),
            };
            let page = self
                .admin(|mut a, r| async move { a.list_circuits(r).await }, req)
                .await?;
            total_matching = page.total_matching;
            circuits.extend(page.circuits.iter().map(CircuitView::from));
            if let Some(l) = limit {
                circuits.truncate(usize::try_from(l).unwrap_or(usize::MAX));
                if circuits.len() as u64 >= l {
                    break;
                }
            }
            if page.next_page_token.is_empty() {
                break;
            }
            if page.next_page_token == page_token || page.circuits.is_empty() {
                // A server bug would otherwise loop forever.
                return Err(CtlError::Status {
                    code: "INTERNAL",
                    message: format!("pagination made no progress at token {page_token:?}"),
                });
            }
            page_token = page.next_page_token;
        }
        Ok(ListView {
            circuits,
            total_matching,
        })
    }

    /// Prints every event of a Watch stream until Ctrl-C or the stream ends.
    async fn watch(&self, names: Vec<String>, json: bool) -> Result<(), CtlError> {
        let mut client = BreakerClient::new(self.channel.clone());
        // No grpc-timeout on a stream meant to last; --timeout only bounds
        // how long the server takes to accept it.
        let req = self.request(
            pb::WatchRequest {
                circuits: names,
                node_id: WATCH_NODE_ID.into(),
            },
            false,
        );
        let mut stream = self.finish(client.watch(req)).await?;
        loop {
            let next = tokio::select! {
                next = stream.message() => next,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            match next {
                Ok(Some(event)) => {
                    let mut text = String::new();
                    for snapshot in &event.circuits {
                        let circuit = CircuitView::from(snapshot);
                        if json {
                            let line = WatchLine {
                                initial: event.initial,
                                circuit,
                            };
                            let line = serde_json::to_string(&line)
                                .map_err(|e| CtlError::Output(e.into()))?;
                            text.push_str(&line);
                        } else {
                            text.push_str(&view::render_watch_line(event.initial, &circuit));
                        }
                        text.push('\n');
                    }
                    print(&text)?;
                }
                Ok(None) => {
                    return Err(CtlError::StreamEnded {
                        endpoint: self.endpoint.clone(),
                    });
                }
                Err(status) => return Err(CtlError::from_status(&self.endpoint, status)),
            }
        }
    }
}

/// `export-store`: the store of a stopped coordinator as JSON lines on
/// stdout, read through breakerd-core's read-only exporter.
fn export_store(dir: &std::path::Path, tables: crate::cli::ExportTables) -> Result<(), CtlError> {
    use breakerd_core::store::{StoreError, export};
    let tables = match tables {
        crate::cli::ExportTables::State => export::Tables::State,
        crate::cli::ExportTables::Audit => export::Tables::Audit,
        crate::cli::ExportTables::All => export::Tables::All,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match export::export(dir, tables, &mut out) {
        Ok(_) => Ok(()),
        Err(StoreError::Io { path, source }) if path.as_os_str() == "<output>" => {
            Err(CtlError::Output(source))
        }
        Err(e) => Err(CtlError::Store(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_a_scheme_and_lose_a_trailing_slash() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            normalize_endpoint("http://[::1]:7/").unwrap(),
            "http://[::1]:7"
        );
        assert_eq!(normalize_endpoint("https://x:1/").unwrap(), "https://x:1");
        assert!(
            normalize_endpoint("ftp://x:1")
                .unwrap_err()
                .to_string()
                .contains("https://")
        );
        assert!(matches!(
            normalize_endpoint("http://bad host"),
            Err(CtlError::Usage(_))
        ));
    }

    #[test]
    fn tls_flags_and_scheme_must_agree() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            let mut all = vec!["breakerctl"];
            all.extend_from_slice(args);
            all.extend_from_slice(&["get", "x"]);
            Cli::try_parse_from(all).unwrap()
        };
        let cli = parse(&["--endpoint", "https://x:1"]);
        let err = tls_config(&cli, "https://x:1").unwrap_err();
        assert!(err.to_string().contains("--tls-ca"), "{err}");
        let cli = parse(&["--tls-ca", "/nonexistent/ca.pem"]);
        let err = tls_config(&cli, "http://x:1").unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
        let err = tls_config(&cli, "https://x:1").unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
        assert!(tls_config(&parse(&[]), "http://x:1").unwrap().is_none());
        let dir = std::env::temp_dir().join(format!("breakerctl-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "any").unwrap();
        let cli = parse(&[
            "--tls-ca",
            ca.to_str().unwrap(),
            "--tls-domain",
            "localhost",
        ]);
        assert!(tls_config(&cli, "https://x:1").unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
        // A certificate without its key (or the reverse) is a usage error.
        assert!(Cli::try_parse_from(["breakerctl", "--tls-cert", "c.pem", "get", "x"]).is_err());
    }

    #[test]
    fn token_becomes_bearer_metadata() {
        assert!(bearer(None).unwrap().is_none());
        assert!(bearer(Some("  ")).unwrap().is_none());
        assert_eq!(bearer(Some("s3cret")).unwrap().unwrap(), "Bearer s3cret");
        assert!(bearer(Some("bad\ntoken")).is_err());
    }
}
