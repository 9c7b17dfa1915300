//! Writing the results: `latest.json` (flat numeric keys plus details),
//! `latest.md` (the side-by-side table with targets) and `latest.svg` (a
//! hand-written bar chart of the fleet workloads; no plotting crate).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Map, Value};

/// A target of issue #4 and whether the run met it.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The target, in words.
    pub target: String,
    /// Met, missed, or not measured.
    pub met: Option<bool>,
}

/// One row of the markdown table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Workload id ("W1").
    pub workload: &'static str,
    /// What is measured, with its unit.
    pub metric: String,
    /// (a) breakerd, (b) Redis trick, (c) local breakers; `None`: not
    /// applicable.
    pub values: [Option<f64>; 3],
    /// The target and verdict.
    pub verdict: Option<Verdict>,
}

/// A number for tables: thousands separators for large values, up to three
/// significant decimals for small ones.
pub fn fmt_num(x: f64) -> String {
    if x.is_nan() {
        return "n/a".into();
    }
    let a = x.abs();
    if a >= 1000.0 {
        let mut digits = format!("{:.0}", a);
        let mut out = String::new();
        while digits.len() > 3 {
            let tail = digits.split_off(digits.len() - 3);
            out = format!(",{tail}{out}");
        }
        format!("{}{digits}{out}", if x < 0.0 { "-" } else { "" })
    } else if a >= 100.0 || a == 0.0 || x.fract() == 0.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// The markdown table.
pub fn markdown(title: &str, rows: &[Row], notes: &[String]) -> String {
    let mut s = format!("# {title}\n\n");
    s.push_str(
        "| | metric | (a) breakerd | (b) Redis trick | (c) local breakers | target | met |\n",
    );
    s.push_str("|---|---|---:|---:|---:|---|:---:|\n");
    for r in rows {
        let v = |o: Option<f64>| o.map_or("—".to_string(), fmt_num);
        let (target, met) = match &r.verdict {
            Some(Verdict { target, met }) => (
                target.as_str(),
                match met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "n/a",
                },
            ),
            None => ("", ""),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.workload,
            r.metric,
            v(r.values[0]),
            v(r.values[1]),
            v(r.values[2]),
            target,
            met
        );
    }
    if !notes.is_empty() {
        s.push('\n');
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

/// One panel of the chart: a metric with a bar per design.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Title, with unit.
    pub title: String,
    /// (label, value) per bar; NaN bars are drawn as "n/a".
    pub bars: Vec<(String, f64)>,
    /// Log scale (for values spanning orders of magnitude).
    pub log: bool,
}

const COLORS: [&str; 3] = ["#2b6cb0", "#c53030", "#718096"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A bar chart of `panels`, one row of horizontal bars per panel. Bars are
/// coloured by position: (a) blue, (b) red, (c) grey.
pub fn svg(title: &str, panels: &[Panel]) -> String {
    let width = 760.0;
    let label_w = 170.0;
    let bar_h = 22.0;
    let bar_area = width - label_w - 130.0;
    let mut y = 50.0;
    let mut body = String::new();
    for p in panels {
        let _ = writeln!(
            body,
            r#"<text x="10" y="{y}" font-size="15" font-weight="bold">{}</text>"#,
            esc(&p.title)
        );
        y += 10.0;
        let max = p
            .bars
            .iter()
            .map(|b| b.1)
            .filter(|v| v.is_finite())
            .fold(0.0_f64, f64::max);
        let scale = |v: f64| -> f64 {
            if !v.is_finite() || v <= 0.0 || max <= 0.0 {
                0.0
            } else if p.log {
                // Log scale from 1 to the largest value.
                (v.max(1.0).log10() / max.max(10.0).log10()) * bar_area
            } else {
                v / max * bar_area
            }
        };
        for (i, (label, v)) in p.bars.iter().enumerate() {
            let w = scale(*v).max(if v.is_finite() && *v > 0.0 { 2.0 } else { 0.0 });
            let color = COLORS[i % COLORS.len()];
            let _ = writeln!(
                body,
                r#"<text x="{lx}" y="{ty}" font-size="13" text-anchor="end">{}</text><rect x="{label_w}" y="{y}" width="{w:.1}" height="{bh}" fill="{color}"/><text x="{vx:.1}" y="{ty}" font-size="13">{}</text>"#,
                esc(label),
                if v.is_finite() {
                    fmt_num(*v)
                } else {
                    "n/a".into()
                },
                lx = label_w - 8.0,
                ty = y + bar_h * 0.72,
                bh = bar_h - 4.0,
                vx = label_w + w + 6.0,
            );
            y += bar_h;
        }
        if p.log {
            let _ = writeln!(
                body,
                r##"<text x="{label_w}" y="{}" font-size="11" fill="#555">log scale</text>"##,
                y + 12.0
            );
            y += 12.0;
        }
        y += 28.0;
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{h}\" viewBox=\"0 0 {width} {h}\" font-family=\"sans-serif\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"26\" font-size=\"18\" font-weight=\"bold\">{}</text>\n{body}</svg>\n",
        esc(title),
        h = y + 10.0,
    )
}

/// Insert `value` under `key`, turning non-finite numbers into null (JSON
/// has no NaN).
pub fn put(map: &mut Map<String, Value>, key: &str, value: f64) {
    let v = if value.is_finite() {
        serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
    } else {
        Value::Null
    };
    map.insert(key.to_owned(), v);
}

/// Write `latest.json`, `latest.md` and `latest.svg` into `dir`.
pub fn write_all(dir: &Path, json: &Value, md: &str, svg: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut text = serde_json::to_string_pretty(json).map_err(std::io::Error::other)?;
    text.push('\n');
    std::fs::write(dir.join("latest.json"), text)?;
    std::fs::write(dir.join("latest.md"), md)?;
    std::fs::write(dir.join("latest.svg"), svg)?;
    Ok(())
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic
/// Gregorian, UTC).
pub fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_formatted_for_tables() {
        assert_eq!(fmt_num(1_234_567.4), "1,234,567");
        assert_eq!(fmt_num(999.6), "1000");
        assert_eq!(fmt_num(12.34), "12.3");
        assert_eq!(fmt_num(1.234), "1.23");
        assert_eq!(fmt_num(0.01234), "0.012");
        assert_eq!(fmt_num(3.0), "3");
        assert_eq!(fmt_num(-2500.0), "-2,500");
        assert_eq!(fmt_num(f64::NAN), "n/a");
    }

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn markdown_has_a_row_per_metric_and_marks_misses() {
        let rows = vec![
            Row {
                workload: "W1",
                metric: "p50 ns".into(),
                values: [Some(40.0), Some(30_000.0), Some(25.0)],
                verdict: Some(Verdict {
                    target: "a ≤ 2× c".into(),
                    met: Some(true),
                }),
            },
            Row {
                workload: "W6",
                metric: "bytes/circuit".into(),
                values: [Some(900.0), Some(120.0), None],
                verdict: Some(Verdict {
                    target: "a ≤ 300".into(),
                    met: Some(false),
                }),
            },
        ];
        let md = markdown("t", &rows, &["note".into()]);
        assert!(
            md.contains("| W1 | p50 ns | 40 | 30,000 | 25 | a ≤ 2× c | yes |"),
            "{md}"
        );
        assert!(
            md.contains("| W6 | bytes/circuit | 900 | 120 | — | a ≤ 300 | **no** |"),
            "{md}"
        );
        assert!(md.ends_with("- note\n"));
    }

    #[test]
    fn svg_draws_a_bar_per_value() {
        let s = svg(
            "fleet <workloads>",
            &[
                Panel {
                    title: "W2 calls/s".into(),
                    bars: vec![("a".into(), 1e6), ("b".into(), 5e4), ("c".into(), f64::NAN)],
                    log: true,
                },
                Panel {
                    title: "W3 wasted".into(),
                    bars: vec![("a".into(), 6.0), ("b".into(), 5.0)],
                    log: false,
                },
            ],
        );
        assert!(s.starts_with("<svg"));
        assert!(s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<rect").count(), 1 + 5);
        assert!(s.contains("fleet &lt;workloads&gt;"));
        assert!(s.contains("1,000,000") && s.contains("n/a"));
    }

    #[test]
    fn json_files_are_written_and_nan_becomes_null() {
        let mut m = Map::new();
        put(&mut m, "w1_a_ns_p50", 41.5);
        put(&mut m, "w6_a_bytes_per_circuit", f64::NAN);
        let dir = std::env::temp_dir().join(format!("breakerd-bench-test-{}", std::process::id()));
        write_all(&dir, &Value::Object(m), "# md\n", "<svg/>").unwrap();
        let back: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("latest.json")).unwrap())
                .unwrap();
        assert_eq!(back["w1_a_ns_p50"], 41.5);
        assert!(back["w6_a_bytes_per_circuit"].is_null());
        assert!(dir.join("latest.md").exists() && dir.join("latest.svg").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
