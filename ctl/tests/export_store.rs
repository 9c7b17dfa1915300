//! `breakerctl export-store`: the built binary reading a store directory
//! offline, as JSON lines for jq, and refusing one a coordinator holds.

use std::process::{Command, Output};

use breakerd_core::store::{AuditRecord, CircuitRecord, OverrideRecord, Store};
use breakerd_policy::{OverrideKind, State};
use serde_json::Value;

fn export(dir: &std::path::Path, tables: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_breakerctl"))
        .args(["export-store", "--data-dir"])
        .arg(dir)
        .args(["--tables", tables])
        .output()
        .expect("run breakerctl")
}

#[test]
fn a_stopped_store_is_exported_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let forced = CircuitRecord {
        name: "payments".into(),
        state: State::Open,
        generation: 9,
        open_until_ms: None,
        consecutive_trips: 0,
        admin_policy: None,
        override_: Some(OverrideRecord {
            kind: OverrideKind::ForcedOpen,
            reason: "incident 4".into(),
            actor: "ops".into(),
            expires_at_ms: None,
        }),
        policy_version: 1,
    };
    store.put(forced.clone()).wait_blocking().unwrap();
    store
        .audit(AuditRecord {
            at_ms: 5,
            actor: "ops".into(),
            action: "set_override".into(),
            circuit: "payments".into(),
            reason: "incident 4".into(),
            before: None,
            after: Some(forced),
        })
        .wait_blocking()
        .unwrap();

    let busy = export(dir.path(), "all");
    assert_eq!(busy.status.code(), Some(1), "{busy:?}");
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("stop it first"),
        "{busy:?}"
    );
    store.close().unwrap();

    let out = export(dir.path(), "all");
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["table"], "circuits");
    assert_eq!(lines[0]["override_"]["reason"], "incident 4");
    assert_eq!(lines[1]["table"], "audit");
    assert_eq!(lines[1]["seq"], 0);
    assert_eq!(lines[1]["action"], "set_override");

    let state = export(dir.path(), "state");
    assert_eq!(String::from_utf8_lossy(&state.stdout).lines().count(), 1);
    let missing = export(&dir.path().join("nope"), "all");
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no store here"));
}
