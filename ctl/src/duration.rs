//! Human durations on the command line (`10m`, `30s`, `1h30m`, `250ms`) and
//! back again for display, so operators never count milliseconds by hand.

use std::time::Duration;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing was given.
    #[error("empty duration; use e.g. 30s, 10m, 1h30m")]
    Empty,
    /// A number without a unit (`10`): ambiguous, so refused.
    #[error("{0:?} has no unit; use ms, s, m, h or d (e.g. 30s)")]
    MissingUnit(String),
    /// A unit that is not one of ms, s, m, h, d.
    #[error("{input:?}: unknown unit {unit:?}; use ms, s, m, h or d")]
    UnknownUnit {
        /// The whole argument.
        input: String,
        /// The unit as written.
        unit: String,
    },
    /// Something that is not a digit where a number was expected.
    #[error("{0:?} is not a duration; use e.g. 30s, 10m, 1h30m")]
    Malformed(String),
    /// Too long to represent in milliseconds.
    #[error("{0:?} is too long")]
    Overflow(String),
}

/// Parses `30s`, `10m`, `1h`, `2d`, `250ms` and sums of them (`1h30m`).
///
/// A bare number is refused rather than guessed: `--expires 10` could mean
/// seconds or minutes, and an override that lapses at the wrong time is an
/// incident.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total_ms: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(DurationError::Malformed(input.to_owned()));
        }
        let (number, after) = rest.split_at(digits);
        let letters = after.len()
            - after
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let (unit, after) = after.split_at(letters);
        let per_unit_ms: u64 = match unit {
            "" if after.is_empty() => return Err(DurationError::MissingUnit(input.to_owned())),
            "" => return Err(DurationError::Malformed(input.to_owned())),
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => {
                return Err(DurationError::UnknownUnit {
                    input: input.to_owned(),
                    unit: other.to_owned(),
                });
            }
        };
        let overflow = || DurationError::Overflow(input.to_owned());
        let n: u64 = number.parse().map_err(|_| overflow())?;
        let part = n.checked_mul(per_unit_ms).ok_or_else(overflow)?;
        total_ms = total_ms.checked_add(part).ok_or_else(overflow)?;
        rest = after;
    }
    Ok(Duration::from_millis(total_ms))
}

/// A clap value parser: a duration that is not zero (a zero timeout or a
/// zero expiry is always a mistake).
pub fn parse_nonzero_duration(input: &str) -> Result<Duration, String> {
    match parse_duration(input) {
        Ok(d) if d.is_zero() => Err(format!("{input:?} is zero; give a positive duration")),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// Formats milliseconds compactly for tables: `450ms`, `42s`, `9m59s`,
/// `1h2m`, `3d4h`. The two largest units are shown, which is as much
/// precision as a human reads off a table; below a minute, tenths of a
/// second are dropped too.
pub fn format_ms(ms: u64) -> String {
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let secs = ms / 1_000;
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) if s == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h{m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_units() {
        let cases = [
            ("250ms", 250),
            ("30s", 30_000),
            ("10m", 600_000),
            ("1h", 3_600_000),
            ("2d", 172_800_000),
            ("0s", 0),
            (" 5s ", 5_000),
        ];
        for (input, ms) in cases {
            assert_eq!(
                parse_duration(input),
                Ok(Duration::from_millis(ms)),
                "{input}"
            );
        }
    }

    #[test]
    fn parses_sums_of_units() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(
            parse_duration("1m30s500ms"),
            Ok(Duration::from_millis(90_500))
        );
    }

    #[test]
    fn refuses_ambiguous_or_malformed_input() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("10"),
            Err(DurationError::MissingUnit("10".into()))
        );
        assert_eq!(
            parse_duration("1h30"),
            Err(DurationError::MissingUnit("1h30".into()))
        );
        assert!(
            matches!(parse_duration("10x"), Err(DurationError::UnknownUnit { unit, .. }) if unit == "x")
        );
        assert!(matches!(
            parse_duration("10min"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert_eq!(
            parse_duration("m"),
            Err(DurationError::Malformed("m".into()))
        );
        assert_eq!(
            parse_duration("-5s"),
            Err(DurationError::Malformed("-5s".into()))
        );
        assert_eq!(
            parse_duration("1.5s"),
            Err(DurationError::Malformed("1.5s".into()))
        );
        assert_eq!(
            parse_duration("5 s"),
            Err(DurationError::Malformed("5 s".into()))
        );
    }

    #[test]
    fn refuses_overflow_instead_of_wrapping() {
        let huge = format!("{}d", u64::MAX / 1_000);
        assert_eq!(
            parse_duration(&huge),
            Err(DurationError::Overflow(huge.clone()))
        );
        let too_many_digits = "99999999999999999999999s";
        assert!(matches!(
            parse_duration(too_many_digits),
            Err(DurationError::Overflow(_))
        ));
        let sum = format!("{}ms{}ms", u64::MAX, 1);
        assert!(matches!(
            parse_duration(&sum),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn nonzero_parser_refuses_zero() {
        assert!(parse_nonzero_duration("0s").is_err());
        assert!(parse_nonzero_duration("0m0s").is_err());
        assert_eq!(parse_nonzero_duration("5s"), Ok(Duration::from_secs(5)));
        assert!(parse_nonzero_duration("5").unwrap_err().contains("no unit"));
    }

    #[test]
    fn formats_with_two_largest_units() {
        let cases = [
            (0, "0ms"),
            (450, "450ms"),
            (1_000, "1s"),
            (42_900, "42s"),
            (60_000, "1m"),
            (599_000, "9m59s"),
            (3_600_000, "1h"),
            (3_720_000, "1h2m"),
            (3_725_000, "1h2m"),
            (86_400_000, "1d"),
            (86_400_000 + 4 * 3_600_000, "1d4h"),
        ];
        for (ms, want) in cases {
            assert_eq!(format_ms(ms), want, "{ms}");
        }
    }

    #[test]
    fn format_then_parse_round_trips_whole_units() {
        for ms in [1_000, 42_000, 600_000, 599_000, 3_600_000, 172_800_000] {
            assert_eq!(
                parse_duration(&format_ms(ms)),
                Ok(Duration::from_millis(ms))
            );
        }
    }
}
