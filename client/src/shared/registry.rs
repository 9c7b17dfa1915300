//! The circuits of one connection, by name and by index, and the guard that
//! stops the connection's background tasks.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::cell::CircuitShared;
use super::common::Common;

/// Every circuit this node has used, by name and by index (reports and the
/// report stream's name table carry the index).
pub(crate) struct Registry {
    pub(crate) by_name: HashMap<Arc<str>, Arc<CircuitShared>>,
    pub(crate) by_idx: Vec<Arc<CircuitShared>>,
}

/// What the coordinator handle and its background tasks hold: the common
/// handle and the registry.
pub(crate) struct Inner {
    pub(crate) common: Arc<Common>,
    pub(crate) registry: RwLock<Registry>,
    /// Bumped when a circuit is first used, so the watch task resubscribes.
    pub(crate) registry_version: watch::Sender<u64>,
}

impl Inner {
    /// An empty registry over `common`.
    pub(crate) fn new(common: Arc<Common>) -> Self {
        Self {
            common,
            registry: RwLock::new(Registry {
                by_name: HashMap::new(),
                by_idx: Vec::new(),
            }),
            registry_version: watch::Sender::new(0),
        }
    }

    pub(crate) fn circuit_at(&self, idx: u32) -> Option<Arc<CircuitShared>> {
        self.registry.read().by_idx.get(idx as usize).cloned()
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<Arc<CircuitShared>> {
        self.registry.read().by_name.get(name).cloned()
    }
}

/// Aborts the background tasks when the last handle is gone.
pub(crate) struct TaskGuard {
    tasks: Mutex<Vec<AbortHandle>>,
}

impl TaskGuard {
    pub(crate) fn new(tasks: Vec<AbortHandle>) -> Self {
        Self {
            tasks: Mutex::new(tasks),
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().drain(..) {
            t.abort();
        }
    }
}
