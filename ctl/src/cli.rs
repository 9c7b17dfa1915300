//! The command line: global connection flags and one subcommand per admin
//! action. Everything that can be checked without the coordinator is
//! checked here, so a typo never costs a round trip or a half-made change.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::duration::parse_nonzero_duration;

/// Where breakerctl connects when neither `--endpoint` nor
/// `BREAKERCTL_ENDPOINT` says otherwise (breakerd's default listen address).
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:50051";

/// breakerctl: inspect and operate the circuits of a breakerd coordinator.
#[derive(Debug, Parser)]
#[command(
    name = "breakerctl",
    version,
    about = "Inspect and operate the circuits of a breakerd coordinator",
    after_help = "Exit codes: 0 ok, 1 breakerd answered with an error, 2 bad command line, \
                  3 breakerd unreachable or too slow."
)]
pub struct Cli {
    /// breakerd's gRPC address (`http://host:port`, `https://host:port` with
    /// --tls-ca; `host:port` means http).
    #[arg(long, env = "BREAKERCTL_ENDPOINT", default_value = DEFAULT_ENDPOINT, global = true)]
    pub endpoint: String,
    /// Bearer token sent as `authorization: Bearer <token>`. Prefer the
    /// variable: a flag is visible to every local user in the process list.
    #[arg(long, env = "BREAKERD_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// PEM CA certificate(s) that signed breakerd's certificate; needed for
    /// an https:// endpoint (no system roots are used).
    #[arg(long, env = "BREAKERCTL_TLS_CA", value_name = "PATH", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for a breakerd requiring mutual TLS (with
    /// --tls-key).
    #[arg(
        long,
        env = "BREAKERCTL_TLS_CERT",
        value_name = "PATH",
        global = true,
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "BREAKERCTL_TLS_KEY",
        value_name = "PATH",
        global = true,
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Name breakerd's certificate must carry [default: the endpoint's host].
    #[arg(long, value_name = "NAME", global = true)]
    pub tls_domain: Option<String>,
    /// Deadline of every call, and of connecting (e.g. 500ms, 5s).
    #[arg(long, default_value = "5s", value_parser = parse_nonzero_duration, global = true)]
    pub timeout: Duration,
    /// Machine-readable output: one JSON document (watch: one per line).
    #[arg(long, global = true)]
    pub json: bool,
    /// Who makes the change, for the audit log [default: $USER@hostname].
    #[arg(long, global = true, value_parser = non_blank)]
    pub actor: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List circuits, ordered by name (follows every page).
    List {
        /// Only names starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Only circuits in this state.
        #[arg(long, value_enum)]
        state: Option<StateFilter>,
        /// Show at most this many circuits.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Circuits asked for per call (1-1000); only tests need to change it.
        #[arg(long, hide = true, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
        page_size: u32,
    },
    /// Show one circuit: state, generation, policy, override, counters, recent transitions.
    Get {
        /// Circuit name.
        name: String,
    },
    /// Print circuit changes as they happen (no names: every circuit). Ctrl-C stops.
    Watch {
        /// Circuits to watch; they are created if missing.
        names: Vec<String>,
    },
    /// Reject every call to a circuit, fleet-wide.
    ForceOpen(OverrideArgs),
    /// Allow every call to a circuit; outcomes do not trip it.
    ForceClosed(OverrideArgs),
    /// Shadow mode: allow every call, keep counting, let the breaker move.
    Disable(OverrideArgs),
    /// Remove the operator override of a circuit.
    Clear(ChangeArgs),
    /// Change some policy fields of a circuit, e.g. consecutive_failures=3 open_base_ms=30s.
    SetPolicy {
        /// The circuit and why.
        #[command(flatten)]
        change: ChangeArgs,
        /// Fields to change as key=value (proto Policy field names; `_ms` fields also take 30s, 10m).
        #[arg(required = true, value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// Back to CLOSED with fresh counters and a new generation.
    Reset(ChangeArgs),
    /// Forget a circuit, its override and its admin policy.
    Delete(ChangeArgs),
    /// Offline: print a stopped coordinator's store as JSON lines for jq
    /// (circuit records, then audit records oldest first; each line has
    /// "table": "circuits" or "audit"). Reads the directory read-only and
    /// refuses a store a running breakerd holds. Connects to nothing.
    #[command(
        after_help = "Examples:\n  breakerctl export-store --data-dir /var/lib/breakerd | jq -c 'select(.table == \"circuits\" and .override_ != null)'\n  breakerctl export-store --data-dir /var/lib/breakerd --tables audit | jq -r '[.seq, .actor, .action, .circuit] | @tsv'"
    )]
    ExportStore {
        /// The coordinator's store directory (`store.path`, e.g. /var/lib/breakerd).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Which records to print.
        #[arg(long, value_enum, default_value = "all")]
        tables: ExportTables,
    },
}

/// `--tables` of `export-store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportTables {
    /// Circuit records (overrides, admin policies, open circuits).
    State,
    /// Audit records.
    Audit,
    /// Both, circuits first.
    All,
}

/// The circuit an admin change is about, and why it is made.
#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// Circuit name.
    pub name: String,
    /// Why, for the audit log (required).
    #[arg(long, value_parser = non_blank)]
    pub reason: String,
}

/// An override change.
#[derive(Debug, Args)]
pub struct OverrideArgs {
    /// The circuit and why.
    #[command(flatten)]
    pub change: ChangeArgs,
    /// Let the override lapse on its own after this long (e.g. 10m, 1h).
    #[arg(long, value_parser = parse_nonzero_duration)]
    pub expires: Option<Duration>,
}

/// `--state` of `list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateFilter {
    /// Calls flow.
    Closed,
    /// Calls rejected.
    Open,
    /// Probing.
    HalfOpen,
}

fn non_blank(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_owned())
    }
}

/// `$USER@hostname`, the default `--actor`: who ran the command, on which
/// machine, so the audit log can be followed back without asking.
pub fn default_actor() -> String {
    let user = ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
        .unwrap_or_else(|| "unknown".into());
    format!("{user}@{}", hostname())
}

/// The machine's name without a dependency: `$HOSTNAME` when exported,
/// else the kernel's (Linux), else `/etc/hostname`, else `localhost`.
fn hostname() -> String {
    let from_env = std::env::var("HOSTNAME").ok();
    let from_files = || {
        ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
    };
    from_env
        .or_else(from_files)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_an_override_with_expiry() {
        let cli = Cli::try_parse_from([
            "breakerctl",
            "force-open",
            "payments",
            "--reason",
            "deploy",
            "--expires",
            "10m",
            "--json",
        ])
        .unwrap();
        assert!(cli.json);
        match cli.command {
            Command::ForceOpen(a) => {
                assert_eq!(a.change.name, "payments");
                assert_eq!(a.change.reason, "deploy");
                assert_eq!(a.expires, Some(Duration::from_secs(600)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "breakerctl",
            "--timeout",
            "250ms",
            "get",
            "x",
            "--endpoint",
            "http://127.0.0.1:1",
        ])
        .unwrap();
        assert_eq!(cli.timeout, Duration::from_millis(250));
        assert_eq!(cli.endpoint, "http://127.0.0.1:1");
    }

    #[test]
    fn refuses_missing_reason_bad_durations_and_zero_limits() {
        for args in [
            &["breakerctl", "clear", "x"][..],
            &["breakerctl", "clear", "x", "--reason", " "],
            &[
                "breakerctl",
                "force-open",
                "x",
                "--reason",
                "r",
                "--expires",
                "10",
            ],
            &[
                "breakerctl",
                "force-open",
                "x",
                "--reason",
                "r",
                "--expires",
                "0s",
            ],
            &["breakerctl", "--timeout", "0s", "get", "x"],
            &["breakerctl", "list", "--limit", "0"],
            &["breakerctl", "list", "--state", "ajar"],
            &["breakerctl", "set-policy", "x", "--reason", "r"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn list_state_takes_half_open() {
        let cli =
            Cli::try_parse_from(["breakerctl", "list", "--state", "half-open", "--limit", "3"])
                .unwrap();
        match cli.command {
            Command::List { state, limit, .. } => {
                assert_eq!((state, limit), (Some(StateFilter::HalfOpen), Some(3)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn default_actor_is_user_at_host() {
        let actor = default_actor();
        let (user, host) = actor.split_once('@').unwrap();
        assert!(!user.is_empty() && !host.is_empty(), "{actor}");
    }
}
