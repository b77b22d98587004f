//! Reward summaries over a bounded sample of sequences: the what-if of DESIGN section 11 (the
//! distribution of effective rewards under the current policy and an edited one, and the
//! sequences that change most) and the overview's charts (a histogram of effective rewards, the
//! mean reward per agent role over time). Pure functions: a store hands in sequences as it keeps
//! them ([`SampledSequence`]: rows and the ledger events that may reach them), they are evaluated
//! with [`crate::sequence::evaluate`], and nothing is stored.
//!
//! Every output is bounded by its parameters: bins, buckets, roles and most-changed entries are
//! capped below, whatever the caller asks.

use std::collections::BTreeMap;

use crate::Policy;
use crate::export::TripletView;
use crate::reward::RewardEvent;
use crate::sequence::{StoredTriplet, evaluate};
use crate::time::Micros;

/// Most histogram bins.
pub const MAX_BINS: usize = 100;
/// Most entries of the most-changed list.
pub const MAX_TOP: usize = 200;
/// Most time buckets of the role chart.
pub const MAX_BUCKETS: usize = 100;
/// Most roles drawn in the role chart (the most frequent ones).
pub const MAX_ROLES: usize = 12;

/// One sequence as a store keeps it: its triplet rows (any order; state and action texts may be
/// empty) and the ledger events that may reach it.
#[derive(Debug, Clone, Default)]
pub struct SampledSequence {
    /// The sequence id.
    pub sequence_id: String,
    /// Its triplet rows.
    pub rows: Vec<StoredTriplet>,
    /// Ledger events that may reach it, in ledger order.
    pub events: Vec<RewardEvent>,
}

/// A histogram of effective rewards over [0, 1] in equal bins (the last one holds 1.0).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    /// Triplets per bin: bin `i` of `n` holds rewards in `[i/n, (i+1)/n)`.
    pub bins: Vec<u64>,
    /// Triplets with no effective reward.
    pub unrewarded: u64,
    /// Sum of the rewards counted in the bins.
    pub sum: f64,
}

impl Histogram {
    /// An empty histogram of `bins` bins (1 to [`MAX_BINS`]).
    pub fn new(bins: usize) -> Histogram {
        Histogram { bins: vec![0; bins.clamp(1, MAX_BINS)], unrewarded: 0, sum: 0.0 }
    }

    /// Count one triplet's effective reward.
    pub fn add(&mut self, reward: Option<f64>) {
        match reward {
            Some(v) if v.is_finite() => {
                let n = self.bins.len();
                let i = ((v.clamp(0.0, 1.0) * n as f64).floor() as usize).min(n - 1);
                self.bins[i] += 1;
                self.sum += v;
            }
            _ => self.unrewarded += 1,
        }
    }

    /// Triplets with an effective reward.
    pub fn rewarded(&self) -> u64 {
        self.bins.iter().sum()
    }

    /// Mean effective reward of the rewarded triplets.
    pub fn mean(&self) -> Option<f64> {
        let n = self.rewarded();
        (n > 0).then(|| self.sum / n as f64)
    }
}

/// How much one sequence's rewards change from one policy to the other.
#[derive(Debug, Clone, PartialEq)]
pub struct Changed {
    /// The sequence id.
    pub sequence_id: String,
    /// Triplets of the sequence counted (those the filter keeps).
    pub triplets: usize,
    /// Of those, triplets whose effective reward differs.
    pub changed_triplets: usize,
    /// Mean effective reward under the current policy.
    pub current_mean: Option<f64>,
    /// Mean effective reward under the proposed policy.
    pub proposed_mean: Option<f64>,
    /// Mean over its triplets of the absolute change of the effective reward; a reward that
    /// appears or vanishes counts as a change of 1.
    pub change: f64,
}

/// The what-if: both distributions over the same triplets and the sequences that change most.
#[derive(Debug, Clone, PartialEq)]
pub struct WhatIf {
    /// Sequences evaluated.
    pub sequences: usize,
    /// Triplets counted.
    pub triplets: usize,
    /// Triplets whose effective reward differs between the policies.
    pub changed_triplets: usize,
    /// Distribution under the current policy.
    pub current: Histogram,
    /// Distribution under the proposed policy.
    pub proposed: Histogram,
    /// The sequences whose rewards change most, largest change first (ties by sequence id);
    /// only sequences that change at all.
    pub most_changed: Vec<Changed>,
}

/// Two rewards differ by more than rounding.
fn differs(a: Option<f64>, b: Option<f64>) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) => {
            let d = (a - b).abs();
            if d > 1e-12 { d } else { 0.0 }
        }
        (None, None) => 0.0,
        _ => 1.0,
    }
}

fn mean(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let (n, s) = values.flatten().fold((0usize, 0.0), |(n, s), v| (n + 1, s + v));
    (n > 0).then(|| s / n as f64)
}

/// Evaluate every sequence under `current` and `proposed` at `now`, counting the triplets
/// `keep` accepts (given the triplet and whether its sequence is complete under `current`);
/// `bins` histogram bins, the `top` most-changed sequences.
pub fn what_if(
    sample: &[SampledSequence],
    current: &Policy,
    proposed: &Policy,
    now: Micros,
    bins: usize,
    top: usize,
    keep: impl Fn(&TripletView, bool) -> bool,
) -> WhatIf {
    let mut out = WhatIf {
        sequences: 0,
        triplets: 0,
        changed_triplets: 0,
        current: Histogram::new(bins),
        proposed: Histogram::new(bins),
        most_changed: Vec::new(),
    };
    let mut changed: Vec<Changed> = Vec::new();
    for s in sample {
        let a = evaluate(&s.sequence_id, s.rows.clone(), &s.events, current, now);
        let b = evaluate(&s.sequence_id, s.rows.clone(), &s.events, proposed, now);
        out.sequences += 1;
        let (mut n, mut moved, mut total) = (0usize, 0usize, 0.0);
        let mut pairs = Vec::new();
        for (x, y) in a.triplets.iter().zip(&b.triplets) {
            if !keep(x, a.complete) {
                continue;
            }
            let (ra, rb) = (x.effective.reward, y.effective.reward);
            out.current.add(ra);
            out.proposed.add(rb);
            n += 1;
            let d = differs(ra, rb);
            if d > 0.0 {
                moved += 1;
                total += d;
            }
            pairs.push((ra, rb));
        }
        out.triplets += n;
        out.changed_triplets += moved;
        if moved > 0 {
            changed.push(Changed {
                sequence_id: s.sequence_id.clone(),
                triplets: n,
                changed_triplets: moved,
                current_mean: mean(pairs.iter().map(|p| p.0)),
                proposed_mean: mean(pairs.iter().map(|p| p.1)),
                change: total / n as f64,
            });
        }
    }
    changed.sort_by(|x, y| y.change.total_cmp(&x.change).then_with(|| x.sequence_id.cmp(&y.sequence_id)));
    changed.truncate(top.min(MAX_TOP));
    out.most_changed = changed;
    out
}

/// Mean effective reward of one role in each time bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleSeries {
    /// The agent role.
    pub role: String,
    /// Rewarded triplets of the role in the sample.
    pub triplets: u64,
    /// Mean effective reward per bucket (`None`: no rewarded triplet of the role there).
    pub means: Vec<Option<f64>>,
}

/// The overview's charts over a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    /// Sequences evaluated.
    pub sequences: usize,
    /// Triplets evaluated.
    pub triplets: usize,
    /// Effective rewards.
    pub histogram: Histogram,
    /// Start of each time bucket (microseconds); buckets are of equal length and the last one
    /// ends at `end`.
    pub bucket_starts: Vec<Micros>,
    /// End of the last bucket.
    pub end: Micros,
    /// The most frequent roles (at most [`MAX_ROLES`]), most frequent first.
    pub roles: Vec<RoleSeries>,
}

/// Evaluate every sequence under `policy` at `now`: the histogram of effective rewards (`bins`)
/// and the mean reward per role over time (`buckets` between the earliest and the latest
/// rewarded triplet of the sample).
pub fn overview(sample: &[SampledSequence], policy: &Policy, now: Micros, bins: usize, buckets: usize) -> Overview {
    let buckets = buckets.clamp(1, MAX_BUCKETS);
    let mut histogram = Histogram::new(bins);
    let mut points: Vec<(Micros, &str, f64)> = Vec::new();
    let mut triplets = 0usize;
    let evals: Vec<_> = sample.iter().map(|s| evaluate(&s.sequence_id, s.rows.clone(), &s.events, policy, now)).collect();
    for e in &evals {
        for t in &e.triplets {
            triplets += 1;
            histogram.add(t.effective.reward);
            if let (Some(r), Some(role)) = (t.effective.reward, t.role.as_deref()) {
                points.push((t.timestamp, role, r));
            }
        }
    }
    let start = points.iter().map(|p| p.0).min().unwrap_or(0);
    let end = points.iter().map(|p| p.0).max().unwrap_or(0).max(start + 1);
    let width = ((end - start) as f64 / buckets as f64).max(1.0);
    let bucket_of = |t: Micros| (((t - start) as f64 / width).floor() as usize).min(buckets - 1);
    // Per role: rewarded triplets, and per bucket the sum and count of rewards.
    type Sums = (u64, Vec<(f64, u64)>);
    let mut per_role: BTreeMap<&str, Sums> = BTreeMap::new();
    for (t, role, r) in &points {
        let entry = per_role.entry(role).or_insert_with(|| (0, vec![(0.0, 0); buckets]));
        entry.0 += 1;
        let b = &mut entry.1[bucket_of(*t)];
        b.0 += r;
        b.1 += 1;
    }
    let mut roles: Vec<RoleSeries> = per_role
        .into_iter()
        .map(|(role, (n, sums))| RoleSeries {
            role: role.to_string(),
            triplets: n,
            means: sums.into_iter().map(|(s, c)| (c > 0).then(|| s / c as f64)).collect(),
        })
        .collect();
    roles.sort_by(|a, b| b.triplets.cmp(&a.triplets).then_with(|| a.role.cmp(&b.role)));
    roles.truncate(MAX_ROLES);
    let bucket_starts = (0..buckets).map(|i| start + (i as f64 * width) as Micros).collect();
    Overview { sequences: sample.len(), triplets, histogram, bucket_starts, end, roles }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::{RewardTarget, Strategy, Valuation};

    fn row(n: u8, role: &str, reward: Option<f64>, ts_us: Micros) -> StoredTriplet {
        StoredTriplet {
            row: i64::from(n),
            trace_id: [1; 16],
            span_id: [0, 0, 0, 0, 0, 0, 0, n],
            triplet_id: format!("t{n}"),
            ts_us,
            start_ns: ts_us * 1000,
            role: Some(role.into()),
            reward,
            ..StoredTriplet::default()
        }
    }

    fn hitl(seq: &str, value: f64) -> RewardEvent {
        RewardEvent {
            reward_id: format!("r-{seq}"),
            target: RewardTarget::Sequence { sequence_id: seq.into(), strategy: Strategy::Uniform },
            value: Some(value),
            source: "hitl".into(),
            reason: None,
            created_at: 0,
            idempotency_key: None,
            metadata: None,
            pending: false,
            seq_no: 1,
            valuation: Valuation::Fixed,
        }
    }

    fn sample() -> Vec<SampledSequence> {
        vec![
            SampledSequence { sequence_id: "a".into(), rows: vec![row(1, "Code", Some(0.2), 10), row(2, "Test", None, 20)], events: vec![hitl("a", 1.0)] },
            SampledSequence { sequence_id: "b".into(), rows: vec![row(3, "Code", Some(0.5), 30)], events: vec![] },
            SampledSequence { sequence_id: "c".into(), rows: vec![row(4, "Test", None, 40)], events: vec![] },
        ]
    }

    #[test]
    fn histogram_bins_and_edges() {
        let mut h = Histogram::new(10);
        for v in [Some(0.0), Some(0.05), Some(0.1), Some(0.999), Some(1.0), None, Some(f64::NAN)] {
            h.add(v);
        }
        assert_eq!(h.bins[0], 2);
        assert_eq!(h.bins[1], 1);
        assert_eq!(h.bins[9], 2);
        assert_eq!(h.unrewarded, 2);
        assert_eq!(h.rewarded(), 5);
        assert_eq!(Histogram::new(0).bins.len(), 1);
        assert_eq!(Histogram::new(10_000).bins.len(), MAX_BINS);
    }

    #[test]
    fn same_policy_changes_nothing() {
        let p = Policy::default();
        let w = what_if(&sample(), &p, &p, 0, 10, 5, |_, _| true);
        assert_eq!((w.sequences, w.triplets, w.changed_triplets), (3, 4, 0));
        assert_eq!(w.current, w.proposed);
        assert!(w.most_changed.is_empty());
    }

    #[test]
    fn a_heavier_hitl_moves_only_reviewed_sequences() {
        let current = Policy::default();
        let proposed = Policy::from_toml("[sources.hitl]\nweight = 3.0\n").expect("policy");
        let w = what_if(&sample(), &current, &proposed, 0, 10, 5, |_, _| true);
        // a: t1 local 0.2 + hitl 1.0: mean 0.6 -> (0.2 + 3) / 4 = 0.8; t2 hitl only: 1.0 both.
        assert_eq!(w.changed_triplets, 1);
        assert_eq!(w.most_changed.len(), 1);
        let c = &w.most_changed[0];
        assert_eq!(c.sequence_id, "a");
        assert!((c.change - 0.1).abs() < 1e-9, "{c:?}");
        assert!((c.current_mean.unwrap_or_default() - 0.8).abs() < 1e-9);
        assert!((c.proposed_mean.unwrap_or_default() - 0.9).abs() < 1e-9);
        // A zero weight makes rewards vanish: a change of 1 each.
        let zero = Policy::from_toml("[sources.local]\nweight = 0.0\n").expect("policy");
        let w = what_if(&sample(), &current, &zero, 0, 10, 1, |_, _| true);
        assert_eq!(w.most_changed.len(), 1, "top is bounded");
        assert_eq!(w.most_changed[0].sequence_id, "b");
        assert_eq!(w.most_changed[0].change, 1.0);
        assert_eq!(w.proposed.unrewarded, w.current.unrewarded + 1);
        // The filter decides which triplets count.
        let w = what_if(&sample(), &current, &proposed, 0, 10, 5, |t, _| t.role.as_deref() == Some("Test"));
        assert_eq!((w.triplets, w.changed_triplets), (2, 0));
    }

    #[test]
    fn overview_roles_over_time() {
        let o = overview(&sample(), &Policy::default(), 0, 4, 2);
        assert_eq!(o.sequences, 3);
        assert_eq!(o.triplets, 4);
        assert_eq!(o.histogram.rewarded(), 3);
        assert_eq!(o.histogram.unrewarded, 1);
        assert_eq!(o.bucket_starts.len(), 2);
        assert_eq!(o.roles[0].role, "Code");
        assert_eq!(o.roles[0].triplets, 2);
        // Code: 0.6 at ts 10 (bucket 0), 0.5 at ts 30 (bucket 1).
        assert_eq!(o.roles[0].means.len(), 2);
        assert!((o.roles[0].means[0].unwrap_or_default() - 0.6).abs() < 1e-9);
        assert!((o.roles[0].means[1].unwrap_or_default() - 0.5).abs() < 1e-9);
        let empty = overview(&[], &Policy::default(), 0, 10, 12);
        assert_eq!(empty.histogram.rewarded(), 0);
        assert!(empty.roles.is_empty());
    }
}
