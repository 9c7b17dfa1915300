//! The admission hook: what the registry asks, inside its creation path,
//! before it creates circuits on a caller's behalf.
//!
//! A transport that limits how many new circuits a client may create (the
//! gRPC per-client limits) hands its budget to the `*_admitted` methods of
//! the registry instead of asking first whether a name exists: the registry
//! charges it only for names it is about to create, so a circuit that
//! exists costs nothing, a refused call creates nothing, and two callers
//! racing to create one name do not both pay.

use std::convert::Infallible;

use crate::error::CoreError;

/// Decides whether a caller may create new circuits.
pub trait Admission {
    /// Why a creation was refused, as the caller reports it.
    type Refusal;

    /// May the caller create `count` (at least 1) new circuits? For one
    /// circuit, the registry asks with the circuit table's shard locked,
    /// exactly when it is about to insert the circuit: this must be quick
    /// and must never call back into the registry. A watch asks once for
    /// every name it watches that is missing when it starts.
    fn admit(&self, count: usize) -> Result<(), Self::Refusal>;
}

/// Admits every creation: only the registry's circuit cap applies. What the
/// methods without `_admitted` use.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdmitAll;

impl Admission for AdmitAll {
    type Refusal = Infallible;

    fn admit(&self, _count: usize) -> Result<(), Infallible> {
        Ok(())
    }
}

/// Why an admitted call was refused: by the core itself, or by the
/// caller's [`Admission`].
#[derive(Debug, Clone, PartialEq)]
pub enum Refused<E> {
    /// The core refused (a bad name, the circuit cap, ...).
    Core(CoreError),
    /// The admission refused to let the call create circuits; nothing was
    /// created.
    Admission(E),
}

impl<E> From<CoreError> for Refused<E> {
    fn from(err: CoreError) -> Self {
        Refused::Core(err)
    }
}

impl Refused<Infallible> {
    /// The core's error: with [`AdmitAll`] there is no other.
    pub fn into_core(self) -> CoreError {
        match self {
            Refused::Core(err) => err,
            Refused::Admission(never) => match never {},
        }
    }
}
