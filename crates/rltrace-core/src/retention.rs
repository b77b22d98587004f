//! Retention (`[retention]` of the config file): how long spans that are not triplets, and whole
//! sequences, are kept. The store deletes what is due in small batches ([`Retention::cutoffs`]
//! says what is due at a time); this module holds the rule, the store only runs its queries.
//!
//! A sequence is due when its last triplet and its last reward event (those that target it, its
//! triplets or its tasks) are older than `sequences`, and it is not waiting for a reward: under a
//! policy with a fallback reward, a sequence the fallback has not settled yet (no terminal-type
//! reward) is kept until it is settled. Spans that are not triplets are due when they ended more
//! than `spans` ago.

use serde::Deserialize;

use crate::time::Micros;

/// Rows deleted in one transaction by default.
pub const DEFAULT_BATCH: usize = 100;
/// Default seconds between background passes.
pub const DEFAULT_EVERY_S: u64 = 600;

/// `[retention]` as written: durations as `"30d"`, `"12h"`, `"90m"`, `"45s"` or seconds.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keep spans that are not triplets this long after they ended.
    #[serde(default, deserialize_with = "crate::policy::duration_secs")]
    pub spans: Option<u64>,
    /// Keep a sequence this long after its last triplet and last reward event.
    #[serde(default, deserialize_with = "crate::policy::duration_secs")]
    pub sequences: Option<u64>,
    /// Seconds between background passes (default 600).
    #[serde(default, deserialize_with = "crate::policy::duration_secs")]
    pub every: Option<u64>,
    /// Rows deleted per transaction (default 100; 1 to 10,000): spans that are not triplets, and
    /// sequences holding this many triplets at most (a longer sequence is deleted alone).
    #[serde(default)]
    pub batch: Option<usize>,
}

/// What is due at one moment: spans that ended before `spans_before_ns`, sequences whose last
/// activity is before `sequences_before_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Spans (not triplets) that ended before this (nanoseconds since the epoch) are due.
    pub spans_before_ns: Option<u64>,
    /// Sequences whose last triplet and last reward event are before this (microseconds) are due.
    pub sequences_before_us: Option<Micros>,
    /// Rows per transaction.
    pub batch: usize,
    /// Now, in nanoseconds since the epoch (a span ending more than an hour after it is stepped
    /// over by retention's walk, not waited for).
    pub now_ns: u64,
}

/// A retention section that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("[retention] {0}")]
pub struct RetentionError(String);

impl Retention {
    /// Check the values.
    pub fn validate(&self) -> Result<(), RetentionError> {
        for (name, v) in [("spans", self.spans), ("sequences", self.sequences), ("every", self.every)] {
            if v == Some(0) {
                return Err(RetentionError(format!("{name} must be longer than 0 seconds")));
            }
        }
        if let Some(b) = self.batch
            && !(1..=10_000).contains(&b)
        {
            return Err(RetentionError(format!("batch = {b}: use 1 to 10000")));
        }
        Ok(())
    }

    /// Whether anything is ever deleted.
    pub fn is_active(&self) -> bool {
        self.spans.is_some() || self.sequences.is_some()
    }

    /// Seconds between background passes.
    pub fn every_s(&self) -> u64 {
        self.every.unwrap_or(DEFAULT_EVERY_S)
    }

    /// What is due at `now_us` (microseconds since the epoch).
    pub fn cutoffs(&self, now_us: Micros) -> Cutoffs {
        let now_us = now_us.max(0);
        Cutoffs {
            spans_before_ns: self.spans.map(|s| (now_us as u64).saturating_mul(1000).saturating_sub(s.saturating_mul(1_000_000_000))),
            sequences_before_us: self.sequences.map(|s| now_us.saturating_sub(i64::try_from(s.saturating_mul(1_000_000)).unwrap_or(i64::MAX))),
            batch: self.batch.unwrap_or(DEFAULT_BATCH),
            now_ns: (now_us as u64).saturating_mul(1000),
        }
    }

    /// A stable text of the settings, for logs.
    pub fn describe(&self) -> String {
        let d = |v: Option<u64>| v.map_or_else(|| "forever".to_string(), |s| format!("{s}s"));
        format!("spans {}, sequences {}", d(self.spans), d(self.sequences))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_cutoffs_follow_from_now() {
        let r: Retention = toml::from_str("spans = \"2d\"\nsequences = 3600\nbatch = 10").expect("test value");
        assert_eq!((r.spans, r.sequences, r.batch), (Some(172_800), Some(3600), Some(10)));
        r.validate().expect("test value");
        let c = r.cutoffs(10_000_000_000_000);
        assert_eq!(c.spans_before_ns, Some(10_000_000_000_000_000 - 172_800_000_000_000));
        assert_eq!(c.sequences_before_us, Some(10_000_000_000_000 - 3_600_000_000));
        assert_eq!(c.batch, 10);
        assert_eq!(Retention::default().cutoffs(5), Cutoffs { spans_before_ns: None, sequences_before_us: None, batch: DEFAULT_BATCH, now_ns: 5000 });
    }

    #[test]
    fn bad_values_are_refused_with_the_key() {
        assert!(toml::from_str::<Retention>("spans = \"2 weeks\"").expect_err("an error").to_string().contains("invalid duration"));
        assert!(toml::from_str::<Retention>("keep = \"2d\"").expect_err("an error").to_string().contains("unknown field"));
        let r: Retention = toml::from_str("spans = 0").expect("test value");
        assert!(r.validate().expect_err("an error").to_string().contains("spans must be longer"));
        let r: Retention = toml::from_str("batch = 0").expect("test value");
        assert!(r.validate().expect_err("an error").to_string().contains("batch = 0"));
    }
}
