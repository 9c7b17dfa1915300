//! What the public handles and the background tasks share, below both.
//!
//! The handles (`Coordinator`, `Circuit`, `Permit`, `Builder`) and the
//! engine (the report and watch tasks, degraded mode) all work on these
//! types, and nothing here imports either of them, so imports run one way:
//! handles → engine → shared.
//!
//! * `common.rs`: the common handle (settings, RPC clients, link state,
//!   report queue, counters, clock epoch);
//! * `evidence.rs`: the run of missed RPC deadlines that, long enough,
//!   is evidence that the coordinator is gone;
//! * `registry.rs`: the circuits by name and index, and the task guard;
//! * `cell.rs`: one circuit's cell, and the public [`CircuitView`] of it;
//! * `word.rs`: the packed word the hot path loads;
//! * `queue.rs`: the report queue from permits to the report task, and the
//!   rule of which outcomes are urgent;
//! * `grant.rs`: what a decision hands to a permit;
//! * `config.rs`: the checked settings, [`ClientTls`], and the channel
//!   built from them;
//! * `convert.rs`: proto enums, policies and status codes to client types.

mod cell;
mod common;
mod config;
mod convert;
mod evidence;
mod grant;
mod queue;
mod registry;
mod word;

pub(crate) use cell::CircuitShared;
pub use cell::CircuitView;
pub(crate) use common::{Common, Link};
pub use config::ClientTls;
pub(crate) use config::{Config, RpcChannel, Secret};
pub(crate) use convert::{
    is_missed_deadline, override_from_proto, reason_from_proto, refusal_code, spec_from_proto,
    state_from_proto,
};
pub(crate) use grant::{Grant, PermitKind};
pub(crate) use queue::{Item, Queued};
pub(crate) use registry::{Inner, TaskGuard};
pub(crate) use word::Word;
