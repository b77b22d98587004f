//! Bounded gzip inflation: inflation stops at the bound, so a decompression bomb costs at most the
//! bound in memory.

use std::io::Read;

/// Why a gzip body could not be inflated.
#[derive(Debug, thiserror::Error)]
pub enum InflateError {
    /// The inflated body would exceed the bound.
    #[error("gzip body inflates beyond the limit of {0} bytes")]
    TooLarge(usize),
    /// Not a valid gzip stream.
    #[error("gzip body is not valid: {0}")]
    Invalid(String),
    /// The memory the inflated body needs could not be reserved (the collector is busy).
    #[error("rltrace is overloaded, retry later")]
    NoRoom,
}

/// Output grown at a time by [`inflate_gzip_metered`].
pub const INFLATE_STEP: usize = 1024 * 1024;

/// [`inflate_gzip`] that asks `reserve(total)` before the output grows past each
/// [`INFLATE_STEP`]: memory for the inflated body is taken from a budget as it is needed, and
/// inflation stops with [`InflateError::NoRoom`] when `reserve` says no.
pub fn inflate_gzip_metered(body: &[u8], max_bytes: usize, reserve: &mut dyn FnMut(usize) -> bool) -> Result<Vec<u8>, InflateError> {
    let mut decoder = flate2::read::MultiGzDecoder::new(body).take((max_bytes as u64).saturating_add(1));
    let invalid = |e: std::io::Error| InflateError::Invalid(e.to_string());
    let mut out = Vec::new();
    let mut reserved = 0usize;
    let mut probe = [0u8; 8192];
    loop {
        if out.len() == reserved {
            // Full: reserve the next step only when there is more to inflate.
            let n = decoder.read(&mut probe).map_err(invalid)?;
            if n == 0 {
                return Ok(out);
            }
            if !reserve(reserved + INFLATE_STEP) {
                return Err(InflateError::NoRoom);
            }
            reserved += INFLATE_STEP;
            out.reserve_exact(reserved - out.len());
            out.extend_from_slice(&probe[..n]);
        } else {
            let len = out.len();
            out.resize(reserved, 0);
            let n = decoder.read(&mut out[len..]).map_err(invalid)?;
            out.truncate(len + n);
            if n == 0 {
                out.shrink_to_fit();
                return Ok(out);
            }
        }
        if out.len() > max_bytes {
            return Err(InflateError::TooLarge(max_bytes));
        }
    }
}

/// Inflate a gzip body, failing as soon as the output would exceed `max_bytes`.
pub fn inflate_gzip(body: &[u8], max_bytes: usize) -> Result<Vec<u8>, InflateError> {
    inflate_gzip_metered(body, max_bytes, &mut |_| true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn metered_inflation_reserves_each_step_and_stops_when_refused() {
        let data = vec![7u8; 3 * INFLATE_STEP + 10];
        let body = gz(&data);
        let mut asked = Vec::new();
        let out = inflate_gzip_metered(&body, 64 * INFLATE_STEP, &mut |n| {
            asked.push(n);
            true
        })
        .expect("inflates");
        assert_eq!(out, data);
        assert_eq!(asked, vec![INFLATE_STEP, 2 * INFLATE_STEP, 3 * INFLATE_STEP, 4 * INFLATE_STEP]);
        // A body of exactly three steps asks for three: the next is reserved only for more data.
        let mut asked = Vec::new();
        let exact = vec![9u8; 3 * INFLATE_STEP];
        inflate_gzip_metered(&gz(&exact), 64 * INFLATE_STEP, &mut |n| {
            asked.push(n);
            true
        })
        .expect("inflates");
        assert_eq!(asked, vec![INFLATE_STEP, 2 * INFLATE_STEP, 3 * INFLATE_STEP]);
        assert!(inflate_gzip_metered(&gz(b""), 1, &mut |_| false).expect("empty").is_empty(), "an empty body reserves nothing");
        // Refused at the third step: no more than two steps were inflated.
        let refused = inflate_gzip_metered(&body, 64 * INFLATE_STEP, &mut |n| n <= 2 * INFLATE_STEP);
        assert!(matches!(refused, Err(InflateError::NoRoom)), "{refused:?}");
        // The size bound still holds, at its edge.
        assert!(inflate_gzip_metered(&body, data.len(), &mut |_| true).is_ok());
        assert!(matches!(inflate_gzip_metered(&body, data.len() - 1, &mut |_| true), Err(InflateError::TooLarge(_))));
        assert!(matches!(inflate_gzip_metered(b"not gzip", 1024, &mut |_| true), Err(InflateError::Invalid(_))));
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    #[test]
    fn inflates_up_to_the_bound_exactly() {
        let data = vec![b'a'; 1000];
        assert_eq!(inflate_gzip(&gz(&data), 1000).expect("at bound").len(), 1000);
        assert!(matches!(inflate_gzip(&gz(&data), 999), Err(InflateError::TooLarge(999))));
    }

    #[test]
    fn bomb_is_stopped() {
        let bomb = gz(&vec![0u8; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024);
        assert!(matches!(inflate_gzip(&bomb, 1024 * 1024), Err(InflateError::TooLarge(_))));
    }

    #[test]
    fn garbage_is_invalid() {
        assert!(matches!(inflate_gzip(b"not gzip", 100), Err(InflateError::Invalid(_))));
    }
}
