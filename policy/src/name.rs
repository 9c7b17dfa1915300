//! The naming rule for circuits and nodes: 1-200 bytes of `[A-Za-z0-9._:/-]`.
//!
//! One rule for the coordinator and the client, so a name the client accepts
//! is never refused by the server. Names are checked, never rewritten: a name
//! that breaks the rule is refused with a message that says exactly which
//! byte is wrong and where.

use std::fmt;

/// Longest circuit name or node id, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// What is wrong with a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameProblem {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name contains a byte outside the alphabet.
    BadByte {
        /// The byte.
        byte: u8,
        /// Its offset in the name.
        offset: usize,
    },
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameProblem::Empty => f.write_str("is empty"),
            NameProblem::TooLong { len } => {
                write!(f, "has {len} bytes; the limit is {MAX_NAME_LEN}")
            }
            NameProblem::BadByte { byte, offset } => write!(
                f,
                "contains byte 0x{byte:02x} at offset {offset}; allowed: A-Z a-z 0-9 . _ : / -"
            ),
        }
    }
}

fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'-')
}

/// The problem with `name` under the naming rule, if any (empty names are
/// reported as [`NameProblem::Empty`]).
pub fn name_problem(name: &str) -> Option<NameProblem> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Some(NameProblem::Empty);
    }
    if bytes.len() > MAX_NAME_LEN {
        return Some(NameProblem::TooLong { len: bytes.len() });
    }
    bytes
        .iter()
        .position(|&b| !allowed(b))
        .map(|offset| NameProblem::BadByte {
            byte: bytes[offset],
            offset,
        })
}
