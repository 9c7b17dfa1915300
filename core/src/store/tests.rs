//! Store tests: round trips across reopen, recovery from damage, compaction
//! and the audit log.

use std::fs;

use breakerd_policy::{OverrideKind, PolicySpec, State};

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
    store.put(tuned.clone()).wait_blocking().unwrap();
    let gone = CircuitRecord {
        name: "gone".into(),
        ..tuned.clone()
    };
    store.put(gone).wait_blocking().unwrap();
    store.forget("gone").wait_blocking().unwrap();
    drop(store);

    let (_store, loaded) = Store::open(dir.path()).unwrap();
    assert_eq!(loaded.epoch, 2);
    assert!(loaded.recovery.is_none());
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
    assert_eq!(got("tuned").admin_policy, tuned.admin_policy);
}

#[test]
fn a_torn_tail_keeps_the_valid_records_and_a_copy_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store
        .put(circuit("a", State::Open, 3))
        .wait_blocking()
        .unwrap();
    store
        .put(circuit("b", State::Open, 4))
        .wait_blocking()
        .unwrap();
    drop(store);
    let path = dir.path().join(STATE_FILE);
    let mut bytes = fs::read(&path).unwrap();
    // A crash in the middle of the next write.
    let torn = record::encode(&Record::Circuit(circuit("c", State::Open, 9)));
    bytes.extend_from_slice(&torn.as_bytes()[..torn.len() / 2]);
    fs::write(&path, &bytes).unwrap();

    let (_store, loaded) = Store::open(dir.path()).unwrap();
    let recovery = loaded.recovery.clone().expect("damage reported");
    assert_eq!(names(&loaded), ["a", "b"]);
    assert_eq!(recovery.valid_records, 3, "epoch + a + b");
    assert!(recovery.reason.contains("truncated"), "{}", recovery.reason);
    assert_eq!(
        fs::read(&recovery.backup).unwrap(),
        bytes,
        "the damaged file is kept as it was"
    );
    assert_eq!(loaded.epoch, 2);
    drop(_store);

    // The log was cut back: the next start is clean.
    let (_store, loaded) = Store::open(dir.path()).unwrap();
    assert!(loaded.recovery.is_none());
    assert_eq!(names(&loaded), ["a", "b"]);
    assert_eq!(loaded.epoch, 3);
}

#[test]
fn a_corrupted_record_stops_recovery_there() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        store
            .put(circuit(n, State::Open, i as u64))
            .wait_blocking()
            .unwrap();
    }
    drop(store);
    let path = dir.path().join(STATE_FILE);
    let text = fs::read_to_string(&path).unwrap();
    // Flip one byte inside the record of "b".
    let at = text.find("\"b\"").unwrap() + 1;
    let mut bytes = text.into_bytes();
    bytes[at] = b'x';
    fs::write(&path, &bytes).unwrap();

    let (_store, loaded) = Store::open(dir.path()).unwrap();
    let recovery = loaded.recovery.clone().expect("damage reported");
    assert!(recovery.reason.contains("checksum"), "{}", recovery.reason);
    assert_eq!(names(&loaded), ["a"]);
}

#[test]
fn a_garbage_file_is_reported_not_silently_emptied() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(STATE_FILE), b"this is not a breakerd log\n").unwrap();
    let (_store, loaded) = Store::open(dir.path()).unwrap();
    let recovery = loaded.recovery.expect("damage reported");
    assert_eq!(recovery.valid_records, 0);
    assert!(recovery.backup.exists());
}

#[test]
fn compaction_keeps_only_live_records() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let path = dir.path().join(STATE_FILE);
    let mut acks = Vec::new();
    for g in 0..20_000u64 {
        acks.push(store.put(circuit("hot", State::Open, g)));
    }
    for a in acks {
        a.wait_blocking().unwrap();
    }
    let len = fs::metadata(&path).unwrap().len();
    assert!(
        len < COMPACT_MIN_BYTES,
        "log was not compacted: {len} bytes"
    );
    drop(store);
    let (_store, loaded) = Store::open(dir.path()).unwrap();
    assert_eq!(loaded.circuits.len(), 1);
    assert_eq!(loaded.circuits[0].generation, 19_999);
}

#[test]
fn audit_reads_back_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    for (i, c) in ["a", "b", "a", "a"].iter().enumerate() {
        let mut rec = audit(c, "reset", Some(circuit(c, State::Closed, i as u64)));
        rec.at_ms = i as u64;
        store.audit(rec).wait_blocking().unwrap();
    }
    let all = store.read_audit(None, 10).unwrap();
    assert_eq!(
        all.iter().map(|r| r.at_ms).collect::<Vec<_>>(),
        [3, 2, 1, 0]
    );
    let a = store.read_audit(Some("a"), 2).unwrap();
    assert_eq!(a.iter().map(|r| r.at_ms).collect::<Vec<_>>(), [3, 2]);
    assert!(store.read_audit(None, 0).unwrap().is_empty());
    // Each line of the audit file is a JSON object on its own.
    let text = fs::read_to_string(dir.path().join(AUDIT_FILE)).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v.get("actor").is_some() && v.get("reason").is_some());
    }
}
