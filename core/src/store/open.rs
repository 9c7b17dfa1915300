//! Opening the store: checking the database, refusing a missing or damaged
//! one (a copy kept, the path and the reason reported), importing an
//! old-format directory once, and starting a run epoch that never repeats.
//!
//! The epoch of a run is one more than the highest of: the epoch in the
//! database, the `epoch` file beside it, the old log's epoch line, and the
//! run of the highest generation found in the circuits and the newest audit
//! record. So a lost or damaged database never brings epoch 1 (and its
//! generations) back while anything of the earlier runs is left.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::thread;

use parking_lot::{Mutex, RwLock};
use redb::{Builder, Database, Durability, ReadableDatabase, ReadableTable};

use super::record::{CircuitRecord, Clocks};
use super::writer::Writer;
use super::{
    AUDIT, AuditRecord, CIRCUITS, DB_FILE, EPOCH_FILE, Imported, Loaded, META, META_EPOCH,
    META_IMPORTED, Recovery, START_EMPTY_FILE, Store, StoreError, db_err, io_err, legacy, sync_dir,
};

/// Damaged copies kept per directory (the oldest beyond go).
const DAMAGED_COPIES_KEPT: usize = 3;

fn unix_ms() -> u64 {
    Clocks::at(std::time::Instant::now()).unix_ms
}

/// Database files open in this process: a store opened again in the same
/// process (a test restarting its server) waits until the previous handle
/// has closed, since redb locks the file for one opener.
static IN_PROCESS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
static RELEASED: std::sync::Condvar = std::sync::Condvar::new();
/// How long an open waits for a previous in-process opener to close.
const IN_PROCESS_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Holds a database path as open in this process until dropped (by the
/// writer thread, after its last use of the database).
pub(super) struct InProcess(PathBuf);

impl InProcess {
    fn claim(path: &Path) -> Result<Self, StoreError> {
        let deadline = std::time::Instant::now() + IN_PROCESS_WAIT;
        let mut open = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
        while open.iter().any(|p| p == path) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(StoreError::Db {
                    path: path.to_owned(),
                    what: "still open by an earlier store handle in this process".into(),
                });
            }
            open = RELEASED
                .wait_timeout(open, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        open.push(path.to_owned());
        Ok(Self(path.to_owned()))
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let mut open = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|p| p != &self.0);
        RELEASED.notify_all();
    }
}

/// Waits (bounded) until no handle of this process holds `path` open.
pub(super) fn wait_closed(path: &Path) {
    let deadline = std::time::Instant::now() + IN_PROCESS_WAIT;
    let mut open = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    while open.iter().any(|p| p == path) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        open = RELEASED
            .wait_timeout(open, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

pub(super) fn open(dir: &Path) -> Result<(Store, Loaded), StoreError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(DB_FILE);
    let claim = InProcess::claim(&path)?;
    let marker = read_marker(dir)?;
    let start_empty = dir.join(START_EMPTY_FILE);
    let allow_empty = start_empty.exists();
    let has_db = fs::metadata(&path).is_ok_and(|m| m.len() > 0);
    if !has_db
        && let Some(last) = marker
        && !allow_empty
    {
        return Err(StoreError::Missing {
            path,
            reason: format!(
                "the database is missing or empty, but {} shows that run {last} kept its state here; restore the file from a backup, or create {} to start with an empty store",
                dir.join(EPOCH_FILE).display(),
                start_empty.display()
            ),
        });
    }
    let db = open_checked(dir, &path, has_db)?;
    let mut circuits = read_circuits(&db, &path)?;
    let (mut epoch_floor, imported_before, next_audit, newest_audit) = read_meta(&db, &path)?;
    if let Some(last) = marker {
        epoch_floor = epoch_floor.max(last);
    }

    let old_files = legacy::files(dir)?;
    let mut recovery = None;
    let mut imported = None;
    let mut next_audit = next_audit;
    if !old_files.is_empty() {
        let ts = unix_ms();
        if imported_before {
            tracing::warn!(dir = %dir.display(), "old-format files found again after their import; moving them aside without importing them twice");
        } else {
            let old = legacy::read(dir)?;
            if old.state_empty && !old.audit.is_empty() {
                return Err(StoreError::Missing {
                    path: dir.join(legacy::STATE_FILE),
                    reason: format!(
                        "the state log is missing or empty while {} holds {} admin changes; restore it from a backup, or move {} aside to start from the audit trail alone",
                        dir.join(legacy::AUDIT_FILE).display(),
                        old.audit.len(),
                        dir.join(legacy::AUDIT_FILE).display()
                    ),
                });
            }
            epoch_floor = epoch_floor.max(old.epoch);
            next_audit = import(&db, &path, &old.live, &old.audit, next_audit)?;
            for c in old.live.values() {
                circuits.retain(|k| k.name != c.name);
                circuits.push(c.clone());
            }
            let moved_to = legacy::move_aside(dir, &old_files, ts)?;
            if let Some((bad_offset, reason)) = &old.damage {
                let rec = Recovery {
                    path: dir.join(legacy::STATE_FILE),
                    valid_records: old.valid_records,
                    bad_offset: *bad_offset,
                    reason: reason.clone(),
                    backup: moved_to.join(legacy::STATE_FILE),
                };
                tracing::error!(
                    path = %rec.path.display(),
                    backup = %rec.backup.display(),
                    valid_records = rec.valid_records,
                    bad_offset = rec.bad_offset,
                    reason = %rec.reason,
                    "old state log damaged: imported the valid records before the damage; the damaged file is kept"
                );
                recovery = Some(rec);
            }
            let report = Imported {
                circuits: old.live.len(),
                audit: old.audit.len(),
                audit_skipped: old.audit_skipped,
                moved_to,
            };
            tracing::info!(
                circuits = report.circuits,
                audit = report.audit,
                audit_skipped = report.audit_skipped,
                moved_to = %report.moved_to.display(),
                "imported the old-format store"
            );
            imported = Some(report);
        }
        if imported_before {
            legacy::move_aside(dir, &old_files, ts)?;
        }
    }

    let seen_generation = circuits
        .iter()
        .map(|c| c.generation)
        .chain(newest_audit.iter().flat_map(|a| {
            [a.before.as_ref(), a.after.as_ref()]
                .into_iter()
                .flatten()
                .map(|c| c.generation)
        }))
        .max()
        .unwrap_or(0);
    let epoch = epoch_floor.max(seen_generation >> 32) + 1;
    write_epoch(&db, &path, epoch)?;
    write_marker(dir, epoch)?;
    if allow_empty {
        fs::remove_file(&start_empty).map_err(io_err(&start_empty))?;
    }

    let shared = Arc::new(RwLock::new(Some(Arc::new(db))));
    let (tx, rx) = std_mpsc::channel();
    let writer = Writer::new(path.clone(), Arc::clone(&shared), next_audit);
    thread::Builder::new()
        .name("breakerd-store".into())
        .spawn(move || {
            writer.run(rx);
            drop(claim);
        })
        .map_err(io_err(dir))?;
    tracing::info!(path = %path.display(), epoch, circuits = circuits.len(), "store loaded");
    Ok((
        Store {
            dir: dir.to_owned(),
            path,
            tx: Arc::new(Mutex::new((0, tx))),
            db: shared,
        },
        Loaded {
            epoch,
            circuits,
            recovery,
            imported,
        },
    ))
}

/// Opens the database, checking every page of it: a file redb cannot
/// repair by itself is copied aside and reported.
fn open_checked(dir: &Path, path: &Path, has_db: bool) -> Result<Database, StoreError> {
    // redb rewrites the header of a file it opens, even one it then finds
    // damaged: keep the start of the file as it was, for the copy.
    let head = if has_db { read_head(path)? } else { Vec::new() };
    let mut builder = Builder::new();
    builder.set_check_integrity_on_open(has_db);
    // redb may panic on a file altered behind its back; that is damage too.
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.create(path)))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".to_owned());
            Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(
                format!("open panicked: {what}"),
            )))
        });
    match opened {
        Ok(db) => Ok(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(StoreError::Db {
            path: path.to_owned(),
            what: "already open in another process (is a breakerd running on it?)".into(),
        }),
        Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))) => Err(io_err(path)(e)),
        Err(e) => {
            let copy = keep_damaged_copy(dir, path, &head)?;
            tracing::error!(path = %path.display(), copy = %copy.display(), reason = %e, "store damaged; refusing to start on it");
            Err(StoreError::Damaged {
                path: path.to_owned(),
                copy,
                reason: e.to_string(),
            })
        }
    }
}

/// Bytes of the start of a database file kept before opening it.
const HEAD_BYTES: u64 = 1 << 20;

fn read_head(path: &Path) -> Result<Vec<u8>, StoreError> {
    use std::io::Read;
    let mut head = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(HEAD_BYTES).read_to_end(&mut head))
        .map_err(io_err(path))?;
    Ok(head)
}

/// Copies the damaged file aside, its start as it was before the open.
fn keep_damaged_copy(dir: &Path, path: &Path, head: &[u8]) -> Result<PathBuf, StoreError> {
    use std::io::{Seek, SeekFrom};
    let copy = dir.join(format!("{DB_FILE}.damaged-{}", unix_ms()));
    fs::copy(path, &copy).map_err(io_err(&copy))?;
    fs::OpenOptions::new()
        .write(true)
        .open(&copy)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(0))?;
            f.write_all(head)?;
            f.sync_all()
        })
        .map_err(io_err(&copy))?;
    let prefix = format!("{DB_FILE}.damaged-");
    let mut copies: Vec<_> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect();
    copies.sort();
    while copies.len() > DAMAGED_COPIES_KEPT {
        let old = copies.remove(0);
        let _ = fs::remove_file(old);
    }
    Ok(copy)
}

fn read_circuits(db: &Database, path: &Path) -> Result<Vec<CircuitRecord>, StoreError> {
    let txn = db.begin_read().map_err(db_err(path))?;
    let table = match txn.open_table(CIRCUITS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(db_err(path)(e)),
    };
    let mut out = Vec::with_capacity(
        usize::try_from(redb::ReadableTableMetadata::len(&table).map_err(db_err(path))?)
            .unwrap_or(0),
    );
    for item in table.iter().map_err(db_err(path))? {
        let (key, value) = item.map_err(db_err(path))?;
        let rec: CircuitRecord =
            serde_json::from_slice(value.value()).map_err(|e| StoreError::Damaged {
                path: path.to_owned(),
                copy: PathBuf::new(),
                reason: format!("circuit record {:?} does not decode: {e}", key.value()),
            })?;
        out.push(rec);
    }
    Ok(out)
}

/// The stored epoch, whether the old format was imported, the next audit
/// sequence number and the newest audit record.
fn read_meta(
    db: &Database,
    path: &Path,
) -> Result<(u64, bool, u64, Option<AuditRecord>), StoreError> {
    let txn = db.begin_read().map_err(db_err(path))?;
    let (epoch, imported) = match txn.open_table(META) {
        Ok(t) => {
            let get = |k: &str| -> Result<Option<u64>, StoreError> {
                Ok(t.get(k).map_err(db_err(path))?.map(|v| v.value()))
            };
            (get(META_EPOCH)?.unwrap_or(0), get(META_IMPORTED)?.is_some())
        }
        Err(redb::TableError::TableDoesNotExist(_)) => (0, false),
        Err(e) => return Err(db_err(path)(e)),
    };
    let (next, newest) = match txn.open_table(AUDIT) {
        Ok(t) => match t.last().map_err(db_err(path))? {
            Some((k, v)) => (
                k.value() + 1,
                serde_json::from_slice::<AuditRecord>(v.value()).ok(),
            ),
            None => (0, None),
        },
        Err(redb::TableError::TableDoesNotExist(_)) => (0, None),
        Err(e) => return Err(db_err(path)(e)),
    };
    Ok((epoch, imported, next, newest))
}

/// Writes the old format's circuits and audit records, and the mark that
/// it was imported, in one transaction. Returns the next audit sequence.
fn import(
    db: &Database,
    path: &Path,
    live: &std::collections::HashMap<String, CircuitRecord>,
    audit: &[AuditRecord],
    mut next_audit: u64,
) -> Result<u64, StoreError> {
    let mut txn = db.begin_write().map_err(db_err(path))?;
    txn.set_durability(Durability::Immediate)
        .map_err(db_err(path))?;
    txn.set_two_phase_commit(true);
    {
        let mut circuits = txn.open_table(CIRCUITS).map_err(db_err(path))?;
        for c in live.values() {
            let json = serde_json::to_vec(c).map_err(db_err(path))?;
            circuits
                .insert(c.name.as_str(), json.as_slice())
                .map_err(db_err(path))?;
        }
        let mut table = txn.open_table(AUDIT).map_err(db_err(path))?;
        let skip = audit
            .len()
            .saturating_sub(usize::try_from(super::AUDIT_MAX_RECORDS).unwrap_or(usize::MAX));
        for a in &audit[skip..] {
            let json = serde_json::to_vec(a).map_err(db_err(path))?;
            table
                .insert(next_audit, json.as_slice())
                .map_err(db_err(path))?;
            next_audit += 1;
        }
        let mut meta = txn.open_table(META).map_err(db_err(path))?;
        meta.insert(META_IMPORTED, unix_ms())
            .map_err(db_err(path))?;
    }
    txn.commit().map_err(db_err(path))?;
    Ok(next_audit)
}

fn write_epoch(db: &Database, path: &Path, epoch: u64) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(db_err(path))?;
    txn.set_durability(Durability::Immediate)
        .map_err(db_err(path))?;
    txn.set_two_phase_commit(true);
    {
        let mut meta = txn.open_table(META).map_err(db_err(path))?;
        meta.insert(META_EPOCH, epoch).map_err(db_err(path))?;
        // Created here so readers always find them.
        txn.open_table(CIRCUITS).map_err(db_err(path))?;
        txn.open_table(AUDIT).map_err(db_err(path))?;
    }
    txn.commit().map_err(db_err(path))
}

fn read_marker(dir: &Path) -> Result<Option<u64>, StoreError> {
    let path = dir.join(EPOCH_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => s.trim().parse().map(Some).map_err(|e| StoreError::Missing {
            path: path.clone(),
            reason: format!("unreadable run epoch ({e}); write the last run's epoch into it"),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Replaces the `epoch` file durably (written aside, synced, renamed).
fn write_marker(dir: &Path, epoch: u64) -> Result<(), StoreError> {
    let path = dir.join(EPOCH_FILE);
    let tmp = dir.join(format!("{EPOCH_FILE}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(format!("{epoch}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)
}
