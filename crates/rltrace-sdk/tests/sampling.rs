//! Sequence-aware sampling and configured reward weights, in a process of their own (the SDK is
//! installed once per process): whole sequences are kept or dropped by the hash of their id,
//! kept triplets carry `rl.sampling.probability`, and `rl.reward` is the weighted mean.

mod common;

use common::*;
use rltrace_sdk::{RewardWeights, rl_triplet, sequence_hash};

const RATIO: f64 = 0.5;

fn setup() {
    install(|b| {
        let w = RewardWeights::new([("success", 0.5), ("latency", 0.25), ("validation", 0.25)]).expect("weights");
        b.sampling_ratio(RATIO).reward_weights(w)
    });
}

#[rl_triplet(role = "Root", task_id = task)]
fn root(task: &str) {
    child();
    child();
}

#[rl_triplet(role = "Child")]
fn child() {
    let _ = rltrace_sdk::reward_component("validation", 0.0);
}

#[test]
fn whole_sequences_are_kept_or_dropped_by_their_hash() {
    setup();
    let threshold = (RATIO * 18_446_744_073_709_551_616.0) as u64;
    let mut kept = 0;
    for i in 0..200 {
        let task = format!("sampled-{i}");
        root(&task);
        let n = sequence(&task).len();
        let expect_kept = sequence_hash(&task) < threshold;
        assert_eq!(n, if expect_kept { 3 } else { 0 }, "{task}: never cut in half");
        if expect_kept {
            kept += 1;
            for s in sequence(&task) {
                assert_eq!(attr_f64(&s, "rl.sampling.probability"), Some(RATIO));
            }
        }
    }
    assert!((60..140).contains(&kept), "about half of 200 kept: {kept}");
}

#[test]
fn weighted_reward_is_set_when_weights_are_configured() {
    setup();
    let task = (0..1000).map(|i| format!("weighted-{i}")).find(|t| sequence_hash(t) < (RATIO * 18_446_744_073_709_551_616.0) as u64);
    let task = task.expect("a kept id");
    root(&task);
    let v = sequence(&task);
    assert_eq!(v.len(), 3);
    // Root: success 1, latency 1 -> (0.5 + 0.25) / 0.75 = 1.
    assert_eq!(attr_f64(&v[0], "rl.reward"), Some(1.0));
    // Children: success 1, latency 1, validation 0 -> 0.75.
    assert_eq!(attr_f64(&v[1], "rl.reward"), Some(0.75));
    assert_eq!(attr_f64(&v[1], "rl.reward.validation"), Some(0.0));
}
