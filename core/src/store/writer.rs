//! The writer thread: group commit of queued changes, one redb write
//! transaction per group, and what a failed commit leaves behind.
//!
//! A failed commit changes nothing on disk. Its audit records, and the
//! state records of circuits an admin change touched, are dropped: those
//! changes are refused (the registry undoes them in memory and queues the
//! result again). The other state records (transitions nobody waits on)
//! are kept and written with the next group, latest per circuit, so the
//! disk catches up with memory once writes succeed again. The database is
//! reopened for the next group, because redb refuses every operation after
//! an I/O error until then.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use redb::{Database, Durability, ReadableTableMetadata};

use super::record::{CircuitRecord, Record};
use super::{AUDIT, AUDIT_MAX_RECORDS, CIRCUITS, Entry, SharedDb, StoreError, WriteReq, db_err};

/// Most requests taken into one group commit.
const MAX_BATCH: usize = 4096;
/// Failed groups remembered to answer flushes that started before them.
const FAILED_KEPT: usize = 1024;

pub(super) struct Writer {
    pub(super) path: PathBuf,
    pub(super) db: SharedDb,
    /// Next audit sequence number.
    pub(super) next_audit: u64,
    /// State records of a failed group still to write (None: forget).
    retained: HashMap<String, Option<CircuitRecord>>,
    /// Request sequence ranges of failed groups, oldest first.
    failed: VecDeque<(u64, u64)>,
    /// Every request up to this one may have failed (ranges dropped from
    /// `failed`).
    forgotten_through: Option<u64>,
}

impl Writer {
    pub(super) fn new(path: PathBuf, db: SharedDb, next_audit: u64) -> Self {
        Self {
            path,
            db,
            next_audit,
            retained: HashMap::new(),
            failed: VecDeque::new(),
            forgotten_through: None,
        }
    }

    /// Group-commits queued requests until every handle is dropped.
    pub(super) fn run(mut self, rx: std_mpsc::Receiver<WriteReq>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            let close = batch.iter().any(|w| w.close);
            let result = self.commit_group(&batch);
            if close {
                *self.db.write() = None;
            }
            if let Err(e) = &result {
                tracing::error!(path = %self.path.display(), error = %e, "store commit failed; the changes of this group are not in effect");
            }
            for w in batch {
                let Some((since, reply)) = w.reply else {
                    continue;
                };
                let answer = match &result {
                    Err(e) => Err(e.to_string()),
                    Ok(()) if self.failed_between(since, w.seq) => Err(
                        "an earlier commit of this change failed (see the store error logged)"
                            .to_owned(),
                    ),
                    Ok(()) => Ok(()),
                };
                let _ = reply.send(answer);
            }
            if close {
                break;
            }
        }
        // Every handle is gone: close the database before the thread ends.
        *self.db.write() = None;
    }

    /// Whether a request with a sequence number in `since..=upto` was in a
    /// failed group.
    fn failed_between(&self, since: u64, upto: u64) -> bool {
        self.forgotten_through.is_some_and(|f| since <= f)
            || self
                .failed
                .iter()
                .any(|&(lo, hi)| hi >= since && lo <= upto)
    }

    fn commit_group(&mut self, batch: &[WriteReq]) -> Result<(), StoreError> {
        let entries: Vec<&Entry> = batch.iter().flat_map(|w| w.entries.iter()).collect();
        if entries.is_empty() && self.retained.is_empty() {
            return Ok(());
        }
        let audits_before = self.next_audit;
        let result = self.write(&entries);
        match &result {
            Ok(()) => self.retained.clear(),
            Err(_) => {
                self.next_audit = audits_before;
                self.keep_failed(batch, &entries);
                // redb refuses everything after an I/O error until the
                // database is reopened: do that with the next group.
                *self.db.write() = None;
            }
        }
        result
    }

    fn keep_failed(&mut self, batch: &[WriteReq], entries: &[&Entry]) {
        let lo = batch.first().map_or(0, |w| w.seq);
        let hi = batch.last().map_or(0, |w| w.seq);
        self.failed.push_back((lo.min(hi), lo.max(hi)));
        if self.failed.len() > FAILED_KEPT
            && let Some((_, hi)) = self.failed.pop_front()
        {
            self.forgotten_through = Some(self.forgotten_through.map_or(hi, |f| f.max(hi)));
        }
        let admin: HashSet<&str> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Audit(a) => Some(a.circuit.as_str()),
                Entry::State(_) => None,
            })
            .collect();
        for entry in entries {
            let Entry::State(rec) = entry else { continue };
            let (name, value) = match rec {
                Record::Circuit(c) => (c.name.as_str(), Some(c.clone())),
                Record::Forget(name) => (name.as_str(), None),
                Record::Epoch(_) => continue,
            };
            if !admin.contains(name) {
                self.retained.insert(name.to_owned(), value);
            }
        }
        for name in admin {
            self.retained.remove(name);
        }
    }

    fn open_db(&mut self) -> Result<Arc<Database>, StoreError> {
        if let Some(db) = self.db.read().clone() {
            return Ok(db);
        }
        let db = Arc::new(Database::create(&self.path).map_err(db_err(&self.path))?);
        tracing::info!(path = %self.path.display(), "store reopened after a failed commit");
        *self.db.write() = Some(Arc::clone(&db));
        Ok(db)
    }

    fn write(&mut self, entries: &[&Entry]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let db = self.open_db()?;
        let mut txn = db.begin_write().map_err(db_err(&path))?;
        txn.set_durability(Durability::Immediate)
            .map_err(db_err(&path))?;
        // A damaged latest commit is then reported at open instead of
        // silently rolled back to the one before.
        txn.set_two_phase_commit(true);
        {
            let mut circuits = txn.open_table(CIRCUITS).map_err(db_err(&path))?;
            let mut put = |name: &str, rec: Option<&CircuitRecord>| -> Result<(), StoreError> {
                match rec {
                    Some(c) => {
                        let json = serde_json::to_vec(c).map_err(db_err(&path))?;
                        circuits
                            .insert(name, json.as_slice())
                            .map_err(db_err(&path))?;
                    }
                    None => {
                        circuits.remove(name).map_err(db_err(&path))?;
                    }
                }
                Ok(())
            };
            for (name, rec) in &self.retained {
                put(name, rec.as_ref())?;
            }
            for entry in entries {
                if let Entry::State(rec) = entry {
                    match rec {
                        Record::Circuit(c) => put(&c.name, Some(c))?,
                        Record::Forget(name) => put(name, None)?,
                        Record::Epoch(_) => {}
                    }
                }
            }
            let mut audit = txn.open_table(AUDIT).map_err(db_err(&path))?;
            for entry in entries {
                if let Entry::Audit(a) = entry {
                    let json = serde_json::to_vec(a).map_err(db_err(&path))?;
                    audit
                        .insert(self.next_audit, json.as_slice())
                        .map_err(db_err(&path))?;
                    self.next_audit += 1;
                }
            }
            let mut len = audit.len().map_err(db_err(&path))?;
            while len > AUDIT_MAX_RECORDS {
                audit.pop_first().map_err(db_err(&path))?;
                len -= 1;
            }
        }
        txn.commit().map_err(db_err(&path))
    }
}
