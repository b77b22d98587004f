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
}

/// Inflate a gzip body, failing as soon as the output would exceed `max_bytes`.
pub fn inflate_gzip(body: &[u8], max_bytes: usize) -> Result<Vec<u8>, InflateError> {
    let decoder = flate2::read::MultiGzDecoder::new(body);
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max_bytes));
    let limit = (max_bytes as u64).saturating_add(1);
    decoder
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| InflateError::Invalid(e.to_string()))?;
    if out.len() > max_bytes {
        return Err(InflateError::TooLarge(max_bytes));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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
