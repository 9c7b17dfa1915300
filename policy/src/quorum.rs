//! The quorum rule's memory: which distinct nodes reported bad calls
//! recently, so that one sick node cannot open a circuit for the fleet.
//!
//! Only the most recent [`MAX_QUORUM_NODES`] distinct nodes are kept. That
//! is exact for every quorum a policy may ask for: if that many distinct
//! nodes are in range, the quorum is met whatever older nodes did.

use std::time::Instant;

use crate::bounds::MAX_QUORUM_NODES;
use crate::types::NodeId;

#[derive(Debug, Clone, Copy)]
struct Entry {
    node: NodeId,
    /// Call sequence number of the node's latest bad call.
    seq: u64,
    /// When it happened.
    at: Instant,
}

/// Recent bad calls per distinct node.
#[derive(Debug, Clone, Default)]
pub(crate) struct BadNodes {
    entries: Vec<Entry>,
}

impl BadNodes {
    /// Notes a bad call by `node` as call number `seq` at `at`.
    pub fn note(&mut self, node: NodeId, seq: u64, at: Instant) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.node == node) {
            e.seq = seq;
            e.at = at;
            return;
        }
        let entry = Entry { node, seq, at };
        if self.entries.len() < MAX_QUORUM_NODES as usize {
            self.entries.push(entry);
        } else if let Some(oldest) = self.entries.iter_mut().min_by_key(|e| e.seq) {
            *oldest = entry;
        }
    }

    /// Distinct nodes whose latest bad call is call `min_seq` or later and,
    /// when given, happened at `min_at` or later.
    pub fn count_since(&self, min_seq: u64, min_at: Option<Instant>) -> u32 {
        self.entries
            .iter()
            .filter(|e| e.seq >= min_seq && min_at.is_none_or(|t| e.at >= t))
            .count() as u32
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_nodes_in_range() {
        let t = Instant::now();
        let mut q = BadNodes::default();
        q.note(NodeId(1), 1, t);
        q.note(NodeId(1), 2, t);
        q.note(NodeId(2), 3, t);
        assert_eq!(q.count_since(0, None), 2);
        assert_eq!(q.count_since(3, None), 1);
        assert_eq!(q.count_since(4, None), 0);
    }

    #[test]
    fn keeps_the_most_recent_nodes_when_full() {
        let t = Instant::now();
        let mut q = BadNodes::default();
        for n in 0..(MAX_QUORUM_NODES as u64 + 10) {
            q.note(NodeId(n), n, t);
        }
        assert_eq!(q.count_since(0, None), MAX_QUORUM_NODES);
        assert_eq!(q.count_since(10, None), MAX_QUORUM_NODES);
        assert_eq!(q.count_since(11, None), MAX_QUORUM_NODES - 1);
    }
}
