//! Read-only export of a stopped coordinator's store as JSON lines, for
//! `jq` and backups (`breakerctl export-store`): one object per circuit
//! record (`"table":"circuits"`) and per audit record (`"table":"audit"`,
//! with its `"seq"`), audit oldest first. The file is opened read-only and
//! never modified.

use std::io::Write;
use std::path::Path;

use redb::{ReadOnlyDatabase, ReadableDatabase, ReadableTable};
use serde_json::Value;

use super::{AUDIT, CIRCUITS, DB_FILE, StoreError, db_err};

/// Which tables to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tables {
    /// Circuit records only.
    State,
    /// Audit records only.
    Audit,
    /// Both, circuits first.
    All,
}

/// How many lines of each table were written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exported {
    /// Circuit records.
    pub circuits: u64,
    /// Audit records.
    pub audit: u64,
}

/// Writes the records of the store in `dir` to `out`, one JSON object a
/// line. Fails with the reason when the store is open in a running
/// coordinator, was not closed cleanly (start and stop breakerd once to
/// repair it), is missing or damaged, or `out` fails.
pub fn export(dir: &Path, tables: Tables, out: &mut dyn Write) -> Result<Exported, StoreError> {
    let path = dir.join(DB_FILE);
    if !path.is_file() {
        return Err(StoreError::Missing {
            path,
            reason: "no store here (is this breakerd's store directory?)".into(),
        });
    }
    let db = ReadOnlyDatabase::open(&path).map_err(|e| StoreError::Db {
        path: path.clone(),
        what: match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                "in use by a running breakerd: stop it first (or read it over the admin API: breakerctl list, breakerctl audit)".into()
            }
            redb::DatabaseError::RepairAborted => {
                "not closed cleanly: start and stop breakerd once so it repairs the file, then export".into()
            }
            e => e.to_string(),
        },
    })?;
    let txn = db.begin_read().map_err(db_err(&path))?;
    let mut done = Exported::default();
    let io = |e: std::io::Error| StoreError::Io {
        path: "<output>".into(),
        source: e,
    };
    let mut line = |table: &str, seq: Option<u64>, json: &[u8]| -> Result<(), StoreError> {
        let mut v: Value = serde_json::from_slice(json).map_err(|e| StoreError::Db {
            path: path.clone(),
            what: format!("a {table} record does not decode: {e}"),
        })?;
        if let Value::Object(map) = &mut v {
            map.insert("table".into(), Value::from(table));
            if let Some(seq) = seq {
                map.insert("seq".into(), Value::from(seq));
            }
        }
        serde_json::to_writer(&mut *out, &v).map_err(|e| io(e.into()))?;
        out.write_all(b"\n").map_err(io)
    };
    if tables != Tables::Audit
        && let Ok(t) = txn.open_table(CIRCUITS)
    {
        for item in t.iter().map_err(db_err(&path))? {
            let (_, v) = item.map_err(db_err(&path))?;
            line("circuits", None, v.value())?;
            done.circuits += 1;
        }
    }
    if tables != Tables::State
        && let Ok(t) = txn.open_table(AUDIT)
    {
        for item in t.iter().map_err(db_err(&path))? {
            let (k, v) = item.map_err(db_err(&path))?;
            line("audit", Some(k.value()), v.value())?;
            done.audit += 1;
        }
    }
    out.flush().map_err(io)?;
    Ok(done)
}
