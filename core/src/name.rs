//! The naming rule for circuits and nodes: 1-200 bytes of `[A-Za-z0-9._:/-]`.
//!
//! Names are checked, never rewritten: a name that breaks the rule is refused
//! with a message that says exactly which byte is wrong and where.

use crate::error::CoreError;

pub use breakerd_policy::{MAX_NAME_LEN, NameProblem, name_problem};

/// Checks a circuit name: 1-200 bytes of `[A-Za-z0-9._:/-]`.
pub fn validate_circuit_name(name: &str) -> Result<(), CoreError> {
    check(name, "circuit name")
}

/// Checks a node id: like a circuit name, but empty is allowed (an
/// anonymous node).
pub fn validate_node_id(node: &str) -> Result<(), CoreError> {
    if node.is_empty() {
        return Ok(());
    }
    check(node, "node id")
}

/// Checks `name`, describing it as `what` in the error.
pub(crate) fn check(name: &str, what: &str) -> Result<(), CoreError> {
    match name_problem(name) {
        None => Ok(()),
        Some(problem) => Err(CoreError::InvalidName {
            what: what.to_owned(),
            problem,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_validation_table() {
        let long = "a".repeat(231);
        let max = "b".repeat(200);
        let cases: &[(&str, Option<&str>)] = &[
            ("payments", None),
            ("recs:v2", None),
            ("db-primary", None),
            ("a.b_c:d/e-F9", None),
            ("x", None),
            (&max, None),
            ("", Some("circuit name is empty")),
            (&long, Some("circuit name has 231 bytes; the limit is 200")),
            (
                "pay ments",
                Some("circuit name contains byte 0x20 at offset 3; allowed: A-Z a-z 0-9 . _ : / -"),
            ),
            (
                "caf\u{e9}",
                Some("circuit name contains byte 0xc3 at offset 3; allowed: A-Z a-z 0-9 . _ : / -"),
            ),
            (
                "a*",
                Some("circuit name contains byte 0x2a at offset 1; allowed: A-Z a-z 0-9 . _ : / -"),
            ),
            (
                "\n",
                Some("circuit name contains byte 0x0a at offset 0; allowed: A-Z a-z 0-9 . _ : / -"),
            ),
        ];
        for (name, want) in cases {
            let got = validate_circuit_name(name).err().map(|e| e.to_string());
            assert_eq!(got.as_deref(), *want, "{name:?}");
        }
    }

    #[test]
    fn node_ids_may_be_empty_but_follow_the_rule_otherwise() {
        assert!(validate_node_id("").is_ok());
        assert!(validate_node_id("web-1.eu").is_ok());
        let err = validate_node_id("web 1").unwrap_err().to_string();
        assert!(
            err.starts_with("node id contains byte 0x20 at offset 3"),
            "{err}"
        );
        assert!(validate_node_id(&"n".repeat(201)).is_err());
    }
}
