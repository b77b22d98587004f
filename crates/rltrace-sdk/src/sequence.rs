//! Per-sequence indexes and sequence-aware sampling.
//!
//! The index of a triplet in its sequence comes from a process-wide sharded map of
//! `sequence_id -> next index`, taken when the call starts, so concurrent tasks of one sequence
//! get distinct, gap-free indexes in start order. The map is bounded: ending a sequence
//! (`rltrace_sdk::end_sequence`) removes its counter, and when a shard is full its least recently
//! used half is evicted (a sequence evicted and then continued restarts at index 0).
//!
//! Sampling keeps or drops whole sequences: a sequence is kept when the first 8 bytes of
//! SHA-256 of its id, read as a big-endian integer, are below `ratio * 2^64`. Every process
//! computes the same decision for the same id, so an episode is never cut in half.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{LazyLock, Mutex};

use sha2::{Digest, Sha256};

const SHARDS: usize = 16;
/// Sequences tracked at once per shard before the least recently used half is evicted
/// (16 shards: 65,536 sequences in all).
pub const MAX_SEQUENCES_PER_SHARD: usize = 4096;

/// FNV-1a: sequence ids come from the application itself, so a keyed hash buys nothing here and
/// costs a few times more per call.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnvBuild = BuildHasherDefault<Fnv>;

struct Counter {
    next: u64,
    last_used: u64,
}

#[derive(Default)]
struct Shard {
    map: HashMap<String, Counter, FnvBuild>,
    tick: u64,
}

static COUNTERS: LazyLock<Vec<Mutex<Shard>>> = LazyLock::new(|| (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect());

fn shard(sequence_id: &str) -> &'static Mutex<Shard> {
    // The high bits choose the shard; the map uses the whole hash.
    let h = FnvBuild::default().hash_one(sequence_id);
    &COUNTERS[(h >> 60) as usize % SHARDS]
}

/// Take the next index of a sequence (0 for its first triplet in this process).
pub(crate) fn next_index(sequence_id: &str) -> u64 {
    let mut s = match shard(sequence_id).lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    s.tick += 1;
    let tick = s.tick;
    if let Some(c) = s.map.get_mut(sequence_id) {
        let i = c.next;
        c.next += 1;
        c.last_used = tick;
        return i;
    }
    if s.map.len() >= MAX_SEQUENCES_PER_SHARD {
        evict_half(&mut s);
    }
    s.map.insert(sequence_id.to_string(), Counter { next: 1, last_used: tick });
    0
}

fn evict_half(s: &mut Shard) {
    let mut ticks: Vec<u64> = s.map.values().map(|c| c.last_used).collect();
    let mid = ticks.len() / 2;
    let (_, median, _) = ticks.select_nth_unstable(mid);
    let median = *median;
    s.map.retain(|_, c| c.last_used > median);
}

/// Forget a sequence's counter (it ended).
pub(crate) fn forget(sequence_id: &str) {
    if let Ok(mut s) = shard(sequence_id).lock() {
        s.map.remove(sequence_id);
    }
}

/// Number of sequences tracked (for tests).
#[cfg(test)]
fn tracked() -> usize {
    COUNTERS.iter().map(|s| s.lock().map(|g| g.map.len()).unwrap_or(0)).sum()
}

/// The keep threshold of a sampling ratio: `None` keeps everything.
pub(crate) fn threshold(ratio: f64) -> Option<u64> {
    if ratio >= 1.0 {
        None
    } else {
        // Saturating float-to-int conversion; ratio 0 gives 0 (nothing kept).
        Some((ratio * 18_446_744_073_709_551_616.0) as u64)
    }
}

/// Whether a sequence is kept under a threshold from [`threshold`].
pub(crate) fn keep(sequence_id: &str, threshold: Option<u64>) -> bool {
    match threshold {
        None => true,
        Some(t) => sequence_hash(sequence_id) < t,
    }
}

/// The sampling hash of a sequence id: the first 8 bytes of its SHA-256, big-endian.
pub fn sequence_hash(sequence_id: &str) -> u64 {
    let d = Sha256::digest(sequence_id.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_distinct_and_gap_free_under_concurrency() {
        let seq = "seq-concurrency-test";
        let mut all: Vec<u64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8).map(|_| s.spawn(|| (0..500).map(|_| next_index(seq)).collect::<Vec<_>>())).collect();
            hs.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        });
        all.sort_unstable();
        assert_eq!(all, (0..4000).collect::<Vec<_>>());
        forget(seq);
        assert_eq!(next_index(seq), 0);
        forget(seq);
    }

    #[test]
    fn shards_stay_bounded() {
        for i in 0..(MAX_SEQUENCES_PER_SHARD * SHARDS * 2) {
            next_index(&format!("bounded-{i}"));
        }
        assert!(tracked() <= MAX_SEQUENCES_PER_SHARD * SHARDS, "{}", tracked());
    }

    #[test]
    fn sampling_keeps_about_the_ratio_and_is_stable() {
        let t = threshold(0.25);
        let kept = (0..20_000).filter(|i| keep(&format!("task-{i}"), t)).count();
        assert!((4_400..5_600).contains(&kept), "{kept}");
        assert!(keep("anything", threshold(1.0)));
        assert!(!keep("anything", threshold(0.0)));
        // The decision is a pure function of the id: the same in every process.
        let h = sequence_hash("abc");
        assert_eq!(h, 0xba78_16bf_8f01_cfea, "first 8 bytes of sha256(\"abc\")");
    }
}
