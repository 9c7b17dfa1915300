//! What breakerctl prints: serde views of the proto messages for `--json`,
//! and the human tables and detail pages rendered from the same views, so
//! the two outputs can never disagree.
//!
//! JSON field names are the proto field names; enum values are lower
//! snake_case (`half_open`, `forced_open`, `fail_open`), the same words
//! `set-policy` accepts. Counters are the policy engine's own [`Counters`]
//! (converted by `breakerd-proto`), which serialize under the proto names
//! and list themselves for the detail page, so no list of them is kept here.

use std::fmt::Write as _;

use breakerd_policy::Counters;
use breakerd_proto::v1 as pb;
use serde::Serialize;

use crate::{duration::format_ms, table::Table};

/// One circuit, as `list` and `watch` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CircuitView {
    /// Circuit name.
    pub name: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Generation of this state.
    pub generation: u64,
    /// While open: time until half-open.
    pub open_remaining_ms: u64,
    /// Grows on every policy change.
    pub policy_version: u64,
    /// The effective policy (absent only if the server sent none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyView>,
    /// The operator override in force, `null` when none.
    #[serde(rename = "override")]
    pub override_: Option<OverrideView>,
    /// True when this snapshot announces a deletion (watch only).
    pub deleted: bool,
}

/// A policy with every field the server sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(missing_docs)] // The proto documents each field; the names are the same.
pub struct PolicyView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_buckets: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_calls: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_rate_threshold: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_call_rate_threshold: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_call_duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum_nodes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_base_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_backoff_multiplier: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_max_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_jitter: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub half_open_max_probes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_lease_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub successes_to_close: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded_mode: Option<String>,
}

/// An operator override.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OverrideView {
    /// `forced_open`, `forced_closed` or `disabled`.
    pub kind: String,
    /// Why it was set.
    pub reason: String,
    /// Who set it.
    pub actor: String,
    /// Time until it lapses; 0 when it never does.
    pub expires_in_ms: u64,
}

/// Everything `get` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetailView {
    /// Snapshot fields, flattened into the top level.
    #[serde(flatten)]
    pub circuit: CircuitView,
    /// Counters, `null` if the server sent none.
    pub counters: Option<Counters>,
    /// Recent transitions, newest first.
    pub history: Vec<TransitionView>,
}

/// One recent transition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransitionView {
    /// State before.
    pub from: String,
    /// State after.
    pub to: String,
    /// Generation after.
    pub generation: u64,
    /// How long ago.
    pub age_ms: u64,
    /// Why.
    pub reason: String,
}

/// The result of `list`: every page followed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListView {
    /// Circuits ordered by name (at most `--limit`).
    pub circuits: Vec<CircuitView>,
    /// Circuits matching the filter on the server, across all pages.
    pub total_matching: u64,
}

/// One `watch` line in `--json` mode (newline-delimited JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WatchLine {
    /// True for the snapshots of the first event (and of a resync).
    pub initial: bool,
    /// The circuit.
    #[serde(flatten)]
    pub circuit: CircuitView,
}

/// `closed`, `open`, `half_open`; `unknown(N)` for a value this build of
/// breakerctl does not know (a newer server).
pub fn state_name(state: i32) -> String {
    match pb::CircuitState::try_from(state) {
        Ok(pb::CircuitState::Closed) => "closed".into(),
        Ok(pb::CircuitState::Open) => "open".into(),
        Ok(pb::CircuitState::HalfOpen) => "half_open".into(),
        Ok(pb::CircuitState::Unspecified) => "unspecified".into(),
        Err(_) => format!("unknown({state})"),
    }
}

fn override_kind_name(kind: i32) -> String {
    match pb::OverrideKind::try_from(kind) {
        Ok(pb::OverrideKind::ForcedOpen) => "forced_open".into(),
        Ok(pb::OverrideKind::ForcedClosed) => "forced_closed".into(),
        Ok(pb::OverrideKind::Disabled) => "disabled".into(),
        Ok(pb::OverrideKind::None) => "none".into(),
        Err(_) => format!("unknown({kind})"),
    }
}

fn window_kind_name(kind: i32) -> String {
    match pb::WindowKind::try_from(kind) {
        Ok(pb::WindowKind::Count) => "count".into(),
        Ok(pb::WindowKind::Time) => "time".into(),
        Ok(pb::WindowKind::Unspecified) => "unspecified".into(),
        Err(_) => format!("unknown({kind})"),
    }
}

fn degraded_mode_name(mode: i32) -> String {
    match pb::DegradedMode::try_from(mode) {
        Ok(pb::DegradedMode::Local) => "local".into(),
        Ok(pb::DegradedMode::FailOpen) => "fail_open".into(),
        Ok(pb::DegradedMode::FailClosed) => "fail_closed".into(),
        Ok(pb::DegradedMode::Unspecified) => "unspecified".into(),
        Err(_) => format!("unknown({mode})"),
    }
}

impl From<&pb::Policy> for PolicyView {
    fn from(p: &pb::Policy) -> Self {
        PolicyView {
            consecutive_failures: p.consecutive_failures,
            window_kind: p.window_kind.map(window_kind_name),
            window_size: p.window_size,
            window_buckets: p.window_buckets,
            minimum_calls: p.minimum_calls,
            failure_rate_threshold: p.failure_rate_threshold,
            slow_call_rate_threshold: p.slow_call_rate_threshold,
            slow_call_duration_ms: p.slow_call_duration_ms,
            quorum_nodes: p.quorum_nodes,
            open_base_ms: p.open_base_ms,
            open_backoff_multiplier: p.open_backoff_multiplier,
            open_max_ms: p.open_max_ms,
            open_jitter: p.open_jitter,
            half_open_max_probes: p.half_open_max_probes,
            probe_lease_ms: p.probe_lease_ms,
            successes_to_close: p.successes_to_close,
            degraded_mode: p.degraded_mode.map(degraded_mode_name),
        }
    }
}

impl From<&pb::Override> for OverrideView {
    fn from(o: &pb::Override) -> Self {
        OverrideView {
            kind: override_kind_name(o.kind),
            reason: o.reason.clone(),
            actor: o.actor.clone(),
            expires_in_ms: o.expires_in_ms,
        }
    }
}

impl From<&pb::CircuitSnapshot> for CircuitView {
    fn from(s: &pb::CircuitSnapshot) -> Self {
        CircuitView {
            name: s.name.clone(),
            state: state_name(s.state),
            generation: s.generation,
            open_remaining_ms: s.open_remaining_ms,
            policy_version: s.policy_version,
            policy: s.policy.as_ref().map(PolicyView::from),
            // The server leaves the field out when there is no override; a
            // kind of NONE means the same thing.
            override_: s
                .r#override
                .as_ref()
                .filter(|o| o.kind != pb::OverrideKind::None as i32)
                .map(OverrideView::from),
            deleted: s.deleted,
        }
    }
}

impl From<&pb::Transition> for TransitionView {
    fn from(t: &pb::Transition) -> Self {
        TransitionView {
            from: state_name(t.from),
            to: state_name(t.to),
            generation: t.generation,
            age_ms: t.age_ms,
            reason: t.reason.clone(),
        }
    }
}

impl From<&pb::CircuitDetail> for DetailView {
    fn from(d: &pb::CircuitDetail) -> Self {
        let snapshot = d.snapshot.clone().unwrap_or_default();
        DetailView {
            circuit: CircuitView::from(&snapshot),
            counters: d.counters.as_ref().map(Counters::from),
            history: d.history.iter().map(TransitionView::from).collect(),
        }
    }
}

/// `OPEN`, `HALF_OPEN`: states read best in capitals in a table.
fn shout(s: &str) -> String {
    s.to_ascii_uppercase()
}

fn override_cell(o: Option<&OverrideView>) -> String {
    match o {
        None => "-".into(),
        Some(o) if o.expires_in_ms > 0 => format!("{} ({})", o.kind, format_ms(o.expires_in_ms)),
        Some(o) => o.kind.clone(),
    }
}

fn open_cell(c: &CircuitView) -> String {
    if c.open_remaining_ms > 0 {
        format_ms(c.open_remaining_ms)
    } else {
        "-".into()
    }
}

/// The `list` table, with a count line under it.
pub fn render_list(list: &ListView) -> String {
    let mut t = Table::new(["NAME", "STATE", "GEN", "OPEN FOR", "OVERRIDE", "POLICY"]);
    for c in &list.circuits {
        t.row([
            c.name.clone(),
            shout(&c.state),
            c.generation.to_string(),
            open_cell(c),
            override_cell(c.override_.as_ref()),
            format!("v{}", c.policy_version),
        ]);
    }
    let mut out = if list.circuits.is_empty() {
        String::new()
    } else {
        t.render()
    };
    let _ = writeln!(
        out,
        "{} of {} matching circuit{}",
        list.circuits.len(),
        list.total_matching,
        if list.total_matching == 1 { "" } else { "s" }
    );
    out
}

/// One line about a circuit: what `force-open` and friends print.
pub fn render_summary(c: &CircuitView) -> String {
    let mut line = format!(
        "{}: {} generation {}",
        c.name,
        shout(&c.state),
        c.generation
    );
    if c.open_remaining_ms > 0 {
        let _ = write!(line, ", half-open in {}", format_ms(c.open_remaining_ms));
    }
    match &c.override_ {
        Some(o) => {
            let _ = write!(line, ", override {} by {} ({})", o.kind, o.actor, o.reason);
            if o.expires_in_ms > 0 {
                let _ = write!(line, " lapses in {}", format_ms(o.expires_in_ms));
            }
        }
        None => line.push_str(", no override"),
    }
    line
}

/// One `watch` line for humans.
pub fn render_watch_line(initial: bool, c: &CircuitView) -> String {
    if c.deleted {
        return format!("{:<9} {}", "deleted", c.name);
    }
    let tag = if initial { "snapshot" } else { "change" };
    format!("{tag:<9} {}", render_summary(c))
}

/// The policy as `key value` lines, keys as `set-policy` takes them.
pub fn render_policy(p: &PolicyView) -> String {
    let ms = |v: Option<u64>| v.map(|ms| format!("{ms} ({})", format_ms(ms)));
    let rows: [(&str, Option<String>); 17] = [
        (
            "consecutive_failures",
            p.consecutive_failures.map(|v| v.to_string()),
        ),
        ("window_kind", p.window_kind.clone()),
        ("window_size", p.window_size.map(|v| v.to_string())),
        ("window_buckets", p.window_buckets.map(|v| v.to_string())),
        ("minimum_calls", p.minimum_calls.map(|v| v.to_string())),
        (
            "failure_rate_threshold",
            p.failure_rate_threshold.map(|v| v.to_string()),
        ),
        (
            "slow_call_rate_threshold",
            p.slow_call_rate_threshold.map(|v| v.to_string()),
        ),
        ("slow_call_duration_ms", ms(p.slow_call_duration_ms)),
        ("quorum_nodes", p.quorum_nodes.map(|v| v.to_string())),
        ("open_base_ms", ms(p.open_base_ms)),
        (
            "open_backoff_multiplier",
            p.open_backoff_multiplier.map(|v| v.to_string()),
        ),
        ("open_max_ms", ms(p.open_max_ms)),
        ("open_jitter", p.open_jitter.map(|v| v.to_string())),
        (
            "half_open_max_probes",
            p.half_open_max_probes.map(|v| v.to_string()),
        ),
        ("probe_lease_ms", ms(p.probe_lease_ms)),
        (
            "successes_to_close",
            p.successes_to_close.map(|v| v.to_string()),
        ),
        ("degraded_mode", p.degraded_mode.clone()),
    ];
    let mut t = Table::bare();
    for (k, v) in rows {
        t.row([format!("  {k}"), v.unwrap_or_else(|| "-".into())]);
    }
    t.render()
}

/// The `get` page.
pub fn render_detail(d: &DetailView) -> String {
    let c = &d.circuit;
    let mut out = String::new();
    let mut head = Table::bare();
    head.row(["name:".to_owned(), c.name.clone()]);
    let mut state = shout(&c.state);
    if c.open_remaining_ms > 0 {
        let _ = write!(state, " (half-open in {})", format_ms(c.open_remaining_ms));
    }
    head.row(["state:".to_owned(), state]);
    head.row(["generation:".to_owned(), c.generation.to_string()]);
    let ov = match &c.override_ {
        None => "none".to_owned(),
        Some(o) => {
            let lapses = if o.expires_in_ms > 0 {
                format!("lapses in {}", format_ms(o.expires_in_ms))
            } else {
                "until cleared".to_owned()
            };
            format!("{} by {}, {lapses}: {}", o.kind, o.actor, o.reason)
        }
    };
    head.row(["override:".to_owned(), ov]);
    head.row([
        "policy:".to_owned(),
        format!("version {}", c.policy_version),
    ]);
    out.push_str(&head.render());
    if let Some(p) = &c.policy {
        out.push_str(&render_policy(p));
    }
    if let Some(k) = &d.counters {
        out.push_str("counters:\n");
        let mut t = Table::bare();
        for (name, v) in k.fields() {
            t.row([format!("  {name}"), v.to_string()]);
        }
        out.push_str(&t.render());
    }
    if d.history.is_empty() {
        out.push_str("recent transitions: none\n");
    } else {
        out.push_str("recent transitions (newest first):\n");
        let mut t = Table::new(["  AGE", "FROM", "TO", "GEN", "REASON"]);
        for h in &d.history {
            t.row([
                format!("  {} ago", format_ms(h.age_ms)),
                shout(&h.from),
                shout(&h.to),
                h.generation.to_string(),
                h.reason.clone(),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> pb::CircuitSnapshot {
        pb::CircuitSnapshot {
            name: "payments".into(),
            state: pb::CircuitState::Open as i32,
            generation: 4,
            open_remaining_ms: 42_000,
            policy_version: 2,
            policy: Some(pb::Policy {
                consecutive_failures: Some(5),
                window_kind: Some(pb::WindowKind::Count as i32),
                open_base_ms: Some(60_000),
                degraded_mode: Some(pb::DegradedMode::FailOpen as i32),
                ..Default::default()
            }),
            r#override: Some(pb::Override {
                kind: pb::OverrideKind::ForcedOpen as i32,
                reason: "deploy".into(),
                actor: "alice@box".into(),
                expires_in_ms: 600_000,
            }),
            deleted: false,
        }
    }

    #[test]
    fn json_uses_proto_names_and_snake_case_enums() {
        let v = serde_json::to_value(CircuitView::from(&snapshot())).unwrap();
        assert_eq!(v["name"], "payments");
        assert_eq!(v["state"], "open");
        assert_eq!(v["generation"], 4);
        assert_eq!(v["override"]["kind"], "forced_open");
        assert_eq!(v["override"]["expires_in_ms"], 600_000);
        assert_eq!(v["policy"]["window_kind"], "count");
        assert_eq!(v["policy"]["degraded_mode"], "fail_open");
        assert_eq!(v["policy"]["open_base_ms"], 60_000);
        // Unset policy fields are left out rather than printed as null.
        assert!(v["policy"].get("quorum_nodes").is_none());
    }

    #[test]
    fn none_override_kind_reads_as_no_override() {
        let mut s = snapshot();
        s.r#override = Some(pb::Override::default());
        let v = serde_json::to_value(CircuitView::from(&s)).unwrap();
        assert!(v["override"].is_null());
    }

    #[test]
    fn unknown_enum_values_are_shown_not_hidden() {
        assert_eq!(state_name(3), "half_open");
        assert_eq!(state_name(99), "unknown(99)");
    }

    #[test]
    fn detail_json_flattens_the_snapshot() {
        let detail = pb::CircuitDetail {
            snapshot: Some(snapshot()),
            counters: Some(pb::Counters {
                consecutive_failures: 5,
                total_failures: 5,
                ..Default::default()
            }),
            history: vec![pb::Transition {
                from: pb::CircuitState::Closed as i32,
                to: pb::CircuitState::Open as i32,
                generation: 4,
                age_ms: 1_500,
                reason: "consecutive_failures".into(),
            }],
        };
        let v = serde_json::to_value(DetailView::from(&detail)).unwrap();
        assert_eq!(v["name"], "payments");
        assert_eq!(v["counters"]["total_failures"], 5);
        assert_eq!(v["history"][0]["to"], "open");
        assert_eq!(v["history"][0]["reason"], "consecutive_failures");

        let page = render_detail(&DetailView::from(&detail));
        assert!(
            page.contains("state:       OPEN (half-open in 42s)"),
            "{page}"
        );
        assert!(
            page.contains("forced_open by alice@box, lapses in 10m: deploy"),
            "{page}"
        );
        assert!(page.contains("  open_base_ms"), "{page}");
        assert!(page.contains("60000 (1m)"), "{page}");
        assert!(page.contains("1s ago"), "{page}");
    }

    #[test]
    fn list_table_lines_up() {
        let list = ListView {
            circuits: vec![
                CircuitView::from(&snapshot()),
                CircuitView {
                    name: "db-primary".into(),
                    state: "closed".into(),
                    generation: 1,
                    open_remaining_ms: 0,
                    policy_version: 1,
                    policy: None,
                    override_: None,
                    deleted: false,
                },
            ],
            total_matching: 2,
        };
        let text = render_list(&list);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NAME        STATE   GEN  OPEN FOR  OVERRIDE           POLICY"
        );
        assert_eq!(
            lines[1],
            "payments    OPEN    4    42s       forced_open (10m)  v2"
        );
        assert_eq!(
            lines[2],
            "db-primary  CLOSED  1    -         -                  v1"
        );
        assert_eq!(lines[3], "2 of 2 matching circuits");
    }

    #[test]
    fn watch_lines_are_tagged() {
        let c = CircuitView::from(&snapshot());
        assert!(render_watch_line(true, &c).starts_with("snapshot  payments: OPEN generation 4"));
        assert!(render_watch_line(false, &c).starts_with("change    payments: OPEN"));
        let gone = CircuitView { deleted: true, ..c };
        assert_eq!(render_watch_line(false, &gone), "deleted   payments");
    }

    #[test]
    fn summary_line_says_state_and_override() {
        let line = render_summary(&CircuitView::from(&snapshot()));
        assert_eq!(
            line,
            "payments: OPEN generation 4, half-open in 42s, override forced_open by alice@box (deploy) lapses in 10m"
        );
    }

    #[test]
    fn counters_print_in_proto_order_on_the_page_and_in_json() {
        let detail = pb::CircuitDetail {
            snapshot: Some(snapshot()),
            counters: Some(pb::Counters {
                consecutive_failures: 1,
                window_calls: 2,
                window_failures: 3,
                window_slow_calls: 4,
                probes_in_flight: 5,
                half_open_successes: 6,
                consecutive_trips: 7,
                total_allowed: 8,
                total_rejected: 9,
                total_successes: 10,
                total_failures: 11,
                total_ignored: 12,
                total_stale: 13,
                total_leases_expired: 123_456_789_012,
            }),
            history: vec![],
        };
        let view = DetailView::from(&detail);
        let page = render_detail(&view);
        let counters = "counters:
  consecutive_failures  1
  window_calls          2
  window_failures       3
  window_slow_calls     4
  probes_in_flight      5
  half_open_successes   6
  consecutive_trips     7
  total_allowed         8
  total_rejected        9
  total_successes       10
  total_failures        11
  total_ignored         12
  total_stale           13
  total_leases_expired  123456789012
recent transitions: none
";
        assert!(page.ends_with(counters), "{page}");
        let json = serde_json::to_string_pretty(&view).unwrap();
        let counters = r#"
  "counters": {
    "consecutive_failures": 1,
    "window_calls": 2,
    "window_failures": 3,
    "window_slow_calls": 4,
    "probes_in_flight": 5,
    "half_open_successes": 6,
    "consecutive_trips": 7,
    "total_allowed": 8,
    "total_rejected": 9,
    "total_successes": 10,
    "total_failures": 11,
    "total_ignored": 12,
    "total_stale": 13,
    "total_leases_expired": 123456789012
  },
"#;
        assert!(json.contains(counters), "{json}");
    }
}
