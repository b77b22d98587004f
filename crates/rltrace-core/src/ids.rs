//! Hex encoding of trace and span ids, lowercase as rltrace reports them.

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0x0f) as usize] as char);
    }
    out
}

/// Parse hex (either case) of exactly `N` bytes.
pub fn from_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, chunk) in b.chunks_exact(2).enumerate() {
        out[i] = (nibble(chunk[0])? << 4) | nibble(chunk[1])?;
    }
    Some(out)
}

/// Parse hex (either case) of any even length.
pub fn from_hex_vec(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    b.chunks_exact(2).map(|c| Some((nibble(c[0])? << 4) | nibble(c[1])?)).collect()
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The default triplet id of a span: `{trace_id}{span_id}` in lowercase hex.
pub fn default_triplet_id(trace_id: &[u8; 16], span_id: &[u8; 8]) -> String {
    let mut s = to_hex(trace_id);
    s.push_str(&to_hex(span_id));
    s
}

/// Split a default triplet id back into its trace and span ids.
pub fn parse_default_triplet_id(s: &str) -> Option<([u8; 16], [u8; 8])> {
    if s.len() != 48 || !s.is_ascii() {
        return None;
    }
    Some((from_hex::<16>(&s[..32])?, from_hex::<8>(&s[32..])?))
}

/// The form under which a triplet id is compared: a default id (`{trace_id}{span_id}`, 48 hex
/// digits) in lowercase, as triplets report it; any other id as given. So a reward for an
/// upper-case default id, or for an explicit `rl.triplet_id` that happens to look like one, finds
/// its triplet whatever the case either side used.
pub fn canonical_triplet_id(triplet_id: &str) -> std::borrow::Cow<'_, str> {
    // Most ids have no upper case: they are looked at once, never parsed.
    if triplet_id.len() == 48 && triplet_id.bytes().any(|b| b.is_ascii_uppercase()) && parse_default_triplet_id(triplet_id).is_some() {
        std::borrow::Cow::Owned(triplet_id.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(triplet_id)
    }
}

/// Whether two triplet ids name the same triplet: the same [`canonical_triplet_id`], told
/// without building either when they are equal or differ other than in case.
pub fn same_triplet_id(a: &str, b: &str) -> bool {
    a == b || (a.len() == 48 && b.len() == 48 && a.eq_ignore_ascii_case(b) && canonical_triplet_id(a) == canonical_triplet_id(b))
}

/// `sha256` of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    to_hex(&sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_triplet_id_is_equality_of_canonical_forms() {
        let lower = "0af7651916cd43dd8448eb211c80319cb7ad6b7169203331";
        let upper = lower.to_ascii_uppercase();
        let mixed = format!("{}{}", &upper[..20], &lower[20..]);
        let explicit_hexlike = "not-a-default-id-but-it-has-forty-eight-chars-XY";
        let ids = [lower, upper.as_str(), mixed.as_str(), explicit_hexlike, &explicit_hexlike.to_ascii_lowercase(), "t-1", "T-1", ""];
        for a in ids {
            for b in ids {
                assert_eq!(same_triplet_id(a, b), canonical_triplet_id(a) == canonical_triplet_id(b), "{a:?} vs {b:?}");
            }
        }
        assert!(same_triplet_id(lower, &upper));
        assert!(!same_triplet_id("t-1", "T-1"), "an explicit id is compared as given");
    }

    #[test]
    fn hex_round_trip_and_case() {
        let id = from_hex::<8>("00F067AA0BA902B7").expect("valid hex");
        assert_eq!(to_hex(&id), "00f067aa0ba902b7");
        assert!(from_hex::<8>("00f067aa0ba902b").is_none());
        assert!(from_hex::<8>("00f067aa0ba902bz").is_none());
    }

    #[test]
    fn default_triplet_id_round_trip() {
        let t = [7u8; 16];
        let s = [9u8; 8];
        let id = default_triplet_id(&t, &s);
        assert_eq!(id.len(), 48);
        assert_eq!(parse_default_triplet_id(&id), Some((t, s)));
        assert_eq!(parse_default_triplet_id("abc"), None);
    }
}
