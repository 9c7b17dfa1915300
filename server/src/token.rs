//! Bearer tokens: the secrets that guard the gRPC API (`[auth]`) and the
//! HTTP side port's write routes (`[http] admin_token`).
//!
//! One type for both, checked when it is made (16..=512 visible ASCII
//! characters), compared in constant time and never printed: its `Debug`
//! is redacted. The config builds them; the auth middleware and the side
//! port only compare against them.

use std::fmt;

/// Shortest token accepted: a guessable token on a write API is worse than
/// none.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest token accepted.
pub const MAX_TOKEN_LEN: usize = 512;

/// A secret bearer token; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Token {
    /// A token of 16..=512 visible ASCII characters (what fits in an
    /// `Authorization` header unchanged).
    pub fn new(token: &str) -> Result<Self, String> {
        if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len()) {
            return Err(format!(
                "must be {MIN_TOKEN_LEN}..={MAX_TOKEN_LEN} characters long, not {}",
                token.len()
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be visible ASCII characters only (no spaces)".to_owned());
        }
        Ok(Self(token.to_owned()))
    }

    /// Whether `presented` is this token, in time that depends only on the
    /// lengths, never on where the first difference is.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        // `expected` is never empty (see `new`).
        let mut diff = u8::from(presented.len() != expected.len());
        for (i, b) in presented.iter().enumerate() {
            diff |= b ^ expected[i % expected.len()];
        }
        diff == 0
    }
}
