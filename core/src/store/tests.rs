//! Store tests: round trips across reopen, epochs, the audit table and its
//! bound, the one-time import of the old format, and refusing a missing
//! or damaged database.

use std::fs;

use breakerd_policy::{OverrideKind, PolicySpec, State};

use super::legacy::{AUDIT_FILE, STATE_FILE};
use super::*;

fn circuit(name: &str, state: State, generation: u64) -> CircuitRecord {
    CircuitRecord {
        name: name.into(),
        state,
        generation,
        open_until_ms: (state == State::Open).then_some(9_999_999_999_999),
        consecutive_trips: u32::from(state == State::Open),
        admin_policy: None,
        override_: None,
        policy_version: 1,
    }
}

fn audit(circuit_name: &str, action: &str, after: Option<CircuitRecord>) -> AuditRecord {
    AuditRecord {
        at_ms: 1,
        actor: "ops".into(),
        action: action.into(),
        circuit: circuit_name.into(),
        reason: "test".into(),
        before: None,
        after,
    }
}

fn names(loaded: &Loaded) -> Vec<String> {
    let mut n: Vec<_> = loaded.circuits.iter().map(|c| c.name.clone()).collect();
    n.sort();
    n
}

fn files_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn state_survives_reopen_and_epochs_grow() {
    let dir = tempfile::tempdir().unwrap();
    let (store, loaded) = Store::open(dir.path()).unwrap();
    assert_eq!(loaded.epoch, 1);
    assert!(loaded.circuits.is_empty() && loaded.recovery.is_none());

    store
        .put(circuit("open-one", State::Open, 5))
        .wait_blocking()
        .unwrap();
    store
        .put(circuit("half", State::HalfOpen, 6))
        .wait_blocking()
        .unwrap();
    // Closed with nothing worth keeping: forgotten.
    store
        .put(circuit("half", State::Closed, 7))
        .wait_blocking()
        .unwrap();
    let mut forced = circuit("forced", State::Open, 2);
    forced.open_until_ms = None;
    forced.override_ = Some(OverrideRecord {
        kind: OverrideKind::ForcedOpen,
        reason: "incident".into(),
        actor: "ops".into(),
        expires_at_ms: None,
    });
    store.put(forced.clone()).wait_blocking().unwrap();
    let mut tuned = circuit("tuned", State::Closed, 1);
    tuned.admin_policy = Some(PolicySpec {
        consecutive_failures: Some(3),
        ..Default::default()
    });
    tuned.policy_version = 4;
    store.put(tuned.clone()).wait_blocking().unwrap();
    let gone = CircuitRecord {
        name: "gone".into(),
        ..tuned.clone()
    };
    store.put(gone).wait_blocking().unwrap();
    store.forget("gone").wait_blocking().unwrap();
    store.close().unwrap();

    let (_store, loaded) = Store::open(dir.path()).unwrap();
    assert_eq!(loaded.epoch, 2);
    assert!(loaded.recovery.is_none() && loaded.imported.is_none());
    assert_eq!(names(&loaded), ["forced", "open-one", "tuned"]);
    let got = |n: &str| {
        loaded
            .circuits
            .iter()
            .find(|c| c.name == n)
            .unwrap()
            .clone()
    };
    assert_eq!(got("forced"), forced);
    assert_eq!(got("open-one").generation, 5);
    assert_eq!(got("tuned"), tuned, "policy version kept");
}

#[test]
fn the_epoch_is_never_below_a_stored_generation() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    // A generation of run 7 (from an import, say) in a store of run 1.
    store
        .put(circuit("late", State::Open, generation_floor(7) + 3))
        .wait_blocking()
        .unwrap();
    store.close().unwrap();
    let (_store, loaded) = Store::open(dir.path()).unwrap();
    assert_eq!(loaded.epoch, 8);
}

#[test]
fn audit_reads_back_newest_first_and_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store
        .audit(audit("a", "set_override", None))
        .wait_blocking()
        .unwrap();
    store
        .audit(audit("b", "reset", None))
        .wait_blocking()
        .unwrap();
    store
        .audit(audit("a", "delete", None))
        .wait_blocking()
        .unwrap();
    let all = store.read_audit(None, 10).unwrap();
    let actions: Vec<_> = all.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["delete", "reset", "set_override"]);
    let a = store.read_audit(Some("a"), 1).unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].action, "delete");
    assert!(store.read_audit(None, 0).unwrap().is_empty());

    for i in 0..AUDIT_MAX_RECORDS + 10 {
        let _ = store.audit(audit(&format!("n{i}"), "reset", None));
    }
    store.flush().await_blocking();
    let kept = store.read_audit(None, usize::MAX).unwrap();
    assert_eq!(kept.len() as u64, AUDIT_MAX_RECORDS, "the oldest go");
    assert_eq!(kept[0].circuit, format!("n{}", AUDIT_MAX_RECORDS + 9));
    store.close().unwrap();
    // Sequence numbers continue across a reopen: the newest stays first.
    let (store, _) = Store::open(dir.path()).unwrap();
    store
        .audit(audit("z", "reset", None))
        .wait_blocking()
        .unwrap();
    assert_eq!(store.read_audit(None, 1).unwrap()[0].circuit, "z");
}

/// Lets a test wait on an async flush from plain code.
trait AwaitBlocking {
    fn await_blocking(self);
}

impl<F: std::future::Future<Output = Result<(), StoreError>>> AwaitBlocking for F {
    fn await_blocking(self) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(self)
            .unwrap();
    }
}

/// An old-format directory: a state log with a torn tail and an audit log
/// with a torn multi-byte character.
fn write_old_format(dir: &Path) -> (Vec<u8>, usize) {
    let mut log = String::new();
    log.push_str(&record::encode(&Record::Epoch(5)));
    log.push_str(&record::encode(&Record::Circuit(circuit(
        "kept",
        State::Open,
        generation_floor(5) + 2,
    ))));
    log.push_str(&record::encode(&Record::Circuit(circuit(
        "gone",
        State::Open,
        3,
    ))));
    log.push_str(&record::encode(&Record::Forget("gone".into())));
    let torn = record::encode(&Record::Circuit(circuit("torn", State::Open, 9)));
    let mut bytes = log.into_bytes();
    bytes.extend_from_slice(&torn.as_bytes()[..torn.len() / 2]);
    fs::write(dir.join(STATE_FILE), &bytes).unwrap();
    let mut audit_bytes = Vec::new();
    for a in [
        audit("kept", "set_override", None),
        audit("gone", "delete", None),
    ] {
        audit_bytes.extend_from_slice(serde_json::to_string(&a).unwrap().as_bytes());
        audit_bytes.push(b'\n');
    }
    // "é" cut in half, as a torn write leaves it.
    audit_bytes.extend_from_slice(b"{\"at_ms\":1,\"actor\":\"\xc3");
    fs::write(dir.join(AUDIT_FILE), &audit_bytes).unwrap();
    (bytes, 2)
}

#[test]
fn an_old_directory_is_imported_once_keeping_its_valid_records() {
    let dir = tempfile::tempdir().unwrap();
    let (old_log, audits) = write_old_format(dir.path());
    let (store, loaded) = Store::open(dir.path()).unwrap();
    assert_eq!(names(&loaded), ["kept"]);
    assert_eq!(loaded.epoch, 6, "above the old log's epoch");
    let imported = loaded.imported.clone().expect("import reported");
    assert_eq!(
        (imported.circuits, imported.audit, imported.audit_skipped),
        (1, audits, 1)
    );
    let recovery = loaded.recovery.clone().expect("damage reported");
    assert_eq!(recovery.valid_records, 4);
    assert!(recovery.reason.contains("truncated"), "{}", recovery.reason);
    assert_eq!(
        fs::read(&recovery.backup).unwrap(),
        old_log,
        "kept as it was"
    );
    assert!(!dir.path().join(STATE_FILE).exists() && !dir.path().join(AUDIT_FILE).exists());
    assert!(imported.moved_to.join(AUDIT_FILE).exists());
    let listed: Vec<_> = store
        .read_audit(None, 10)
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(listed, ["delete", "set_override"]);
    store.close().unwrap();

    let (_store, loaded) = Store::open(dir.path()).unwrap();
    assert!(loaded.imported.is_none() && loaded.recovery.is_none());
    assert_eq!(names(&loaded), ["kept"]);
    assert_eq!(loaded.epoch, 7);
}

#[test]
fn an_emptied_old_state_log_beside_an_audit_trail_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_old_format(dir.path());
    fs::write(dir.path().join(STATE_FILE), b"").unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("2 admin changes"), "{err}");
    assert!(dir.path().join(AUDIT_FILE).exists(), "nothing moved");
}

#[test]
fn a_missing_database_is_refused_until_an_empty_start_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store
        .put(circuit("a", State::Open, 3))
        .wait_blocking()
        .unwrap();
    store.close().unwrap();
    let (store, loaded) = Store::open(dir.path()).unwrap();
    assert_eq!(loaded.epoch, 2);
    store.close().unwrap();
    fs::remove_file(dir.path().join(DB_FILE)).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("run 2"), "{err}");

    fs::write(dir.path().join(START_EMPTY_FILE), b"").unwrap();
    let (_store, loaded) = Store::open(dir.path()).unwrap();
    assert!(loaded.circuits.is_empty());
    assert_eq!(loaded.epoch, 3, "the epoch goes on from the epoch file");
    assert!(
        !dir.path().join(START_EMPTY_FILE).exists(),
        "asked for once"
    );
}

#[test]
fn a_damaged_database_is_refused_with_a_copy_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    for i in 0..50 {
        let _ = store.put(circuit(&format!("c{i}"), State::Open, 3));
    }
    store.flush().await_blocking();
    store.close().unwrap();
    let path = dir.path().join(DB_FILE);
    let mut bytes = fs::read(&path).unwrap();
    // Garbage over everything past the header.
    for b in bytes.iter_mut().skip(4096) {
        *b = 0x5a;
    }
    fs::write(&path, &bytes).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    let StoreError::Damaged { copy, .. } = &err else {
        panic!("not reported as damage: {err}");
    };
    let kept = fs::read(copy).unwrap();
    let differ: Vec<usize> = (0..kept.len().max(bytes.len()))
        .filter(|&i| kept.get(i) != bytes.get(i))
        .collect();
    assert!(
        differ.is_empty(),
        "the damaged file is kept as it was: {} vs {} bytes, differ at {:?}",
        kept.len(),
        bytes.len(),
        &differ[..differ.len().min(20)]
    );
    assert!(err.to_string().contains(START_EMPTY_FILE), "{err}");
    assert_eq!(
        files_starting(dir.path(), "breakerd.redb.damaged-").len(),
        1
    );
}

#[test]
fn export_writes_json_lines_of_a_closed_store_only() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store
        .put(circuit("a", State::Open, 3))
        .wait_blocking()
        .unwrap();
    store
        .audit(audit("a", "reset", None))
        .wait_blocking()
        .unwrap();
    let mut out = Vec::new();
    let err = export::export(dir.path(), export::Tables::All, &mut out).unwrap_err();
    assert!(err.to_string().contains("running breakerd"), "{err}");
    store.close().unwrap();

    let done = export::export(dir.path(), export::Tables::All, &mut out).unwrap();
    assert_eq!((done.circuits, done.audit), (1, 1));
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["table"], "circuits");
    assert_eq!(lines[0]["name"], "a");
    assert_eq!(lines[1]["table"], "audit");
    assert_eq!(lines[1]["action"], "reset");
    let mut audit_only = Vec::new();
    let done = export::export(dir.path(), export::Tables::Audit, &mut audit_only).unwrap();
    assert_eq!((done.circuits, done.audit), (0, 1));
}
