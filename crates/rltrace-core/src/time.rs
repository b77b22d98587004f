//! Timestamps: RFC 3339 UTC with microseconds and `Z` out, RFC 3339 (offset optional) in.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// Microseconds since the Unix epoch.
pub type Micros = i64;

/// Format microseconds since the epoch as `2026-01-02T03:04:05.123456Z`.
pub fn format_micros(us: Micros) -> String {
    let nanos = i128::from(us) * 1000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let fmt = format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
            );
            t.format(&fmt).unwrap_or_else(|_| String::from("1970-01-01T00:00:00.000000Z"))
        }
        Err(_) => String::from("1970-01-01T00:00:00.000000Z"),
    }
}

/// Parse an RFC 3339 timestamp into microseconds since the epoch. A value without an offset is
/// read as UTC (what Python's `datetime.utcnow().isoformat()` writes).
pub fn parse_rfc3339_micros(s: &str) -> Option<Micros> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some((t.unix_timestamp_nanos() / 1000) as Micros);
    }
    let with_frac = format_description!(
        version = 2,
        "[year]-[month]-[day][first [T] [t] [ ]][hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    let t = PrimitiveDateTime::parse(s, &with_frac).ok()?;
    Some((t.assume_utc().unix_timestamp_nanos() / 1000) as Micros)
}

/// Nanoseconds since the epoch (as OTLP carries them) to microseconds.
pub fn nanos_to_micros(ns: u64) -> Micros {
    (ns / 1000) as Micros
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_micros_and_z() {
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_micros(1_700_000_000_123_456), "2023-11-14T22:13:20.123456Z");
    }

    #[test]
    fn parses_offset_and_naive() {
        let z = parse_rfc3339_micros("2023-11-14T22:13:20.123456Z").expect("z");
        assert_eq!(z, 1_700_000_000_123_456);
        let naive = parse_rfc3339_micros("2023-11-14T22:13:20.123456").expect("naive");
        assert_eq!(naive, z);
        let off = parse_rfc3339_micros("2023-11-14T23:13:20.123456+01:00").expect("offset");
        assert_eq!(off, z);
        assert_eq!(parse_rfc3339_micros("2023-11-14T22:13:20"), Some(1_700_000_000_000_000));
        assert_eq!(parse_rfc3339_micros("yesterday"), None);
    }
}
