//! What a decision that allowed a call hands to its permit, and who made
//! it (which says where the call's outcome goes).
//!
//! Deciders below the public handles (degraded mode) return a [`Grant`];
//! the circuit handle turns it into a `Permit`, so the engine never needs
//! the public type.

/// Who decided, and so where the outcome goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PermitKind {
    /// Decided from coordinator state: report to the coordinator.
    Coordinated,
    /// Decided by the local breaker (degraded `LOCAL` mode): feed it.
    Local,
    /// Allowed without any breaker (degraded `FAIL_OPEN`, or an override
    /// while unreachable): nothing to report.
    Unchecked,
}

/// A call allowed: under which generation, with which probe lease (0:
/// none), decided by whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) generation: u64,
    pub(crate) lease: u64,
    pub(crate) kind: PermitKind,
}
