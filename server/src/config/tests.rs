//! The merged config: defaults, precedence, and errors that name their key.

use breakerd_policy::{Policy, PolicySpec};
use clap::Parser;
use std::time::Duration;

use super::*;

fn load_text(text: &str) -> Result<Config, ConfigError> {
    Config::from_file(FileConfig::parse(text)?, &Cli::default())
}

#[test]
fn no_config_gives_the_built_in_defaults() {
    let c = Config::from_file(FileConfig::default(), &Cli::default()).unwrap();
    assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.shutdown_drain, Duration::from_secs(5));
    assert_eq!(c.resolver.resolve("payments"), Policy::default());
    assert_eq!(c.max_circuits, 100_000);
    assert_eq!(c.registry_config().max_circuits, 100_000);
    assert_eq!(c.client_limits, crate::grpc::ClientLimitsConfig::default());
    assert_eq!(c.max_connection_age, None);
}

#[test]
fn an_empty_file_is_the_defaults() {
    let c = load_text("").unwrap();
    let d = Config::default();
    assert_eq!(
        (c.listen, c.max_circuits, c.log_level),
        (d.listen, d.max_circuits, d.log_level)
    );
}

#[test]
fn policy_errors_name_the_rule_and_field() {
    let err = load_text(
        "[[circuits]]\npattern = \"a*\"\n\n[[circuits]]\npattern = \"pay*\"\npolicy = { half_open_max_probes = 0 }\n",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "config error: circuits[1].policy.half_open_max_probes: must be within 1..=1000, not 0"
    );
    let err = load_text("[defaults]\nopen_base_ms = 0\n").unwrap_err();
    assert_eq!(err.key, "defaults.open_base_ms");
}

#[test]
fn rules_layer_on_defaults() {
    let c = load_text(
        "[defaults]\nconsecutive_failures = 7\n\n[[circuits]]\npattern = \"pay*\"\n[circuits.policy]\nopen_base_ms = 1000\n",
    )
    .unwrap();
    let expected = Policy::default()
        .apply(&PolicySpec {
            consecutive_failures: Some(7),
            open_base_ms: Some(1000),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(c.resolver.resolve("payments"), expected);
    let defaults = Policy::default()
        .apply(&PolicySpec {
            consecutive_failures: Some(7),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(c.resolver.resolve("search"), defaults);
}

#[test]
fn unknown_keys_are_refused_everywhere() {
    for (text, word) in [
        ("bogus = 1\n", "bogus"),
        ("[server]\nlisten_addr = \"x\"\n", "listen_addr"),
        ("[limits]\nmax_circuit = 3\n", "max_circuit"),
        ("[log]\nlvl = \"info\"\n", "lvl"),
        (
            "[defaults]\nconsecutive_failure = 3\n",
            "consecutive_failure",
        ),
        (
            "[[circuits]]\npattern = \"a\"\nconsecutive_failures = 3\n",
            "consecutive_failures",
        ),
        (
            "[[circuits]]\npattern = \"a\"\npolicy = { nope = 1 }\n",
            "nope",
        ),
    ] {
        let err = load_text(text).unwrap_err();
        assert!(err.reason.contains(word), "{text:?} gave {err}");
    }
}

#[test]
fn bad_values_name_their_key() {
    for (text, key) in [
        ("[server]\nlisten = \"localhost\"\n", "server.listen"),
        (
            "[server]\nmax_message_bytes = 10\n",
            "server.max_message_bytes",
        ),
        (
            "[server]\nhttp2_max_concurrent_streams = 0\n",
            "server.http2_max_concurrent_streams",
        ),
        ("[limits]\nmax_circuits = 0\n", "limits.max_circuits"),
        (
            "[server]\nhttp2_max_header_list_size = 10\n",
            "server.http2_max_header_list_size",
        ),
        (
            "[server]\nhttp2_max_pending_accept_reset_streams = 0\n",
            "server.http2_max_pending_accept_reset_streams",
        ),
        (
            "[server]\nhttp2_max_local_error_reset_streams = 0\n",
            "server.http2_max_local_error_reset_streams",
        ),
        (
            "[server]\nmax_connection_age_ms = 10\n",
            "server.max_connection_age_ms",
        ),
        (
            "[limits]\nmax_tracked_clients = 0\n",
            "limits.max_tracked_clients",
        ),
        (
            "[limits]\nclient_requests_per_second = 100000001\n",
            "limits.client_requests_per_second",
        ),
        (
            "[limits]\nmax_report_batch = 0\n",
            "limits.max_report_batch",
        ),
        ("[log]\nlevel = \"info,[[[\"\n", "log.level"),
        (
            "[[circuits]]\npattern = \"pay ments\"\n",
            "circuits[0].pattern",
        ),
        ("[[circuits]]\npattern = \"\"\n", "circuits[0].pattern"),
    ] {
        let err = load_text(text).unwrap_err();
        assert_eq!(err.key, key, "{text:?} gave {err}");
    }
    let err = load_text("[log]\nformat = \"xml\"\n").unwrap_err();
    assert!(err.reason.contains("xml"), "{err}");
    assert_eq!(err.key, "line 2");
}

#[test]
fn flags_and_env_win_over_the_file() {
    let file = FileConfig::parse(
        "[server]\nlisten = \"127.0.0.1:7000\"\n[limits]\nmax_circuits = 10\n[log]\nformat = \"text\"\nlevel = \"warn\"\n",
    )
    .unwrap();
    let from_file = Config::from_file(file.clone(), &Cli::default()).unwrap();
    assert_eq!(from_file.listen, "127.0.0.1:7000".parse().unwrap());
    assert_eq!(from_file.max_circuits, 10);
    assert_eq!(from_file.log_format, LogFormat::Text);

    let cli = Cli::try_parse_from([
        "breakerd",
        "--listen",
        "127.0.0.1:0",
        "--max-circuits",
        "3",
        "--log-format",
        "json",
        "--log-level",
        "debug",
    ])
    .unwrap();
    let c = Config::from_file(file, &cli).unwrap();
    assert_eq!(c.listen, "127.0.0.1:0".parse().unwrap());
    assert_eq!(c.max_circuits, 3);
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.log_level, "debug");

    let bad = Cli {
        max_circuits: Some(0),
        ..Cli::default()
    };
    assert_eq!(
        Config::from_file(FileConfig::default(), &bad)
            .unwrap_err()
            .key,
        "--max-circuits"
    );
}

#[test]
fn the_deploy_example_is_valid_and_documents_every_key() {
    let text = include_str!("../../../deploy/breakerd.toml");
    let file = FileConfig::parse(text).unwrap();
    Config::from_file(file, &Cli::default()).unwrap();

    let mut keys: Vec<String> = Vec::new();
    let sections = toml::Table::try_from(FileConfig::default()).unwrap();
    for (_, section) in sections {
        if let toml::Value::Table(t) = section {
            keys.extend(t.keys().cloned());
        }
    }
    let policy = toml::Table::try_from(Policy::default().to_spec()).unwrap();
    keys.extend(policy.keys().cloned());
    keys.push("pattern".to_owned());
    for key in keys {
        assert!(
            text.lines().any(|l| l
                .trim_start_matches(['#', ' '])
                .starts_with(&format!("{key} ="))),
            "deploy/breakerd.toml does not document `{key}`"
        );
    }
}
