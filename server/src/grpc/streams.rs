//! Caps on concurrent Watch streams, per client ([`Principal`]) and in
//! total, and how a Watch update is cut into bounded messages.
//!
//! A stream holds a [`WatchSlot`] for as long as it lives; the slot gives
//! its place back when the stream is dropped (the client went away, the
//! server shut down). A Watch past a cap is `RESOURCE_EXHAUSTED`, saying
//! which cap and how many streams are open.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use breakerd_core::{WatchPage, WatchUpdate};
use breakerd_proto::v1 as pb;
use dashmap::{DashMap, mapref::entry::Entry};
use prost::Message;
use tonic::Status;

use super::{convert::snapshot_to_proto, principal::Principal};

/// Most circuits read from the core for one page of a snapshot.
pub const WATCH_PAGE_CIRCUITS: usize = 512;

/// Most bytes of circuit snapshots in one Watch message (or a quarter of
/// the largest message, when that is smaller).
pub const WATCH_PAGE_BYTES: usize = 1024 * 1024;

/// The Watch stream caps (0: no cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLimits {
    /// Watch streams open at once, all clients together.
    pub max_streams: usize,
    /// Watch streams open at once per client.
    pub max_streams_per_client: usize,
    /// Streams watching every circuit open at once, all clients together:
    /// each holds one pointer per circuit while its snapshot is paged out
    /// (about 0.85 MB at 100k circuits when its client does not read).
    pub max_watch_all_streams: usize,
}

impl Default for WatchLimits {
    fn default() -> Self {
        Self {
            max_streams: 1024,
            max_streams_per_client: 64,
            max_watch_all_streams: 32,
        }
    }
}

/// Open Watch streams, counted against [`WatchLimits`].
#[derive(Debug, Default)]
pub struct WatchStreams {
    limits: WatchLimits,
    total: AtomicUsize,
    watch_all: AtomicUsize,
    per_client: DashMap<Principal, usize>,
}

impl WatchStreams {
    /// No stream open yet.
    pub fn new(limits: WatchLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            ..Self::default()
        })
    }

    /// Streams open now, in total.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// A place for one more stream of `client` (watching every circuit
    /// when `all`), or the cap it ran into.
    pub fn open_slot(self: &Arc<Self>, client: Principal, all: bool) -> Result<WatchSlot, Status> {
        let max_all = self.limits.max_watch_all_streams;
        if all && !take(&self.watch_all, max_all) {
            return Err(Status::resource_exhausted(format!(
                "too many Watch streams of every circuit: {max_all} are open, the most the server allows; watch named circuits, or retry later"
            )));
        }
        let max = self.limits.max_streams;
        if !take(&self.total, max) {
            if all {
                self.watch_all.fetch_sub(1, Ordering::AcqRel);
            }
            return Err(Status::resource_exhausted(format!(
                "too many Watch streams: {max} are open, the most the server allows; retry later"
            )));
        }
        let mut slot = WatchSlot {
            streams: self.clone(),
            client,
            all,
            counted: false,
        };
        let per = self.limits.max_streams_per_client;
        let mut n = self.per_client.entry(client).or_insert(0);
        if per != 0 && *n >= per {
            drop(n);
            // Dropping `slot` gives back the total (and watch-all) place.
            drop(slot);
            return Err(Status::resource_exhausted(format!(
                "too many Watch streams from {}: {per} are open, the most one client may have; close one first",
                client.describe()
            )));
        }
        *n += 1;
        drop(n);
        slot.counted = true;
        Ok(slot)
    }
}

/// Takes one of `max` places in `n` (0: no cap).
fn take(n: &AtomicUsize, max: usize) -> bool {
    n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        (max == 0 || v < max).then_some(v + 1)
    })
    .is_ok()
}

/// One open Watch stream's place under the caps.
#[derive(Debug)]
pub struct WatchSlot {
    streams: Arc<WatchStreams>,
    client: Principal,
    /// Holds a watch-all place.
    all: bool,
    /// Counted against its client.
    counted: bool,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        if self.counted
            && let Entry::Occupied(mut e) = self.streams.per_client.entry(self.client)
        {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        if self.all {
            self.streams.watch_all.fetch_sub(1, Ordering::AcqRel);
        }
        self.streams.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `page` as Watch messages of at most `max_bytes` of snapshots each (a
/// single snapshot larger than that goes alone). Every message of a
/// snapshot page but the last of the snapshot has `more` set.
pub fn watch_page_to_proto(page: WatchPage, max_bytes: usize) -> Vec<pb::WatchEvent> {
    let (initial, snaps) = match page.update {
        WatchUpdate::Resync(s) => (true, s),
        WatchUpdate::Changed(s) => (false, s),
    };
    let mut events = Vec::new();
    let mut circuits = Vec::new();
    let mut bytes = 0;
    for s in &snaps {
        let snap = snapshot_to_proto(s);
        // The field's tag and length prefix, at most 1 + 10 bytes.
        let len = snap.encoded_len() + 11;
        if !circuits.is_empty() && bytes + len > max_bytes {
            events.push(pb::WatchEvent {
                initial,
                circuits: std::mem::take(&mut circuits),
                more: initial,
            });
            bytes = 0;
        }
        bytes += len;
        circuits.push(snap);
    }
    events.push(pb::WatchEvent {
        initial,
        circuits,
        more: initial && !page.last,
    });
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn peer(last: u8) -> Principal {
        Principal::Peer(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn streams_are_capped_per_client_and_in_total_and_given_back_on_drop() {
        let s = WatchStreams::new(WatchLimits {
            max_streams: 3,
            max_streams_per_client: 2,
            max_watch_all_streams: 0,
        });
        let a1 = s.open_slot(peer(1), false).unwrap();
        let _a2 = s.open_slot(peer(1), false).unwrap();
        let err = s.open_slot(peer(1), false).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(
            err.message().contains("from peer 10.0.0.1: 2 are open"),
            "{}",
            err.message()
        );
        assert_eq!(s.open(), 2, "a refusal holds no place");
        let _b1 = s.open_slot(peer(2), false).unwrap();
        let err = s.open_slot(peer(3), false).unwrap_err();
        assert!(err.message().contains("3 are open"), "{}", err.message());
        assert_eq!(s.open(), 3);
        drop(a1);
        assert_eq!(s.open(), 2);
        let _c1 = s.open_slot(peer(3), false).unwrap();
        let _a3 = s.open_slot(peer(1), false).unwrap_err();
    }

    #[test]
    fn watch_all_streams_have_a_cap_of_their_own() {
        let s = WatchStreams::new(WatchLimits {
            max_streams: 10,
            max_streams_per_client: 10,
            max_watch_all_streams: 1,
        });
        let all = s.open_slot(peer(1), true).unwrap();
        let err = s.open_slot(peer(2), true).unwrap_err();
        assert!(
            err.message().contains("of every circuit: 1 are open"),
            "{}",
            err.message()
        );
        let _named = s.open_slot(peer(2), false).unwrap();
        drop(all);
        let _all = s.open_slot(peer(2), true).unwrap();
        assert_eq!(s.open(), 2);
    }
}
