//! The embedded store: what must survive a crash (`kill -9`) and restart.
//!
//! One directory holds two files:
//! - `state.log`: an append-only log of checksummed [`Record`] lines — the
//!   durable state of every circuit that has any (override, admin policy,
//!   open or half-open state) plus one epoch line per coordinator run. It is
//!   compacted (rewritten to the live records, then atomically renamed)
//!   when it grows well past them.
//! - `audit.jsonl`: one JSON line per admin change (who, what, why, when,
//!   before and after), rotated once it passes a size limit.
//!
//! Why a log of our own and not an embedded database: the records are few
//! and small, writes are rare (admin changes and transitions, not calls),
//! and recovery must *keep what is valid* of a damaged file and set the bad
//! copy aside — a line format with a checksum per record does exactly that
//! and stays readable with `tail` and `jq`.
//!
//! Writes go through one writer thread that group-commits: every record
//! queued while it was busy is written and made durable (`fsync`) together,
//! and every writer waiting on an [`Ack`] is released after that `fsync`.

pub mod record;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::thread;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use record::{CircuitRecord, Clocks, OverrideRecord, Record, generation_floor};

const STATE_FILE: &str = "state.log";
const AUDIT_FILE: &str = "audit.jsonl";
/// The audit log is rotated (one older file kept) past this size.
const AUDIT_ROTATE_BYTES: u64 = 64 * 1024 * 1024;
/// Compaction never runs below this log size.
const COMPACT_MIN_BYTES: u64 = 1024 * 1024;
/// Most records written in one group commit.
const MAX_BATCH: usize = 4096;

/// One admin change, as written to `audit.jsonl` and read back by the admin
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
    /// The writer thread is gone (the store was closed or it failed).
    #[error("store writer has stopped")]
    Closed,
    /// A write was not made durable.
    #[error("store write failed: {0}")]
    Write(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What recovery did with a damaged state log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Records read before the damage.
    pub valid_records: usize,
    /// Byte offset of the first bad record.
    pub bad_offset: u64,
    /// What was wrong with it.
    pub reason: String,
    /// Where the damaged file was copied before the log was rewritten.
    pub backup: PathBuf,
}

/// What [`Store::open`] found.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// This run's epoch (one more than the last run's), already durable.
    pub epoch: u64,
    /// The durable state of every circuit that has some.
    pub circuits: Vec<CircuitRecord>,
    /// Set when the log was damaged and had to be cut back.
    pub recovery: Option<Recovery>,
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
enum Entry {
    State(Record),
    Audit(AuditRecord),
}

struct WriteReq {
    entries: Vec<Entry>,
    ack: Option<oneshot::Sender<Result<(), String>>>,
}

/// A handle on the store's writer thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    tx: std_mpsc::Sender<WriteReq>,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`: reads and checks the
    /// state log, sets aside and cuts back a damaged one, starts a new
    /// epoch durably, and starts the writer thread.
    pub fn open(dir: &Path) -> Result<(Store, Loaded), StoreError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(STATE_FILE);
        let scan = scan(&path)?;
        let recovery = match &scan.damage {
            None => None,
            Some((offset, reason)) => {
                let backup = dir.join(format!(
                    "{STATE_FILE}.corrupt-{}",
                    Clocks::at(std::time::Instant::now()).unix_ms
                ));
                fs::copy(&path, &backup).map_err(io_err(&backup))?;
                tracing::error!(
                    path = %path.display(),
                    backup = %backup.display(),
                    valid_records = scan.valid_records,
                    bad_offset = offset,
                    reason = %reason,
                    "state log damaged: keeping the valid records before the damage; the damaged file was copied aside"
                );
                Some(Recovery {
                    valid_records: scan.valid_records,
                    bad_offset: *offset,
                    reason: reason.clone(),
                    backup,
                })
            }
        };
        let epoch = scan.epoch + 1;
        let lines = scan
            .live
            .values()
            .map(|c| (c.name.clone(), record::encode(&Record::Circuit(c.clone()))))
            .collect();
        // Rewriting the log compacts it and, after damage, drops the tail.
        let log = StateLog::rewrite(&path, epoch, lines)?;
        let circuits: Vec<CircuitRecord> = scan.live.into_values().collect();
        let audit = AuditLog::open(&dir.join(AUDIT_FILE))?;
        let (tx, rx) = std_mpsc::channel();
        thread::Builder::new()
            .name("breakerd-store".into())
            .spawn(move || writer(rx, log, audit))
            .map_err(io_err(dir))?;
        tracing::info!(dir = %dir.display(), epoch, circuits = circuits.len(), "store loaded");
        Ok((
            Store {
                dir: dir.to_owned(),
                tx,
            },
            Loaded {
                epoch,
                circuits,
                recovery,
            },
        ))
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn send(&self, entries: Vec<Entry>) -> Ack {
        let (ack, rx) = oneshot::channel();
        // A send error drops `ack`, and the Ack then reports Closed.
        let _ = self.tx.send(WriteReq {
            entries,
            ack: Some(ack),
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
        self.send(vec![Entry::State(entry)])
    }

    /// Queues the removal of a circuit.
    pub fn forget(&self, name: &str) -> Ack {
        self.send(vec![Entry::State(Record::Forget(name.to_owned()))])
    }

    /// Queues an audit record of an admin change (the circuit's new state
    /// goes through [`put`](Self::put) or [`forget`](Self::forget)).
    pub fn audit(&self, audit: AuditRecord) -> Ack {
        self.send(vec![Entry::Audit(audit)])
    }

    /// The newest `limit` audit records, newest first, optionally only those
    /// of one circuit. Reads the current audit file (not the rotated one).
    pub fn read_audit(
        &self,
        circuit: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let path = self.dir.join(AUDIT_FILE);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut newest = std::collections::VecDeque::with_capacity(limit.min(1024));
        for line in BufReader::new(file).lines() {
            let line = line.map_err(io_err(&path))?;
            // A torn last line (crash mid-write) is skipped, not fatal.
            let Ok(rec) = serde_json::from_str::<AuditRecord>(&line) else {
                continue;
            };
            if circuit.is_some_and(|c| c != rec.circuit) {
                continue;
            }
            if newest.len() == limit {
                newest.pop_front();
            }
            if limit > 0 {
                newest.push_back(rec);
            }
        }
        Ok(newest.into_iter().rev().collect())
    }

    /// Waits until everything queued so far is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.send(Vec::new()).durable().await
    }
}

/// The result of reading a state log.
struct Scan {
    epoch: u64,
    /// Latest record of each circuit worth keeping, by name.
    live: HashMap<String, CircuitRecord>,
    valid_records: usize,
    damage: Option<(u64, String)>,
}

fn scan(path: &Path) -> Result<Scan, StoreError> {
    let mut out = Scan {
        epoch: 0,
        live: HashMap::new(),
        valid_records: 0,
        damage: None,
    };
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut offset = 0;
    while offset < bytes.len() {
        match record::decode(&bytes[offset..]) {
            Ok((rec, len)) => {
                match rec {
                    Record::Epoch(e) => out.epoch = out.epoch.max(e),
                    Record::Circuit(c) => {
                        out.live.insert(c.name.clone(), c);
                    }
                    Record::Forget(name) => {
                        out.live.remove(&name);
                    }
                }
                out.valid_records += 1;
                offset += len;
            }
            Err(e) => {
                out.damage = Some((offset as u64, e.to_string()));
                break;
            }
        }
    }
    Ok(out)
}

/// The open state log and what compaction needs to know.
struct StateLog {
    path: PathBuf,
    file: File,
    epoch: u64,
    len: u64,
    /// Latest line of each circuit worth keeping.
    live: HashMap<String, String>,
    live_bytes: u64,
}

impl StateLog {
    /// Writes `epoch` and the `live` lines (by circuit name) to a fresh
    /// file, makes it durable and renames it over `path`.
    fn rewrite(
        path: &Path,
        epoch: u64,
        live: HashMap<String, String>,
    ) -> Result<StateLog, StoreError> {
        let tmp = path.with_extension("log.tmp");
        let mut out = io::BufWriter::new(File::create(&tmp).map_err(io_err(&tmp))?);
        let epoch_line = record::encode(&Record::Epoch(epoch));
        let live_bytes: u64 = live.values().map(|l| l.len() as u64).sum();
        for line in std::iter::once(&epoch_line).chain(live.values()) {
            out.write_all(line.as_bytes()).map_err(io_err(&tmp))?;
        }
        let file = out.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))?;
        if let Some(dir) = path.parent() {
            // Make the rename itself durable.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir))?;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        Ok(StateLog {
            path: path.to_owned(),
            file,
            epoch,
            len: epoch_line.len() as u64 + live_bytes,
            live,
            live_bytes,
        })
    }

    fn append(&mut self, rec: &Record, buf: &mut Vec<u8>) {
        let line = record::encode(rec);
        buf.extend_from_slice(line.as_bytes());
        self.len += line.len() as u64;
        match rec {
            Record::Circuit(c) => {
                self.live_bytes += line.len() as u64;
                if let Some(old) = self.live.insert(c.name.clone(), line) {
                    self.live_bytes -= old.len() as u64;
                }
            }
            Record::Forget(name) => {
                if let Some(old) = self.live.remove(name) {
                    self.live_bytes -= old.len() as u64;
                }
            }
            Record::Epoch(_) => {}
        }
    }

    fn should_compact(&self) -> bool {
        self.len > COMPACT_MIN_BYTES && self.len > 4 * self.live_bytes
    }

    fn compact(&mut self) -> Result<(), StoreError> {
        *self = StateLog::rewrite(&self.path, self.epoch, std::mem::take(&mut self.live))?;
        Ok(())
    }
}

struct AuditLog {
    path: PathBuf,
    file: File,
    len: u64,
}

impl AuditLog {
    fn open(path: &Path) -> Result<AuditLog, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        let len = file.metadata().map_err(io_err(path))?.len();
        Ok(AuditLog {
            path: path.to_owned(),
            file,
            len,
        })
    }

    fn rotate_if_large(&mut self) -> Result<(), StoreError> {
        if self.len < AUDIT_ROTATE_BYTES {
            return Ok(());
        }
        let old = self.path.with_extension("jsonl.1");
        fs::rename(&self.path, &old).map_err(io_err(&old))?;
        *self = AuditLog::open(&self.path)?;
        Ok(())
    }
}

/// The writer thread: group-commits queued writes until every handle is
/// dropped.
fn writer(rx: std_mpsc::Receiver<WriteReq>, mut log: StateLog, mut audit: AuditLog) {
    let mut state_buf = Vec::new();
    let mut audit_buf = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        state_buf.clear();
        audit_buf.clear();
        for entry in batch.iter_mut().flat_map(|w| w.entries.drain(..)) {
            match entry {
                Entry::State(rec) => log.append(&rec, &mut state_buf),
                Entry::Audit(rec) => {
                    if let Ok(line) = serde_json::to_string(&rec) {
                        audit_buf.extend_from_slice(line.as_bytes());
                        audit_buf.push(b'\n');
                    }
                }
            }
        }
        let result = commit(&mut log, &mut audit, &state_buf, &audit_buf);
        if let Err(e) = &result {
            tracing::error!(error = %e, "store write failed");
        }
        let result = result.map_err(|e| e.to_string());
        for w in batch {
            if let Some(ack) = w.ack {
                let _ = ack.send(result.clone());
            }
        }
    }
}

fn commit(
    log: &mut StateLog,
    audit: &mut AuditLog,
    state: &[u8],
    audit_lines: &[u8],
) -> Result<(), StoreError> {
    if !audit_lines.is_empty() {
        audit
            .file
            .write_all(audit_lines)
            .map_err(io_err(&audit.path))?;
        audit.file.sync_data().map_err(io_err(&audit.path))?;
        audit.len += audit_lines.len() as u64;
        audit.rotate_if_large()?;
    }
    if !state.is_empty() {
        log.file.write_all(state).map_err(io_err(&log.path))?;
        log.file.sync_data().map_err(io_err(&log.path))?;
        if log.should_compact() {
            log.compact()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
