//! A circuit's name as the registry keeps it: inline when short, as most
//! names are (`payments`, `recs:v2`, `db-primary`), so that holding a
//! circuit costs one allocation instead of two. The registry holds a
//! million of them at once when asked to (bench W6).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Longest name kept inline: the enum is then as large as an `Arc<str>`
/// plus one word.
const INLINE: usize = 22;

/// An immutable name that dereferences to `str`; hashes, compares and
/// prints exactly as its `str` does.
#[derive(Clone)]
pub(crate) enum CircuitName {
    /// Up to [`INLINE`] bytes, in place.
    Inline {
        /// Bytes of `bytes` in use.
        len: u8,
        /// The name, zero-padded.
        bytes: [u8; INLINE],
    },
    /// Longer names, on the heap.
    Heap(Box<str>),
}

impl CircuitName {
    /// `name`, stored inline when it fits.
    pub(crate) fn new(name: &str) -> Self {
        match u8::try_from(name.len()) {
            Ok(len) if name.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..name.len()].copy_from_slice(name.as_bytes());
                Self::Inline { len, bytes }
            }
            _ => Self::Heap(name.into()),
        }
    }

    /// The name.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Self::Inline { len, bytes } => std::str::from_utf8(&bytes[..usize::from(*len)])
                .expect("the bytes of a whole str are UTF-8"),
            Self::Heap(name) => name,
        }
    }
}

impl Deref for CircuitName {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for CircuitName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for CircuitName {}

impl PartialOrd for CircuitName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for CircuitName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for CircuitName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for CircuitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for CircuitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_inline_and_every_name_reads_back() {
        assert_eq!(std::mem::size_of::<CircuitName>(), 24);
        for len in [1, 12, INLINE, INLINE + 1, 200] {
            let name = "a".repeat(len);
            let stored = CircuitName::new(&name);
            assert_eq!(stored.as_str(), name);
            assert_eq!(
                matches!(stored, CircuitName::Inline { .. }),
                len <= INLINE,
                "{len}"
            );
        }
        assert!(CircuitName::new("a") < CircuitName::new("b"));
        assert_eq!(CircuitName::new("recs:v2").to_string(), "recs:v2");
    }
}
