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
//! survive (see `admin.rs`).

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

    /// Completes once everything queued before the call is durable, or
    /// with the reason it cannot be.
    fn flush(&self) -> Flush<'_>;

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

    fn flush(&self) -> Flush<'_> {
        Box::pin(Store::flush(self))
    }

    fn read_audit(
        &self,
        circuit: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        Store::read_audit(self, circuit, limit)
    }
}
