//! Timestamps: RFC 3339 UTC with microseconds and `Z` out, RFC 3339 (offset optional) in.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// Microseconds since the Unix epoch.
pub type Micros = i64;

/// Format microseconds since the epoch as `2026-01-02T03:04:05.123456Z`.
pub fn format_micros(us: Micros) -> String {
    micros_text(us).as_str().to_string()
}

/// The text of [`format_micros`] without an allocation (an export writes two per triplet).
#[derive(Clone, Copy)]
pub struct MicrosText {
    buf: [u8; 27],
    len: u8,
}

impl MicrosText {
    /// The formatted timestamp.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are written into `buf`.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("1970-01-01T00:00:00.000000Z")
    }
}

const EPOCH_TEXT: &str = "1970-01-01T00:00:00.000000Z";

/// [`format_micros`] into a fixed buffer: years 0 to 9999 by the civil-from-days algorithm
/// (proleptic Gregorian, as RFC 3339 and the `time` crate count), others through `time`.
pub fn micros_text(us: Micros) -> MicrosText {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days, shifted so that eras start on March 1st.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return slow_text(us);
    }
    let mut buf = [0u8; 27];
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, sod / 3600);
    put(14, 2, sod / 60 % 60);
    put(17, 2, sod % 60);
    put(20, 6, micros);
    for (at, c) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'.'), (26, b'Z')] {
        buf[at] = c;
    }
    MicrosText { buf, len: 27 }
}

fn slow_text(us: Micros) -> MicrosText {
    let text = OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| t.format(&format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z")).ok())
        .filter(|t| t.len() <= 27)
        .unwrap_or_else(|| EPOCH_TEXT.to_string());
    let mut buf = [0u8; 27];
    buf[..text.len()].copy_from_slice(text.as_bytes());
    MicrosText { buf, len: text.len() as u8 }
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
    fn the_fast_formatter_agrees_with_time() {
        let reference = |us: Micros| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
                .expect("in range")
                .format(&format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"))
                .expect("formats")
        };
        // Edges: the epoch, leap days, century rules, the end of 9999, before the epoch.
        let mut cases = vec![
            0,
            -1,
            1,
            951_782_400_000_000,   // 2000-02-29
            4_107_542_400_000_000, // 2100-03-01
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
            -62_167_219_200_000_000, // 0000-01-01
            -2_208_988_800_000_001,  // 1899-12-31T23:59:59.999999
        ];
        // A deterministic spread over the whole range of four-digit years.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let span = 253_402_300_799_999_999i128 + 62_167_219_200_000_000;
            cases.push((i128::from(x) % span - 62_167_219_200_000_000) as i64);
        }
        for us in cases {
            assert_eq!(micros_text(us).as_str(), reference(us), "at {us}");
        }
        assert_eq!(micros_text(253_402_300_800_000_000).as_str().len(), 27, "a five-digit year falls back");
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
