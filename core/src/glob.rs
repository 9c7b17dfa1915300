//! A small glob matcher for circuit-name patterns in config: `*` matches any
//! run of bytes (also none), `?` exactly one byte, everything else itself.

/// Whether `name` matches `pattern`. Runs in `O(pattern * name)` at worst
/// (single-star backtracking), with no allocation.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    // Where to resume after the latest `*`: (pattern index after it, name index it matched up to).
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi + 1, ni));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                // Let the latest `*` swallow one more byte and retry.
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    pi = sp;
                    ni = sn + 1;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn glob_table() {
        let cases = [
            ("payments", "payments", true),
            ("payments", "payment", false),
            ("payments", "paymentsx", false),
            ("pay*", "payments", true),
            ("pay*", "pay", true),
            ("pay*", "pa", false),
            ("*", "", true),
            ("*", "anything:at/all", true),
            ("", "", true),
            ("", "a", false),
            ("*:v2", "recs:v2", true),
            ("*:v2", "recs:v3", false),
            ("db-?", "db-1", true),
            ("db-?", "db-12", false),
            ("db-?", "db-", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("a*b*c", "acb", false),
            ("*a*", "bab", true),
            ("**x", "x", true),
            ("?*?", "ab", true),
            ("?*?", "a", false),
            ("*aab", "aaab", true),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(glob_match(pattern, name), want, "{pattern:?} vs {name:?}");
        }
    }
}
