//! Writing captured values as JSON under the capture mode, output digests, and the RFC 3339
//! timestamps of `rl.timestamp_utc`. The state and action objects are built as byte buffers so a
//! call costs one serialization pass.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::StringValue;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::{CaptureMode, SHORT_STRING_BYTES};

/// Append `value` serialized as JSON to `buf`, strings changed by `mode`. A value that cannot be
/// serialized (a map with non-string keys, a failing `Serialize` impl) is written as `null`.
pub(crate) fn write_value<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T, mode: &CaptureMode) {
    let start = buf.len();
    if serde_json::to_writer(&mut *buf, value).is_err() {
        buf.truncate(start);
        buf.extend_from_slice(b"null");
        return;
    }
    if buf.len() - start >= mode.untouched_below() {
        rewrite_tail(buf, start, mode);
    }
}

/// Apply the capture mode to the JSON written at `buf[start..]`.
fn rewrite_tail(buf: &mut Vec<u8>, start: usize, mode: &CaptureMode) {
    let Ok(mut v) = serde_json::from_slice::<Value>(&buf[start..]) else { return };
    apply_mode(&mut v, mode);
    buf.truncate(start);
    if serde_json::to_writer(&mut *buf, &v).is_err() {
        buf.truncate(start);
        buf.extend_from_slice(b"null");
    }
}

/// Apply the capture mode to every string of a JSON value (object keys are kept).
pub(crate) fn apply_mode(v: &mut Value, mode: &CaptureMode) {
    match v {
        Value::String(s) => {
            if let Some(new) = captured_string(s, mode) {
                *v = new;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| apply_mode(x, mode)),
        Value::Object(o) => o.values_mut().for_each(|x| apply_mode(x, mode)),
        _ => {}
    }
}

/// The replacement of a string under the capture mode, or `None` to keep it.
fn captured_string(s: &str, mode: &CaptureMode) -> Option<Value> {
    match mode {
        CaptureMode::Full => None,
        CaptureMode::Truncate(n) => {
            let (cut, _) = s.char_indices().nth(*n)?;
            let mut t = String::with_capacity(cut + 3);
            t.push_str(&s[..cut]);
            t.push('…');
            Some(Value::String(t))
        }
        CaptureMode::Hash if s.len() > SHORT_STRING_BYTES => Some(Value::String(format!("sha256:{}", sha256_hex(s.as_bytes())))),
        CaptureMode::None if s.len() > SHORT_STRING_BYTES => Some(Value::Null),
        CaptureMode::Hash | CaptureMode::None => None,
    }
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

/// Append `"key":` (key escaped as a JSON string) to an object being written.
pub(crate) fn write_key(buf: &mut Vec<u8>, key: &str) {
    if buf.last() != Some(&b'{') {
        buf.push(b',');
    }
    write_str(buf, key);
    buf.push(b':');
}

/// Bytes that must be escaped in a JSON string (control characters, `"` and `\\`).
static NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Append a JSON string.
pub(crate) fn write_str(buf: &mut Vec<u8>, s: &str) {
    if !s.bytes().any(|b| NEEDS_ESCAPE[usize::from(b)]) {
        buf.reserve(s.len() + 2);
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        // Escaping a &str cannot fail.
        let _ = serde_json::to_writer(&mut *buf, s);
    }
}

/// Append bytes known to be valid JSON at this place (a constant `,"key":` fragment).
#[inline]
pub(crate) fn write_raw(buf: &mut Vec<u8>, fragment: &str) {
    buf.extend_from_slice(fragment.as_bytes());
}

thread_local! {
    /// Scratch buffers, reused so building a state, an action or an output's JSON allocates
    /// nothing once warm; a buffer may end on another thread (an async call), which is fine.
    static POOL: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Recently emitted state strings: a function whose state does not change from call to
    /// call (no arguments, or the same ones) shares one string instead of allocating one.
    static STATES: std::cell::RefCell<[Option<Arc<str>>; STATE_SLOTS]> = const { std::cell::RefCell::new([const { None }; STATE_SLOTS]) };
}

const POOL_MAX: usize = 16;
const POOL_MAX_CAPACITY: usize = 64 * 1024;
const STATE_SLOTS: usize = 16;
const STATE_CACHED_MAX: usize = 512;

/// An empty scratch buffer from this thread's pool.
pub(crate) fn take_buf() -> Vec<u8> {
    POOL.try_with(|p| p.borrow_mut().pop()).ok().flatten().unwrap_or_else(|| Vec::with_capacity(256))
}

/// Give a scratch buffer back to this thread's pool.
pub(crate) fn give_buf(mut buf: Vec<u8>) {
    if buf.capacity() > POOL_MAX_CAPACITY {
        return;
    }
    buf.clear();
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(buf);
        }
    });
}

/// The JSON in `buf` as an attribute value of exactly its size (one allocation).
pub(crate) fn to_string_value(buf: &[u8]) -> StringValue {
    match std::str::from_utf8(buf) {
        Ok(s) => StringValue::from(String::from(s)),
        Err(_) => StringValue::from(String::from_utf8_lossy(buf).into_owned()),
    }
}

/// The state JSON in `buf` as an attribute value, shared with an identical recent state of this
/// thread when there is one.
pub(crate) fn state_value(buf: &[u8]) -> StringValue {
    if buf.len() > STATE_CACHED_MAX || buf.len() < 8 {
        return to_string_value(buf);
    }
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&buf[buf.len() - 8..]);
    let h = (u64::from_le_bytes(tail) ^ (buf.len() as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let slot = (h >> 59) as usize % STATE_SLOTS;
    let shared = STATES.try_with(|c| {
        let mut c = c.borrow_mut();
        match &c[slot] {
            // Equal bytes to a string: valid UTF-8, no need to check again.
            Some(a) if a.as_bytes() == buf => Some(a.clone()),
            _ => {
                let a: Arc<str> = Arc::from(std::str::from_utf8(buf).ok()?);
                c[slot] = Some(a.clone());
                Some(a)
            }
        }
    });
    match shared {
        Ok(Some(a)) => StringValue::from(a),
        _ => to_string_value(buf),
    }
}

/// Append an unsigned integer.
pub(crate) fn write_u64(buf: &mut Vec<u8>, n: u64) {
    let _ = serde_json::to_writer(&mut *buf, &n);
}

/// Append a finite float (non-finite as `null`).
pub(crate) fn write_f64(buf: &mut Vec<u8>, x: f64) {
    if x.is_finite() {
        let _ = serde_json::to_writer(&mut *buf, &x);
    } else {
        buf.extend_from_slice(b"null");
    }
}

/// Append a boolean.
pub(crate) fn write_bool(buf: &mut Vec<u8>, b: bool) {
    buf.extend_from_slice(if b { b"true" } else { b"false" });
}

/// A JSON buffer into a `String`. The writers above only produce UTF-8.
#[cfg(test)]
pub(crate) fn into_string(buf: Vec<u8>) -> String {
    String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// `time` as RFC 3339 UTC with microseconds and `Z`, e.g. `2026-01-01T00:00:00.000000Z`.
pub(crate) fn rfc3339_utc(time: SystemTime) -> String {
    let d = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (secs, micros) = (d.as_secs(), d.subsec_micros());
    // The date and time of day change once a second: keep the last ones per thread.
    // Kept as a `String` so no call checks its UTF-8 again.
    thread_local! {
        static LAST: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let mut digits = [0u8; 6];
    let mut m = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (m % 10) as u8;
        m /= 10;
    }
    let with_prefix = |prefix: &str| {
        let mut out = String::with_capacity(27);
        out.push_str(prefix);
        digits.iter().for_each(|d| out.push(char::from(*d)));
        out.push('Z');
        out
    };
    LAST.try_with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != secs {
            let b = seconds_prefix(secs);
            *last = (secs, std::str::from_utf8(&b[..20]).map(str::to_owned).unwrap_or_default());
        }
        with_prefix(&last.1)
    })
    .unwrap_or_else(|_| with_prefix(std::str::from_utf8(&seconds_prefix(secs)[..20]).unwrap_or_default()))
}

/// `YYYY-MM-DDTHH:MM:SS.000000Z` of a Unix time in seconds.
fn seconds_prefix(secs: u64) -> [u8; 27] {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, dd) = civil_from_days(days);
    // Written digit by digit: `format!` costs several times more.
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y.clamp(0, 9999) as u64);
    put(5, 2, u64::from(m));
    put(8, 2, u64::from(dd));
    put(11, 2, rem / 3600);
    put(14, 2, (rem / 60) % 60);
    put(17, 2, rem % 60);
    b
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn written<T: Serialize>(v: &T, mode: CaptureMode) -> String {
        let mut b = Vec::new();
        write_value(&mut b, v, &mode);
        into_string(b)
    }

    #[test]
    fn capture_modes_change_only_long_strings() {
        let long = "x".repeat(600);
        let v = serde_json::json!({"short": "abc", "long": long, "n": 3, "list": [long.clone()]});
        let t = written(&v, CaptureMode::Truncate(500));
        let t: Value = serde_json::from_str(&t).unwrap_or_default();
        assert_eq!(t["short"], "abc");
        assert_eq!(t["long"].as_str().map(|s| s.chars().count()), Some(501));
        assert!(t["list"][0].as_str().is_some_and(|s| s.ends_with('…')));
        let h: Value = serde_json::from_str(&written(&v, CaptureMode::Hash)).unwrap_or_default();
        assert_eq!(h["long"], format!("sha256:{}", sha256_hex(long.as_bytes())));
        assert_eq!(h["short"], "abc");
        let n: Value = serde_json::from_str(&written(&v, CaptureMode::None)).unwrap_or_default();
        assert_eq!(n["long"], Value::Null);
        assert_eq!(n["n"], 3);
        assert_eq!(written(&v, CaptureMode::Full).len(), serde_json::to_string(&v).map(|s| s.len()).unwrap_or(0));
        // Multi-byte characters are cut on a character boundary.
        assert_eq!(written(&"ééé", CaptureMode::Truncate(2)), "\"éé…\"");
    }

    #[test]
    fn unserializable_values_become_null() {
        let mut m = std::collections::HashMap::new();
        m.insert(vec![1u8], 2);
        assert_eq!(written(&m, CaptureMode::Full), "null");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_micros() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_767_225_600_123_456);
        assert_eq!(rfc3339_utc(t), "2026-01-01T00:00:00.123456Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 86_399); // 2000-02-29T23:59:59
        assert_eq!(rfc3339_utc(t), "2000-02-29T23:59:59.000000Z");
    }

    #[test]
    fn keys_and_strings_are_escaped() {
        let mut b = b"{".to_vec();
        write_key(&mut b, "a\"b");
        write_str(&mut b, "line\nbreak");
        b.push(b'}');
        let v: Value = serde_json::from_slice(&b).unwrap_or_default();
        assert_eq!(v["a\"b"], "line\nbreak");
    }
}
