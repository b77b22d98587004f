//! A sequence evaluated from what a store holds: its triplet rows and the ledger events that may
//! reach it. Every rule of the read side lives here, so every store backend gives the same
//! answers: the order within a sequence, completeness, when the fallback is due and when it stops
//! counting, effective rewards, which events reach which triplet, and the per-sequence counts that
//! let a store answer "rewarded" and the statistics without evaluating every sequence.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::Policy;
use crate::export::TripletView;
use crate::ids::to_hex;
use crate::reward::{Effective, Immediate, RewardEvent, RewardInput, RewardTarget, Strategy, effective_rewards, immediate_order, reaches};
use crate::time::Micros;

/// The source of the fallback reward (section 5).
pub const FALLBACK_SOURCE: &str = "fallback";

/// One triplet as a store keeps it.
#[derive(Debug, Clone, Default)]
pub struct StoredTriplet {
    /// The store's key of the row (opaque to the core; used for cursors).
    pub row: i64,
    /// Trace id.
    pub trace_id: [u8; 16],
    /// Span id.
    pub span_id: [u8; 8],
    /// Triplet id (explicit `rl.triplet_id`, or the default `{trace_id}{span_id}`).
    pub triplet_id: String,
    /// `rl.sequence_index`, when given.
    pub seq_index: Option<i64>,
    /// `rl.timestamp_utc` or the span start (microseconds).
    pub ts_us: Micros,
    /// Span start (nanoseconds).
    pub start_ns: i64,
    /// State, JSON object text (may be empty when only rewards are computed).
    pub state: String,
    /// Action, JSON object text (may be empty when only rewards are computed).
    pub action: String,
    /// `state.agent_role`.
    pub role: Option<String>,
    /// `state.task_id`.
    pub task_id: Option<String>,
    /// `state.phase`.
    pub phase: Option<String>,
    /// `rl.reward`.
    pub reward: Option<f64>,
    /// `rl.reward_source`.
    pub reward_source: Option<String>,
    /// `rl.reward.<component>` values.
    pub components: BTreeMap<String, f64>,
    /// The newest ledger event (its `seq_no`) when the triplet arrived, 0 for none: places its
    /// immediate reward in ledger order.
    pub ledger_after: i64,
    /// `rl.propensity`.
    pub propensity: Option<f64>,
    /// `rl.sampling.probability`.
    pub sampling_probability: Option<f64>,
    /// `rl.sequence_end`.
    pub seq_end: bool,
}

impl StoredTriplet {
    /// Whether the span carried an immediate reward (a value or components).
    pub fn has_immediate(&self) -> bool {
        self.reward.is_some() || !self.components.is_empty()
    }

    fn input(&self) -> RewardInput<'_> {
        RewardInput {
            triplet_id: &self.triplet_id,
            role: self.role.as_deref(),
            task_id: self.task_id.as_deref(),
            phase: self.phase.as_deref(),
            immediate: self.has_immediate().then(|| Immediate {
                value: self.reward,
                components: &self.components,
                source: self.reward_source.as_deref().unwrap_or("local"),
                at: self.ts_us,
                order: immediate_order(self.ledger_after),
            }),
        }
    }
}

/// Put triplets in sequence order: by `rl.sequence_index` when every triplet has one, otherwise
/// by start time; ties by start time, then span id.
pub fn sort_in_sequence_order(rows: &mut [StoredTriplet]) {
    if rows.iter().all(|r| r.seq_index.is_some()) {
        rows.sort_by_key(|r| (r.seq_index, r.start_ns, r.span_id));
    } else {
        rows.sort_by_key(|r| (r.start_ns, r.span_id));
    }
}

/// Whether the policy's `sequence_idle` has passed since `last_us` at `now`.
pub fn is_idle(last_us: Option<Micros>, policy: &Policy, now: Micros) -> bool {
    match (policy.sequence_idle, last_us) {
        (Some(secs), Some(last)) => now.saturating_sub(last) >= secs_to_micros(secs),
        _ => false,
    }
}

/// A sequence is complete when a triplet carried `rl.sequence_end`, when a terminal-type reward
/// with a value targets the sequence, or when the policy's idle time has passed.
pub fn is_complete(ended: bool, terminal: bool, last_us: Option<Micros>, policy: &Policy, now: Micros) -> bool {
    ended || terminal || is_idle(last_us, policy, now)
}

/// The latest last-triplet time at which a sequence with no terminal-type reward is due for the
/// fallback at `now` (`None` when the policy has no fallback).
pub fn fallback_due_before(policy: &Policy, now: Micros) -> Option<(f64, Micros)> {
    let value = policy.default_reward?;
    let wait = policy.reward_wait.unwrap_or(0);
    Some((value, now.saturating_sub(secs_to_micros(wait))))
}

fn secs_to_micros(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
}

/// The events that count for effective rewards: the fallback stands in for a terminal-type reward
/// only until one arrives; it stays in the ledger but no longer counts.
pub fn counted_events(events: &[RewardEvent]) -> Cow<'_, [RewardEvent]> {
    if events.iter().any(RewardEvent::is_terminal) && events.iter().any(|e| e.source == FALLBACK_SOURCE) {
        Cow::Owned(events.iter().filter(|e| e.source != FALLBACK_SOURCE).cloned().collect())
    } else {
        Cow::Borrowed(events)
    }
}

/// A sequence evaluated at one moment under one policy.
#[derive(Debug, Clone)]
pub struct SequenceEval {
    /// The triplets in sequence order with their effective rewards.
    pub triplets: Vec<TripletView>,
    /// The store's row key of each triplet, in the same order.
    pub rows: Vec<i64>,
    /// Whether the sequence is complete.
    pub complete: bool,
    /// Whether a terminal-type reward targets the sequence.
    pub terminal: bool,
    /// Earliest triplet timestamp.
    pub first_at: Option<Micros>,
    /// Latest triplet timestamp.
    pub last_at: Option<Micros>,
}

impl SequenceEval {
    /// How many triplets have an effective reward.
    pub fn rewarded_count(&self) -> usize {
        self.triplets.iter().filter(|t| t.effective.reward.is_some()).count()
    }

    /// Whether some triplet has an effective reward.
    pub fn rewarded(&self) -> bool {
        self.triplets.iter().any(|t| t.effective.reward.is_some())
    }

    /// Mean effective reward over the triplets that have one.
    pub fn reward_mean(&self) -> Option<f64> {
        let (n, sum) = self.triplets.iter().filter_map(|t| t.effective.reward).fold((0usize, 0.0), |(n, s), r| (n + 1, s + r));
        (n > 0).then(|| sum / n as f64)
    }

    /// The episode reward under each way of forming it.
    pub fn episode_rewards(&self) -> EpisodeRewards {
        EpisodeRewards {
            last: self.episode_reward(EpisodeReward::Last),
            mean: self.episode_reward(EpisodeReward::Mean),
            min: self.episode_reward(EpisodeReward::Min),
        }
    }

    /// The episode reward (Agent Lightning's one number per rollout): by `how` over the
    /// triplets' effective rewards. `Last` is the last triplet's, `None` when it has none yet;
    /// `Mean` and `Min` go over the triplets that have one, `None` when none has.
    pub fn episode_reward(&self, how: EpisodeReward) -> Option<f64> {
        match how {
            EpisodeReward::Last => self.triplets.last().and_then(|t| t.effective.reward),
            EpisodeReward::Mean => self.reward_mean(),
            EpisodeReward::Min => self.triplets.iter().filter_map(|t| t.effective.reward).reduce(f64::min),
        }
    }

    /// The agent roles of the triplets, in order of first appearance.
    pub fn roles(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self.triplets.iter().filter_map(|t| t.role.as_deref()) {
            if !out.iter().any(|o| o == r) {
                out.push(r.to_string());
            }
        }
        out
    }
}

/// A sequence's episode reward formed each way ([`SequenceEval::episode_rewards`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EpisodeRewards {
    /// The last triplet's effective reward.
    pub last: Option<f64>,
    /// The mean over the triplets that have one.
    pub mean: Option<f64>,
    /// The smallest.
    pub min: Option<f64>,
}

/// How a sequence's triplet rewards make one episode reward ([`SequenceEval::episode_reward`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodeReward {
    /// The effective reward of the last triplet in sequence order.
    #[default]
    Last,
    /// The mean over the triplets that have one.
    Mean,
    /// The smallest.
    Min,
}

impl EpisodeReward {
    /// Its name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            EpisodeReward::Last => "last",
            EpisodeReward::Mean => "mean",
            EpisodeReward::Min => "min",
        }
    }
}

/// A sequence put in order with what holds for all of it (completeness, terminal reward, times),
/// whose triplets can then be evaluated a few at a time ([`Ordered::views`]): a page of a long
/// sequence costs the rewards of its own triplets only.
#[derive(Debug, Clone)]
pub struct Ordered<'e> {
    sequence_id: String,
    /// The rows in sequence order.
    pub rows: Vec<StoredTriplet>,
    events: Cow<'e, [RewardEvent]>,
    /// Whether the sequence is complete.
    pub complete: bool,
    /// Whether a terminal-type reward targets the sequence.
    pub terminal: bool,
}

impl Ordered<'_> {
    /// The triplets at `positions` with their effective rewards (their state and action as the
    /// rows hold them).
    pub fn views(&self, positions: &[usize], policy: &Policy) -> Vec<TripletView> {
        let inputs: Vec<RewardInput<'_>> = self.rows.iter().map(StoredTriplet::input).collect();
        let effective = crate::reward::effective_rewards_at(&self.sequence_id, &inputs, &self.events, policy, positions);
        positions
            .iter()
            .zip(effective)
            .filter_map(|(&i, eff)| self.rows.get(i).map(|r| view(&self.sequence_id, i, r.clone(), eff)))
            .collect()
    }

    /// How the effective reward of the triplet at `position` was formed, source by source.
    pub fn explain(&self, position: usize, policy: &Policy) -> Vec<crate::reward::SourceExplanation> {
        let inputs: Vec<RewardInput<'_>> = self.rows.iter().map(StoredTriplet::input).collect();
        crate::reward::explain_at(&self.sequence_id, &inputs, &self.events, policy, position)
    }
}

/// Put a sequence in order and decide what holds for all of it; see [`Ordered`].
pub fn order<'e>(sequence_id: &str, mut rows: Vec<StoredTriplet>, events: &'e [RewardEvent], policy: &Policy, now: Micros) -> Ordered<'e> {
    sort_in_sequence_order(&mut rows);
    let terminal = events.iter().any(|e| e.is_terminal() && targets_sequence(e, sequence_id));
    let ended = rows.iter().any(|r| r.seq_end);
    let last_at = rows.iter().map(|r| r.ts_us).max();
    let complete = is_complete(ended, terminal, last_at, policy, now);
    Ordered { sequence_id: sequence_id.to_string(), rows, events: counted_events(events), complete, terminal }
}

/// Evaluate a sequence from its rows (any order) and the ledger events that may reach it (events
/// that do not are ignored), under `policy`, at `now`.
pub fn evaluate(sequence_id: &str, mut rows: Vec<StoredTriplet>, events: &[RewardEvent], policy: &Policy, now: Micros) -> SequenceEval {
    sort_in_sequence_order(&mut rows);
    let terminal = events.iter().any(|e| e.is_terminal() && targets_sequence(e, sequence_id));
    let counted = counted_events(events);
    let effective = {
        let inputs: Vec<RewardInput<'_>> = rows.iter().map(StoredTriplet::input).collect();
        effective_rewards(sequence_id, &inputs, &counted, policy)
    };
    let ended = rows.iter().any(|r| r.seq_end);
    let first_at = rows.iter().map(|r| r.ts_us).min();
    let last_at = rows.iter().map(|r| r.ts_us).max();
    let complete = is_complete(ended, terminal, last_at, policy, now);
    let mut row_keys = Vec::with_capacity(rows.len());
    let triplets = rows
        .into_iter()
        .zip(effective)
        .enumerate()
        .map(|(rank, (r, effective))| {
            row_keys.push(r.row);
            view(sequence_id, rank, r, effective)
        })
        .collect();
    SequenceEval { triplets, rows: row_keys, complete, terminal, first_at, last_at }
}

fn targets_sequence(e: &RewardEvent, sequence_id: &str) -> bool {
    matches!(&e.target, RewardTarget::Sequence { sequence_id: s, .. } if s == sequence_id)
}

fn view(sequence_id: &str, rank: usize, r: StoredTriplet, effective: Effective) -> TripletView {
    TripletView {
        sequence_index: r.seq_index.unwrap_or(rank as i64),
        sequence_id: sequence_id.to_string(),
        timestamp: r.ts_us,
        trace_id: to_hex(&r.trace_id),
        span_id: to_hex(&r.span_id),
        triplet_id: r.triplet_id,
        state: r.state,
        action: r.action,
        effective,
        propensity: r.propensity,
        sampling_probability: r.sampling_probability,
        role: r.role,
        sequence_end: r.seq_end,
    }
}

/// For each event, whether it reaches the triplet at `position` of the sequence (rows in sequence
/// order, as [`evaluate`] leaves them): the ledger of one triplet.
pub fn events_reaching<'e>(sequence_id: &str, rows: &[StoredTriplet], events: &'e [RewardEvent], position: usize) -> Vec<&'e RewardEvent> {
    let inputs: Vec<RewardInput<'_>> = rows.iter().map(StoredTriplet::input).collect();
    if position >= inputs.len() {
        return Vec::new();
    }
    events.iter().filter(|e| reaches(e, 1.0, sequence_id, &inputs, position).is_some()).collect()
}

/// What a store counts per sequence as rows and events arrive, so that how many of its triplets
/// are rewarded can often be told without reading the sequence (see [`rewarded_from_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SequenceCounts {
    /// Triplets.
    pub triplets: i64,
    /// Triplets with an immediate reward.
    pub immediate: i64,
    /// Ledger events reaching the sequence through its id or its triplets (any target, with or
    /// without a value).
    pub events: i64,
    /// Of those, events with a value that reach every triplet ([`covers_every_triplet`]),
    /// the fallback excepted.
    pub covering: i64,
    /// Terminal-type rewards with a value for the sequence.
    pub terminal: i64,
    /// Whether the fallback was appended.
    pub fallback: bool,
    /// Whether defects by task id may reach the sequence.
    pub task_events: bool,
}

/// Whether an event with (`has_value`) or without a value, for the whole sequence with
/// `strategy`, reaches every triplet of the sequence whatever it holds.
pub fn covers_every_triplet(strategy: &Strategy, has_value: bool) -> bool {
    has_value && matches!(strategy, Strategy::Uniform | Strategy::Discounted { .. })
}

/// How many triplets of a sequence have an effective reward under a policy that gives no source
/// and no component a zero weight, when the counts tell it; `None` when the sequence must be
/// evaluated ([`evaluate`]) to know.
pub fn rewarded_from_counts(c: &SequenceCounts) -> Option<i64> {
    if c.triplets == 0 {
        return Some(0);
    }
    if c.covering > 0 || (c.fallback && c.terminal == 0) {
        return Some(c.triplets);
    }
    if c.events == 0 && !c.task_events {
        return Some(c.immediate);
    }
    None
}

/// Whether counts kept under default weights ([`rewarded_from_counts`], stored rewarded counts)
/// give exact answers under `policy`; when not, a store evaluates sequences under it.
pub fn counts_are_exact_under(policy: &Policy) -> bool {
    !policy.has_zero_weights()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::Valuation;

    fn row(n: u8, seq_index: Option<i64>, start_ns: i64, role: &str) -> StoredTriplet {
        StoredTriplet {
            row: i64::from(n),
            trace_id: [1; 16],
            span_id: [0, 0, 0, 0, 0, 0, 0, n],
            triplet_id: format!("t{n}"),
            seq_index,
            ts_us: start_ns / 1000,
            start_ns,
            state: "{}".into(),
            action: "{}".into(),
            role: Some(role.into()),
            ..StoredTriplet::default()
        }
    }

    fn event(seq_no: i64, target: RewardTarget, value: Option<f64>, source: &str) -> RewardEvent {
        RewardEvent {
            reward_id: format!("r{seq_no}"),
            target,
            value,
            source: source.into(),
            reason: None,
            created_at: seq_no,
            idempotency_key: None,
            metadata: None,
            pending: false,
            seq_no,
            valuation: Valuation::Fixed,
        }
    }

    fn seq_target(strategy: Strategy) -> RewardTarget {
        RewardTarget::Sequence { sequence_id: "s".into(), strategy }
    }

    #[test]
    fn the_episode_reward_is_the_last_the_mean_or_the_least() {
        let with = |n: u8, r: Option<f64>| StoredTriplet { reward: r, ..row(n, Some(i64::from(n)), i64::from(n) * 10, "A") };
        let e = evaluate("s", vec![with(1, Some(0.2)), with(2, Some(0.8)), with(3, Some(0.5))], &[], &Policy::default(), 0);
        assert_eq!(e.episode_reward(EpisodeReward::Last), Some(0.5));
        assert!((e.episode_reward(EpisodeReward::Mean).unwrap_or(0.0) - 0.5).abs() < 1e-12);
        assert_eq!(e.episode_reward(EpisodeReward::Min), Some(0.2));
        assert_eq!(e.episode_rewards(), EpisodeRewards { last: Some(0.5), mean: e.episode_reward(EpisodeReward::Mean), min: Some(0.2) });
        // The last triplet without a reward: no `last` yet, while mean and min use the others.
        let e = evaluate("s", vec![with(1, Some(0.2)), with(2, Some(0.8)), with(3, None)], &[], &Policy::default(), 0);
        assert_eq!(e.episode_reward(EpisodeReward::Last), None);
        assert_eq!(e.episode_reward(EpisodeReward::Min), Some(0.2));
        let e = evaluate("s", vec![with(1, None)], &[], &Policy::default(), 0);
        assert_eq!((e.episode_reward(EpisodeReward::Mean), e.episode_reward(EpisodeReward::Min)), (None, None));
        // A sequence reward reaches the last triplet too.
        let events = [event(1, seq_target(Strategy::Last), Some(0.9), "tests")];
        let e = evaluate("s", vec![with(1, None), with(2, None)], &events, &Policy::default(), 0);
        assert_eq!(e.episode_reward(EpisodeReward::Last), Some(0.9));
    }

    #[test]
    fn order_by_index_only_when_every_triplet_has_one() {
        let rows = vec![row(1, Some(2), 10, "A"), row(2, Some(0), 30, "B"), row(3, Some(1), 20, "C")];
        let e = evaluate("s", rows, &[], &Policy::default(), 0);
        assert_eq!(e.triplets.iter().map(|t| t.triplet_id.as_str()).collect::<Vec<_>>(), ["t2", "t3", "t1"]);
        assert_eq!(e.rows, vec![2, 3, 1]);
        let rows = vec![row(1, Some(2), 10, "A"), row(2, None, 30, "B"), row(3, Some(1), 20, "C")];
        let e = evaluate("s", rows, &[], &Policy::default(), 0);
        assert_eq!(e.triplets.iter().map(|t| t.triplet_id.as_str()).collect::<Vec<_>>(), ["t1", "t3", "t2"]);
        // The index reported is the explicit one when given, else the rank.
        assert_eq!(e.triplets.iter().map(|t| t.sequence_index).collect::<Vec<_>>(), [2, 1, 2]);
        assert_eq!(e.roles(), ["A", "C", "B"]);
    }

    #[test]
    fn completeness() {
        let p = Policy::from_toml("sequence_idle = \"1h\"\n").expect("policy");
        let rows = || vec![row(1, None, 1_000_000_000, "A")];
        assert!(!evaluate("s", rows(), &[], &p, 1_000_000).complete);
        assert!(evaluate("s", rows(), &[], &p, 1_000_000 + 3_600_000_000).complete);
        let mut ended = rows();
        ended[0].seq_end = true;
        assert!(evaluate("s", ended, &[], &p, 0).complete);
        // A terminal-type reward for the sequence completes it; for one triplet it does not.
        let on_seq = event(1, seq_target(Strategy::Uniform), Some(1.0), "tests");
        assert!(evaluate("s", rows(), &[on_seq], &p, 0).complete);
        let on_triplet = event(1, RewardTarget::Triplet { triplet_id: "t1".into() }, Some(1.0), "tests");
        assert!(!evaluate("s", rows(), &[on_triplet], &p, 0).complete);
        let deferred = event(1, seq_target(Strategy::Uniform), None, "hitl");
        assert!(!evaluate("s", rows(), &[deferred], &p, 0).complete);
    }

    #[test]
    fn fallback_counts_until_a_terminal_reward_arrives() {
        let rows = || vec![row(1, None, 1, "A"), row(2, None, 2, "B")];
        let fallback = event(1, seq_target(Strategy::Uniform), Some(0.3), FALLBACK_SOURCE);
        let e = evaluate("s", rows(), std::slice::from_ref(&fallback), &Policy::default(), 0);
        assert_eq!(e.triplets[0].effective.reward, Some(0.3));
        let last = event(2, seq_target(Strategy::Last), Some(1.0), "terminal");
        let e = evaluate("s", rows(), &[fallback, last], &Policy::default(), 0);
        assert_eq!(e.triplets[0].effective.reward, None);
        assert_eq!(e.triplets[1].effective.reward, Some(1.0));
        assert!(e.complete);
        let p = Policy::from_toml("reward_wait = \"1h\"\ndefault_reward = 0.3\n").expect("policy");
        assert_eq!(fallback_due_before(&p, 3_600_000_001), Some((0.3, 1)));
        assert_eq!(fallback_due_before(&Policy::default(), 5), None);
    }

    /// Evaluating a few positions gives what evaluating all gives there.
    #[test]
    fn a_page_evaluates_like_the_whole() {
        let rows: Vec<StoredTriplet> = (0..9u8).map(|n| row(n, None, i64::from(n), if n % 3 == 0 { "Code" } else { "Test" })).collect();
        let ev = vec![
            event(1, seq_target(Strategy::Discounted { gamma: 0.5 }), Some(1.0), "tests"),
            event(2, seq_target(Strategy::Role { role: "Code".into() }), Some(0.2), "hitl"),
            event(3, RewardTarget::Triplet { triplet_id: "t4".into() }, Some(0.9), "judge"),
            event(4, seq_target(Strategy::Uniform), Some(0.3), FALLBACK_SOURCE),
        ];
        let all = evaluate("s", rows.clone(), &ev, &Policy::default(), 0);
        let o = order("s", rows, &ev, &Policy::default(), 0);
        assert_eq!(o.complete, all.complete);
        let page = o.views(&[3, 4, 8], &Policy::default());
        for (v, i) in page.iter().zip([3usize, 4, 8]) {
            assert_eq!(v.triplet_id, all.triplets[i].triplet_id);
            assert_eq!(v.sequence_index, all.triplets[i].sequence_index);
            assert_eq!(v.effective, all.triplets[i].effective, "position {i}");
        }
        assert!(o.views(&[99], &Policy::default()).is_empty());
    }

    #[test]
    fn summary_values_and_reach() {
        let mut rows = vec![row(1, Some(0), 1, "Code"), row(2, Some(1), 2, "Test")];
        rows[0].reward = Some(0.5);
        let ev = vec![event(1, seq_target(Strategy::Role { role: "Test".into() }), Some(1.0), "hitl")];
        let e = evaluate("s", rows.clone(), &ev, &Policy::default(), 0);
        assert_eq!(e.rewarded_count(), 2);
        assert_eq!(e.reward_mean(), Some(0.75));
        assert_eq!(events_reaching("s", &rows, &ev, 0).len(), 0);
        assert_eq!(events_reaching("s", &rows, &ev, 1).len(), 1);
        assert!(events_reaching("s", &rows, &ev, 7).is_empty());
    }

    /// The counts rule agrees with a full evaluation wherever it gives an answer.
    #[test]
    fn counts_agree_with_evaluation() {
        let strategies = [Strategy::Uniform, Strategy::Discounted { gamma: 0.5 }, Strategy::Last, Strategy::Role { role: "B".into() }];
        for immediate in [false, true] {
            for (k, strategy) in strategies.iter().enumerate() {
                for value in [None, Some(0.0), Some(1.0)] {
                    for source in ["hitl", "judge", FALLBACK_SOURCE] {
                        // The fallback is always a uniform reward with a value.
                        if source == FALLBACK_SOURCE && (value.is_none() || *strategy != Strategy::Uniform) {
                            continue;
                        }
                        let mut rows = vec![row(1, None, 1, "A"), row(2, None, 2, "B"), row(3, None, 3, "C")];
                        rows[0].reward = immediate.then_some(0.2);
                        let ev = vec![event(1 + k as i64, seq_target(strategy.clone()), value, source)];
                        let e = evaluate("s", rows, &ev, &Policy::default(), 0);
                        let c = SequenceCounts {
                            triplets: 3,
                            immediate: i64::from(immediate),
                            events: 1,
                            covering: i64::from(source != FALLBACK_SOURCE && covers_every_triplet(strategy, value.is_some())),
                            terminal: i64::from(ev[0].is_terminal()),
                            fallback: source == FALLBACK_SOURCE,
                            task_events: false,
                        };
                        if let Some(n) = rewarded_from_counts(&c) {
                            assert_eq!(n, e.rewarded_count() as i64, "{strategy:?} {value:?} {source} immediate={immediate}");
                        }
                    }
                }
            }
        }
        let none = SequenceCounts { triplets: 4, immediate: 3, ..SequenceCounts::default() };
        assert_eq!(rewarded_from_counts(&none), Some(3));
        let tasks = SequenceCounts { task_events: true, ..none };
        assert_eq!(rewarded_from_counts(&tasks), None);
    }
}
