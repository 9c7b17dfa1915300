//! The embedded store: what must survive a crash (`kill -9`), a full disk
//! and a restart.
//!
//! One redb database (`breakerd.redb`, embedded, ACID, checksummed pages)
//! holds three tables:
//! - `circuits`: name → JSON [`CircuitRecord`], the durable state of every
//!   circuit that has any (override, admin policy, open or half-open
//!   state);
//! - `audit`: sequence → JSON [`AuditRecord`], one per admin change, the
//!   oldest dropped past [`AUDIT_MAX_RECORDS`];
//! - `meta`: the run epoch and whether the old format was imported.
//!
//! Beside it, the file `epoch` repeats the latest run epoch, so that a
//! missing or damaged database is noticed and the epoch never repeats (see
//! `open.rs`). An old-format directory (`state.log`, `audit.jsonl`) is
//! imported once at start (`legacy.rs`).
//!
//! Writes go through one writer thread that group-commits: every change
//! queued while it was busy is one write transaction, committed with
//! `Durability::Immediate` (and two-phase commit, so a damaged latest
//! commit is reported, never silently rolled back), and every waiter is
//! released only after that commit returned (`writer.rs`). A failed commit
//! changes nothing on disk; the writer reopens the database for the next
//! group, so the store recovers by itself once space returns.

pub mod export;
pub mod record;

mod legacy;
mod open;
mod writer;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use record::{CircuitRecord, Clocks, OverrideRecord, Record, generation_floor};

/// The database file in the store directory.
pub const DB_FILE: &str = "breakerd.redb";
/// The file beside it that repeats the latest run epoch.
pub const EPOCH_FILE: &str = "epoch";
/// Created by an operator to start with an empty store on purpose when the
/// database is missing or damaged (removed once the store is created).
pub const START_EMPTY_FILE: &str = "START-EMPTY";
/// The audit table keeps at most this many records (the oldest go first).
pub const AUDIT_MAX_RECORDS: u64 = if cfg!(test) { 64 } else { 100_000 };

pub(crate) const CIRCUITS: TableDefinition<&str, &[u8]> = TableDefinition::new("circuits");
pub(crate) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const META_EPOCH: &str = "epoch";
pub(crate) const META_IMPORTED: &str = "legacy_imported";

/// One admin change, as kept in the audit table and read back by the admin
/// API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// Who.
    pub actor: String,
    /// What (`set_policy`, `set_override`, `clear_override`, `reset`,
    /// `delete`).
    pub action: String,
    /// Which circuit.
    pub circuit: String,
    /// Why.
    pub reason: String,
    /// The circuit's durable state before (absent when it had none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<CircuitRecord>,
    /// The circuit's durable state after (absent when deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<CircuitRecord>,
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("store {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The database refused an operation (I/O below it, or a lock).
    #[error("store {path}: {what}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// What failed.
        what: String,
    },
    /// The database file is damaged beyond what redb repairs by itself.
    #[error(
        "store {path} is damaged ({reason}); a copy is at {copy}; restore a backup, or create {dir}/{START_EMPTY_FILE} to start with an empty store (run epochs still continue above the last one)",
        dir = path.parent().unwrap_or(Path::new(".")).display()
    )]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// Where the damaged file was copied.
        copy: PathBuf,
        /// What redb found.
        reason: String,
    },
    /// The state is missing where this directory shows there was some.
    #[error("store {path}: {reason}")]
    Missing {
        /// The missing (or empty) file.
        path: PathBuf,
        /// Why that is an error and what to do.
        reason: String,
    },
    /// The writer thread is gone (the store was closed or it failed).
    #[error("store writer has stopped")]
    Closed,
    /// A write was not made durable (and is not in effect).
    #[error("store write failed: {0}")]
    Write(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn db_err<E: std::fmt::Display>(path: &Path) -> impl FnOnce(E) -> StoreError + '_ {
    move |e| StoreError::Db {
        path: path.to_owned(),
        what: e.to_string(),
    }
}

/// Makes a directory's entries (a rename, a new file) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// What start-up recovered from a damaged old-format state log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The damaged file.
    pub path: PathBuf,
    /// Records read before the damage.
    pub valid_records: usize,
    /// Byte offset of the first bad record.
    pub bad_offset: u64,
    /// What was wrong with it.
    pub reason: String,
    /// Where the damaged file is kept.
    pub backup: PathBuf,
}

/// What start-up imported from an old-format directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Circuits imported.
    pub circuits: usize,
    /// Audit records imported.
    pub audit: usize,
    /// Audit lines that could not be read and were skipped.
    pub audit_skipped: usize,
    /// Where the old files were moved.
    pub moved_to: PathBuf,
}

/// What [`Store::open`] found.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// This run's epoch (above every earlier run's), already durable.
    pub epoch: u64,
    /// The durable state of every circuit that has some.
    pub circuits: Vec<CircuitRecord>,
    /// Set when an imported old-format log was damaged.
    pub recovery: Option<Recovery>,
    /// Set when an old-format directory was imported.
    pub imported: Option<Imported>,
}

impl Loaded {
    /// What an empty store loads (for stores behind the seam in tests).
    pub fn empty(epoch: u64) -> Self {
        Self {
            epoch,
            circuits: Vec::new(),
            recovery: None,
            imported: None,
        }
    }
}

/// Released once a write is durable (or failed).
#[derive(Debug)]
pub struct Ack(oneshot::Receiver<Result<(), String>>);

impl Ack {
    /// Waits until the write is on disk.
    pub async fn durable(self) -> Result<(), StoreError> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Write(e)),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// Blocks the current (non-async) thread until the write is on disk.
    pub fn wait_blocking(self) -> Result<(), StoreError> {
        match self.0.blocking_recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Write(e)),
            Err(_) => Err(StoreError::Closed),
        }
    }
}

#[allow(clippy::large_enum_variant)] // See `Record`.
pub(crate) enum Entry {
    State(Record),
    Audit(AuditRecord),
}

pub(crate) struct WriteReq {
    /// Order of this request among all sent.
    seq: u64,
    entries: Vec<Entry>,
    /// Close the database after this request (see [`Store::close`]).
    close: bool,
    /// Answered once committed: Ok only if nothing sent from `since` up to
    /// this request failed.
    reply: Option<(u64, oneshot::Sender<Result<(), String>>)>,
}

/// The database, shared by the writer (which replaces it after a failed
/// commit) and readers.
pub(crate) type SharedDb = Arc<RwLock<Option<Arc<Database>>>>;

/// A handle on the store's writer thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    path: PathBuf,
    /// Sequence numbers are taken and sent under one lock, so the writer
    /// sees them in order.
    tx: Arc<Mutex<(u64, std_mpsc::Sender<WriteReq>)>>,
    db: SharedDb,
}

impl std::fmt::Debug for WriteReq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteReq").field("seq", &self.seq).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`: checks the database,
    /// imports an old-format directory once, refuses a missing or damaged
    /// store (keeping a copy), starts a new epoch durably, and starts the
    /// writer thread.
    pub fn open(dir: &Path) -> Result<(Store, Loaded), StoreError> {
        open::open(dir)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sequence number the next request will get: a flush
    /// [`since`](Self::flush_since) it fails if anything sent from now on,
    /// up to the flush, was not made durable.
    pub fn mark(&self) -> u64 {
        self.tx.lock().0
    }

    fn send(&self, entries: Vec<Entry>, since: Option<u64>) -> Ack {
        self.send_req(entries, since, false)
    }

    fn send_req(&self, entries: Vec<Entry>, since: Option<u64>, close: bool) -> Ack {
        let (ack, rx) = oneshot::channel();
        let mut tx = self.tx.lock();
        let seq = tx.0;
        tx.0 += 1;
        // A send error drops `ack`, and the Ack then reports Closed.
        let _ = tx.1.send(WriteReq {
            seq,
            entries,
            close,
            reply: Some((since.unwrap_or(seq), ack)),
        });
        Ack(rx)
    }

    /// Queues the durable state of a circuit (or its removal when it has
    /// nothing worth keeping).
    pub fn put(&self, record: CircuitRecord) -> Ack {
        let entry = if record.worth_keeping() {
            Record::Circuit(record)
        } else {
            Record::Forget(record.name)
        };
        self.send(vec![Entry::State(entry)], None)
    }

    /// Queues the removal of a circuit.
    pub fn forget(&self, name: &str) -> Ack {
        self.send(vec![Entry::State(Record::Forget(name.to_owned()))], None)
    }

    /// Queues an audit record of an admin change (the circuit's new state
    /// goes through [`put`](Self::put) or [`forget`](Self::forget)).
    pub fn audit(&self, audit: AuditRecord) -> Ack {
        self.send(vec![Entry::Audit(audit)], None)
    }

    /// Waits until everything queued so far is durable; fails if anything
    /// sent since `mark` (see [`mark`](Self::mark)) was not.
    pub async fn flush_since(&self, mark: u64) -> Result<(), StoreError> {
        self.send(Vec::new(), Some(mark)).durable().await
    }

    /// Waits until everything queued so far is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.send(Vec::new(), None).durable().await
    }

    /// Makes everything queued durable, closes the database and stops the
    /// writer; returns once the file is closed. Writes through any other
    /// handle fail afterwards.
    pub fn close(self) -> Result<(), StoreError> {
        self.send_req(Vec::new(), None, true).wait_blocking()?;
        // The writer thread drops its claim on the path right after.
        open::wait_closed(&self.path);
        Ok(())
    }

    fn database(&self) -> Result<Arc<Database>, StoreError> {
        self.db.read().clone().ok_or_else(|| StoreError::Db {
            path: self.path.clone(),
            what: "not open (the last commit failed; it is reopened with the next write)".into(),
        })
    }

    /// The newest `limit` audit records, newest first, optionally only those
    /// of one circuit.
    pub fn read_audit(
        &self,
        circuit: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let db = self.database()?;
        read_audit(&db, &self.path, circuit, limit)
    }
}

/// The newest `limit` audit records of `db`, newest first, optionally only
/// those of one circuit. A record that cannot be decoded is skipped.
pub(crate) fn read_audit(
    db: &Database,
    path: &Path,
    circuit: Option<&str>,
    limit: usize,
) -> Result<Vec<AuditRecord>, StoreError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let txn = db.begin_read().map_err(db_err(path))?;
    let table = match txn.open_table(AUDIT) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
        Err(e) => return Err(db_err(path)(e)),
    };
    for item in table.iter().map_err(db_err(path))?.rev() {
        let (_, value) = item.map_err(db_err(path))?;
        let Ok(rec) = serde_json::from_slice::<AuditRecord>(value.value()) else {
            continue;
        };
        if circuit.is_some_and(|c| c != rec.circuit) {
            continue;
        }
        out.push(rec);
        if out.len() == limit {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
