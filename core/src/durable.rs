//! The durable-state seam: the one interface through which the registry
//! keeps what must survive a crash (circuit records, audit records), waits
//! for it to be durable and reads the audit log back.
//!
//! The embedded [`Store`] sits behind it today. Replicating the
//! coordinator's durable state is another implementation of
//! [`DurableState`], with the registry unchanged (governor's keyed state
//! store behind a small trait is the model).
//!
//! Writes only queue: the registry makes them with a circuit locked, on
//! the hot path of a transition. It waits, with [`DurableState::flush`],
//! only where a caller must not be answered before its change would
//! survive (see `admin.rs`); a change whose flush fails is undone
//! (`rollback.rs`), so what is in effect is what was acknowledged.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::store::{AuditRecord, CircuitRecord, Store, StoreError};

/// Completes once everything queued before it is durable.
pub type Flush<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// Where the registry's durable state goes.
pub trait DurableState: fmt::Debug + Send + Sync {
    /// Queues the durable state of a circuit, replacing any earlier one (its
    /// removal when it has nothing worth keeping). Never blocks.
    fn put(&self, record: CircuitRecord);

    /// Queues the removal of a circuit. Never blocks.
    fn forget(&self, name: &str);

    /// Queues the audit record of an admin change. Never blocks.
    fn audit(&self, record: AuditRecord);

    /// A position in the stream of queued changes: what is queued from now
    /// on is covered by a [`flush`](Self::flush) since it.
    fn mark(&self) -> u64;

    /// Completes once everything queued before the call is durable, or
    /// with the reason it cannot be. Fails as well if anything queued since
    /// `mark` was not made durable (a failed commit is never retried for a
    /// change someone waits on: that change is refused, and the registry
    /// undoes it).
    fn flush(&self, mark: u64) -> Flush<'_>;

    /// The newest `limit` audit records, newest first, optionally only
    /// those of one circuit.
    fn read_audit(
        &self,
        circuit: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError>;
}

impl DurableState for Store {
    fn put(&self, record: CircuitRecord) {
        // The Ack is not awaited: the write stays queued, and a later flush
        // waits for it with everything else.
        drop(Store::put(self, record));
    }

    fn forget(&self, name: &str) {
        drop(Store::forget(self, name));
    }

    fn audit(&self, record: AuditRecord) {
        drop(Store::audit(self, record));
    }

    fn mark(&self) -> u64 {
        Store::mark(self)
    }

    fn flush(&self, mark: u64) -> Flush<'_> {
        Box::pin(Store::flush_since(self, mark))
    }

    fn read_audit(
        &self,
        circuit: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        Store::read_audit(self, circuit, limit)
    }
}
