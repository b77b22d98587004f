//! The reward ledger's semantics: events, targets, strategies, validation, the values of callback
//! events (HITL decisions, test results, defects), and how the effective reward of each triplet of
//! a sequence is computed from the events that reach it.

use std::collections::{BTreeMap, HashMap};

use crate::policy::{Aggregation, Policy};
use crate::time::Micros;

/// Sources whose reward marks a sequence as finished (section 5: terminal-type rewards).
pub const TERMINAL_SOURCES: [&str; 4] = ["terminal", "hitl", "tests", "judge"];

/// Why a reward is not acceptable. Each maps to a 422 at the API.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RewardError {
    /// The value is not a finite number in [0, 1].
    #[error("value must be a finite number in [0, 1], got {0}")]
    Value(String),
    /// The source name is not `[a-z0-9_.-]{1,64}`.
    #[error("source must match [a-z0-9_.-]{{1,64}}, got {0:?}")]
    Source(String),
    /// The strategy is not one of uniform, discounted, last, role.
    #[error("strategy must be one of uniform, discounted, last, role, got {0:?}")]
    Strategy(String),
    /// `gamma` is missing or outside (0, 1].
    #[error("gamma must be a number in (0, 1], got {0}")]
    Gamma(String),
    /// The `role` strategy needs a role.
    #[error("strategy role needs a non-empty role")]
    Role,
}

/// Check that a reward value is finite and in [0, 1].
pub fn validate_value(v: f64) -> Result<f64, RewardError> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(RewardError::Value(v.to_string()))
    }
}

/// Check a source name: lowercase `[a-z0-9_.-]{1,64}`.
pub fn validate_source(s: &str) -> Result<(), RewardError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
    if ok { Ok(()) } else { Err(RewardError::Source(s.to_string())) }
}

/// How a sequence reward reaches the triplets of its sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Every triplet gets the value.
    Uniform,
    /// Triplet i of n gets `value * gamma^(n-1-i)`.
    Discounted {
        /// Discount factor in (0, 1].
        gamma: f64,
    },
    /// Only the last triplet.
    Last,
    /// Only triplets whose `state.agent_role` equals `role`.
    Role {
        /// The agent role.
        role: String,
    },
    /// Only triplets whose `state.agent_role` or `state.phase` equals `phase` (defects).
    Phase {
        /// The phase that injected a defect.
        phase: String,
    },
}

impl Strategy {
    /// Build a strategy from its name and parameters, validating them. `phase` is not one of the
    /// strategies of the reward API; see [`Strategy::parse_stored`].
    pub fn parse(name: &str, gamma: Option<f64>, role: Option<&str>) -> Result<Strategy, RewardError> {
        if name == "phase" {
            return Err(RewardError::Strategy(name.to_string()));
        }
        Strategy::parse_stored(name, gamma, role)
    }

    /// Like [`Strategy::parse`], also accepting `phase` (with the phase in `role`), as stored in
    /// the ledger for defects.
    pub fn parse_stored(name: &str, gamma: Option<f64>, role: Option<&str>) -> Result<Strategy, RewardError> {
        match name {
            "phase" => match role {
                Some(r) if !r.is_empty() => Ok(Strategy::Phase { phase: r.to_string() }),
                _ => Err(RewardError::Role),
            },
            "uniform" => Ok(Strategy::Uniform),
            "last" => Ok(Strategy::Last),
            "discounted" => {
                let g = gamma.ok_or_else(|| RewardError::Gamma("nothing".into()))?;
                if g.is_finite() && g > 0.0 && g <= 1.0 {
                    Ok(Strategy::Discounted { gamma: g })
                } else {
                    Err(RewardError::Gamma(g.to_string()))
                }
            }
            "role" => match role {
                Some(r) if !r.is_empty() => Ok(Strategy::Role { role: r.to_string() }),
                _ => Err(RewardError::Role),
            },
            other => Err(RewardError::Strategy(other.to_string())),
        }
    }

    /// The strategy's name.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Uniform => "uniform",
            Strategy::Discounted { .. } => "discounted",
            Strategy::Last => "last",
            Strategy::Role { .. } => "role",
            Strategy::Phase { .. } => "phase",
        }
    }

    /// `gamma`, for the discounted strategy.
    pub fn gamma(&self) -> Option<f64> {
        match self {
            Strategy::Discounted { gamma } => Some(*gamma),
            _ => None,
        }
    }

    /// `role` of the role strategy, or the phase of the phase strategy (how both are stored).
    pub fn role(&self) -> Option<&str> {
        match self {
            Strategy::Role { role } => Some(role),
            Strategy::Phase { phase } => Some(phase),
            _ => None,
        }
    }
}

/// What a reward event is for.
#[derive(Debug, Clone, PartialEq)]
pub enum RewardTarget {
    /// One triplet.
    Triplet {
        /// The triplet id.
        triplet_id: String,
    },
    /// A sequence, reaching its triplets through a strategy.
    Sequence {
        /// The sequence id.
        sequence_id: String,
        /// How the value reaches the triplets.
        strategy: Strategy,
    },
    /// The triplets of a task that belong to one phase (defects): every triplet whose
    /// `state.task_id` equals `task_id` or whose sequence id equals it or starts with `{task_id}:`,
    /// and whose `state.agent_role` or `state.phase` equals `phase`.
    Task {
        /// The task id.
        task_id: String,
        /// The phase that injected the defect.
        phase: String,
    },
}

/// A HITL decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitlDecision {
    /// Approved as is.
    Approved,
    /// Approved after changes.
    ApprovedWithChanges,
    /// Rejected.
    Rejected,
    /// Deferred: recorded, no reward.
    Deferred,
}

impl HitlDecision {
    /// Parse the wire name.
    pub fn parse(s: &str) -> Option<HitlDecision> {
        match s {
            "approved" => Some(HitlDecision::Approved),
            "approved_with_changes" => Some(HitlDecision::ApprovedWithChanges),
            "rejected" => Some(HitlDecision::Rejected),
            "deferred" => Some(HitlDecision::Deferred),
            _ => None,
        }
    }

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            HitlDecision::Approved => "approved",
            HitlDecision::ApprovedWithChanges => "approved_with_changes",
            HitlDecision::Rejected => "rejected",
            HitlDecision::Deferred => "deferred",
        }
    }
}

/// Severity of a defect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// Parse the wire name (`Low`, `Medium`, `High`, `Critical`).
    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "Low" => Some(Severity::Low),
            "Medium" => Some(Severity::Medium),
            "High" => Some(Severity::High),
            "Critical" => Some(Severity::Critical),
            _ => None,
        }
    }

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
            Severity::Critical => "Critical",
        }
    }
}

/// The PSP defect type taxonomy.
pub const PSP_DEFECT_TYPES: [&str; 10] = [
    "10_Documentation",
    "20_Syntax",
    "30_Build_Package",
    "40_Assignment",
    "50_Interface",
    "60_Checking",
    "70_Data",
    "80_Function",
    "90_System",
    "100_Environment",
];

/// How an event's value is found: fixed when appended, or derived from the policy at read time
/// (so a changed policy gives the same ledger new values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Valuation {
    /// The stored value.
    #[default]
    Fixed,
    /// The policy's value of a HITL decision.
    Hitl(HitlDecision),
    /// `1 - penalty` of a defect's severity under the policy.
    Defect(Severity),
}

impl Valuation {
    /// The stored form (`None` for fixed values).
    pub fn encode(self) -> Option<String> {
        match self {
            Valuation::Fixed => None,
            Valuation::Hitl(d) => Some(format!("hitl:{}", d.name())),
            Valuation::Defect(s) => Some(format!("defect:{}", s.name())),
        }
    }

    /// Read the stored form.
    pub fn decode(s: Option<&str>) -> Option<Valuation> {
        match s {
            None => Some(Valuation::Fixed),
            Some(t) => match t.split_once(':')? {
                ("hitl", d) => HitlDecision::parse(d).map(Valuation::Hitl),
                ("defect", sev) => Severity::parse(sev).map(Valuation::Defect),
                _ => None,
            },
        }
    }

    /// The value under `policy`; `stored` for fixed values.
    pub fn value(self, stored: Option<f64>, policy: &Policy) -> Option<f64> {
        match self {
            Valuation::Fixed => stored,
            Valuation::Hitl(HitlDecision::Approved) => Some(policy.hitl.approved),
            Valuation::Hitl(HitlDecision::ApprovedWithChanges) => Some(policy.hitl.approved_with_changes),
            Valuation::Hitl(HitlDecision::Rejected) => Some(policy.hitl.rejected),
            Valuation::Hitl(HitlDecision::Deferred) => None,
            Valuation::Defect(sev) => {
                let p = &policy.defects;
                let penalty = match sev {
                    Severity::Low => p.low,
                    Severity::Medium => p.medium,
                    Severity::High => p.high,
                    Severity::Critical => p.critical,
                };
                Some((1.0 - penalty).clamp(0.0, 1.0))
            }
        }
    }
}

/// One immutable entry of the reward ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardEvent {
    /// Unique id of the event.
    pub reward_id: String,
    /// What it rewards.
    pub target: RewardTarget,
    /// Value in [0, 1]; `None` for an event that records a decision without a reward (HITL deferred).
    pub value: Option<f64>,
    /// Where it came from.
    pub source: String,
    /// Why, in words.
    pub reason: Option<String>,
    /// When it was appended.
    pub created_at: Micros,
    /// Caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// Caller's metadata (a JSON object).
    pub metadata: Option<serde_json::Value>,
    /// Appended before its target was known and not yet joined.
    pub pending: bool,
    /// Ledger order, for ties on `created_at`.
    pub seq_no: i64,
    /// How the value is found (fixed, or from the policy for HITL decisions and defects).
    pub valuation: Valuation,
}

impl RewardEvent {
    /// The event's value under `policy` (`None`: recorded without a reward).
    pub fn value_under(&self, policy: &Policy) -> Option<f64> {
        self.valuation.value(self.value, policy)
    }

    /// Whether this is a terminal-type reward with a value for a whole sequence: it completes
    /// its sequence (a terminal-type reward for one triplet does not).
    pub fn is_terminal(&self) -> bool {
        is_terminal(&self.source, self.value.is_some(), matches!(self.target, RewardTarget::Sequence { .. }))
    }

    /// The event's position in ledger order (see [`ledger_order`]).
    pub fn order(&self) -> i64 {
        ledger_order(self.seq_no)
    }
}

/// Whether an event of `source`, with or without a value, for a sequence or not, is a
/// terminal-type reward that completes its sequence (section 5).
pub fn is_terminal(source: &str, has_value: bool, targets_sequence: bool) -> bool {
    has_value && targets_sequence && TERMINAL_SOURCES.contains(&source)
}

/// The position of ledger event `seq_no` in ledger order. Immediate rewards are placed between
/// events: one that arrived after event `n` and before event `n + 1` sorts at
/// [`immediate_order`]`(n)`, so "latest" never depends on a time a client wrote.
pub fn ledger_order(seq_no: i64) -> i64 {
    seq_no.saturating_mul(2)
}

/// The ledger-order position of an immediate reward whose triplet arrived when `last_event` was
/// the newest ledger event (0 when there was none).
pub fn immediate_order(last_event: i64) -> i64 {
    last_event.saturating_mul(2).saturating_add(1)
}

/// A triplet as the reward computation needs it, given in sequence order.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardInput<'a> {
    /// Triplet id.
    pub triplet_id: &'a str,
    /// `state.agent_role`.
    pub role: Option<&'a str>,
    /// `state.task_id`.
    pub task_id: Option<&'a str>,
    /// `state.phase`.
    pub phase: Option<&'a str>,
    /// The immediate reward carried by the span, if any.
    pub immediate: Option<Immediate<'a>>,
}

/// The immediate reward of a span (`rl.reward` or its components).
#[derive(Debug, Clone, PartialEq)]
pub struct Immediate<'a> {
    /// `rl.reward`, when given.
    pub value: Option<f64>,
    /// `rl.reward.<component>` values.
    pub components: &'a BTreeMap<String, f64>,
    /// `rl.reward_source` (default `local`).
    pub source: &'a str,
    /// When the triplet was recorded.
    pub at: Micros,
    /// Its position in ledger order ([`immediate_order`] of the newest event when it arrived).
    pub order: i64,
}

impl Immediate<'_> {
    /// The immediate reward: `rl.reward`, else the weighted mean of the components under the policy.
    pub fn resolve(&self, policy: &Policy) -> Option<f64> {
        if let Some(v) = self.value {
            return Some(v);
        }
        policy.combine_components(self.components)
    }
}

/// One source's contribution to a triplet's effective reward.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceValue {
    /// The value used for this source.
    pub value: f64,
    /// Time of the newest event of this source that reaches the triplet.
    pub at: Micros,
    /// Ledger-order position of that event ([`ledger_order`], [`immediate_order`]).
    pub seq_no: i64,
    /// How many events of this source reach the triplet.
    pub events: usize,
    /// How they were combined.
    pub aggregation: Aggregation,
    /// The source's weight in the mean.
    pub weight: f64,
}

/// The effective reward of one triplet, with how it was formed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Effective {
    /// Weighted mean over sources, or `None` when no event reaches the triplet.
    pub reward: Option<f64>,
    /// Each source and the value used for it.
    pub sources: BTreeMap<String, SourceValue>,
    /// The source of the newest event reaching the triplet.
    pub newest_source: Option<String>,
    /// The time of the newest event reaching the triplet.
    pub newest_at: Option<Micros>,
}

/// The value a sequence event gives to triplet `i` of `n` (in order), or `None` if it does not reach it.
pub fn sequence_share(strategy: &Strategy, value: f64, i: usize, n: usize, t: &RewardInput<'_>) -> Option<f64> {
    match strategy {
        Strategy::Uniform => Some(value),
        Strategy::Discounted { gamma } => Some(value * gamma.powi((n - 1 - i) as i32)),
        Strategy::Last => (i + 1 == n).then_some(value),
        Strategy::Role { role } => (t.role == Some(role.as_str())).then_some(value),
        Strategy::Phase { phase } => in_phase(t, phase).then_some(value),
    }
}

fn in_phase(t: &RewardInput<'_>, phase: &str) -> bool {
    t.role == Some(phase) || t.phase == Some(phase)
}

/// Whether a task target reaches triplet `t` of sequence `sequence_id`.
pub fn task_reaches(task_id: &str, phase: &str, sequence_id: &str, t: &RewardInput<'_>) -> bool {
    let in_task = t.task_id == Some(task_id)
        || sequence_id == task_id
        || sequence_id.strip_prefix(task_id).is_some_and(|rest| rest.starts_with(':'));
    in_task && in_phase(t, phase)
}

/// The task ids whose defects may reach a sequence: its id, each part of its id before a `:`
/// (a task id may itself hold colons), and the `state.task_id` of its triplets.
pub fn candidate_tasks<'a>(sequence_id: &'a str, triplets: impl Iterator<Item = Option<&'a str>>) -> Vec<&'a str> {
    let mut out = vec![sequence_id];
    for (i, _) in sequence_id.match_indices(':') {
        out.push(&sequence_id[..i]);
    }
    for t in triplets.flatten() {
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// The value event `e` gives to triplet `i` of the sequence, or `None` if it does not reach it.
pub fn reaches(e: &RewardEvent, value: f64, sequence_id: &str, triplets: &[RewardInput<'_>], i: usize) -> Option<f64> {
    let t = &triplets[i];
    match &e.target {
        RewardTarget::Triplet { triplet_id } => {
            crate::ids::same_triplet_id(t.triplet_id, triplet_id).then_some(value)
        }
        RewardTarget::Sequence { strategy, .. } => sequence_share(strategy, value, i, triplets.len(), t),
        RewardTarget::Task { task_id, phase } => task_reaches(task_id, phase, sequence_id, t).then_some(value),
    }
}

#[derive(Clone)]
struct Acc {
    n: usize,
    sum: f64,
    min: f64,
    max: f64,
    prod: f64,
    /// (ledger order, time, value) of the latest and earliest event.
    latest: (i64, Micros, f64),
    earliest: (i64, Micros, f64),
}

impl Acc {
    fn new(v: f64, at: Micros, order: i64) -> Acc {
        Acc { n: 1, sum: v, min: v, max: v, prod: v, latest: (order, at, v), earliest: (order, at, v) }
    }

    /// Add an event; "latest" and "earliest" are by ledger order alone, never by a client's time.
    fn add(&mut self, v: f64, at: Micros, order: i64) {
        self.n += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.prod *= v;
        if order > self.latest.0 {
            self.latest = (order, at, v);
        }
        if order < self.earliest.0 {
            self.earliest = (order, at, v);
        }
    }

    fn value(&self, agg: Aggregation) -> f64 {
        match agg {
            Aggregation::Latest => self.latest.2,
            Aggregation::Earliest => self.earliest.2,
            Aggregation::Mean => self.sum / self.n as f64,
            Aggregation::Min => self.min,
            Aggregation::Max => self.max,
            Aggregation::Sum => self.sum.clamp(0.0, 1.0),
            Aggregation::Product => self.prod,
        }
    }
}

/// Compute the effective reward of every triplet of one sequence.
///
/// `triplets` are in sequence order; `events` are the ledger events that may reach the sequence or
/// its triplets (others are ignored). Each source's events reaching a triplet are combined by the
/// source's aggregation (latest by default, product for `defect`); the result is the weighted mean
/// over sources with the policy's weights. Events with no value (HITL `deferred`) change nothing.
pub fn effective_rewards(sequence_id: &str, triplets: &[RewardInput<'_>], events: &[RewardEvent], policy: &Policy) -> Vec<Effective> {
    let n = triplets.len();
    let mut per: Vec<BTreeMap<&str, Acc>> = vec![BTreeMap::new(); n];
    for (i, t) in triplets.iter().enumerate() {
        if let Some(imm) = &t.immediate
            && let Some(v) = imm.resolve(policy)
        {
            merge(&mut per[i], imm.source, v, imm.at, imm.order);
        }
    }
    let mut index: Option<HashMap<std::borrow::Cow<'_, str>, usize>> = None;
    for e in events {
        let Some(value) = e.value_under(policy) else { continue };
        match &e.target {
            RewardTarget::Triplet { triplet_id } => {
                let idx = index.get_or_insert_with(|| {
                    triplets.iter().enumerate().map(|(i, t)| (crate::ids::canonical_triplet_id(t.triplet_id), i)).collect()
                });
                if let Some(&i) = idx.get(&crate::ids::canonical_triplet_id(triplet_id)) {
                    merge(&mut per[i], &e.source, value, e.created_at, e.order());
                }
            }
            _ => {
                for (i, acc) in per.iter_mut().enumerate() {
                    if let Some(v) = reaches(e, value, sequence_id, triplets, i) {
                        merge(acc, &e.source, v, e.created_at, e.order());
                    }
                }
            }
        }
    }
    per.into_iter().map(|sources| finish(sources, policy)).collect()
}

/// [`effective_rewards`] of the triplets at `positions` only (a page of a long sequence): the
/// same values, computed for those triplets alone.
pub fn effective_rewards_at(sequence_id: &str, triplets: &[RewardInput<'_>], events: &[RewardEvent], policy: &Policy, positions: &[usize]) -> Vec<Effective> {
    positions
        .iter()
        .map(|&i| {
            let mut acc: BTreeMap<&str, Acc> = BTreeMap::new();
            let Some(t) = triplets.get(i) else { return Effective::default() };
            if let Some(imm) = &t.immediate
                && let Some(v) = imm.resolve(policy)
            {
                merge(&mut acc, imm.source, v, imm.at, imm.order);
            }
            for e in events {
                let Some(value) = e.value_under(policy) else { continue };
                if let Some(v) = reaches(e, value, sequence_id, triplets, i) {
                    merge(&mut acc, &e.source, v, e.created_at, e.order());
                }
            }
            finish(acc, policy)
        })
        .collect()
}

/// One reward that reached a triplet for a source, as [`explain_at`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsideredEvent {
    /// The ledger event's id; `None` for the span's own immediate reward.
    pub reward_id: Option<String>,
    /// Its value as it reaches this triplet (a sequence reward's share under its strategy).
    pub value: f64,
    /// When it was recorded.
    pub at: Micros,
    /// Its position in ledger order.
    pub order: i64,
    /// Whether the source's value comes from it: the one event chosen by `latest`, `earliest`,
    /// `min` or `max`; every event for `mean`, `sum` and `product`.
    pub used: bool,
}

/// How one source's value for a triplet was formed.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceExplanation {
    /// The source.
    pub source: String,
    /// How its events are combined.
    pub aggregation: Aggregation,
    /// Its weight in the mean over sources.
    pub weight: f64,
    /// The value used for it (as in [`Effective::sources`]).
    pub value: f64,
    /// Every event of the source reaching the triplet, in ledger order.
    pub events: Vec<ConsideredEvent>,
}

/// Explain the effective reward of the triplet at position `i`: per source, every event
/// considered, the one used, the aggregation and the weight. The values agree with
/// [`effective_rewards`] (events without a value under the policy are not considered).
pub fn explain_at(sequence_id: &str, triplets: &[RewardInput<'_>], events: &[RewardEvent], policy: &Policy, i: usize) -> Vec<SourceExplanation> {
    let Some(t) = triplets.get(i) else { return Vec::new() };
    let mut per: BTreeMap<&str, Vec<ConsideredEvent>> = BTreeMap::new();
    if let Some(imm) = &t.immediate
        && let Some(v) = imm.resolve(policy)
    {
        per.entry(imm.source).or_default().push(ConsideredEvent { reward_id: None, value: v, at: imm.at, order: imm.order, used: false });
    }
    for e in events {
        let Some(value) = e.value_under(policy) else { continue };
        if let Some(v) = reaches(e, value, sequence_id, triplets, i) {
            per.entry(&e.source).or_default().push(ConsideredEvent { reward_id: Some(e.reward_id.clone()), value: v, at: e.created_at, order: e.order(), used: false });
        }
    }
    per.into_iter()
        .map(|(source, mut considered)| {
            considered.sort_by_key(|c| c.order);
            let aggregation = policy.aggregation(source);
            let mut acc: Option<Acc> = None;
            for c in &considered {
                match &mut acc {
                    None => acc = Some(Acc::new(c.value, c.at, c.order)),
                    Some(a) => a.add(c.value, c.at, c.order),
                }
            }
            let value = acc.as_ref().map(|a| a.value(aggregation)).unwrap_or_default();
            let chosen = match aggregation {
                Aggregation::Latest => considered.iter().rposition(|_| true),
                Aggregation::Earliest => (!considered.is_empty()).then_some(0),
                Aggregation::Min | Aggregation::Max => considered.iter().position(|c| c.value == value),
                Aggregation::Mean | Aggregation::Sum | Aggregation::Product => None,
            };
            for (k, c) in considered.iter_mut().enumerate() {
                c.used = chosen.is_none_or(|j| j == k);
            }
            SourceExplanation { source: source.to_string(), aggregation, weight: policy.source_weight(source), value, events: considered }
        })
        .collect()
}

fn merge<'a>(map: &mut BTreeMap<&'a str, Acc>, source: &'a str, value: f64, at: Micros, order: i64) {
    match map.get_mut(source) {
        None => {
            map.insert(source, Acc::new(value, at, order));
        }
        Some(acc) => acc.add(value, at, order),
    }
}

fn finish(sources: BTreeMap<&str, Acc>, policy: &Policy) -> Effective {
    if sources.is_empty() {
        return Effective::default();
    }
    let mut num = 0.0;
    let mut den = 0.0;
    let mut out = BTreeMap::new();
    // (source, order, time) of the newest event reaching the triplet, by ledger order.
    let mut newest: Option<(&str, i64, Micros)> = None;
    for (name, acc) in &sources {
        let agg = policy.aggregation(name);
        let weight = policy.source_weight(name);
        let value = acc.value(agg);
        num += weight * value;
        den += weight;
        let (seq_no, at, _) = acc.latest;
        if newest.is_none_or(|(_, o, _)| seq_no > o) {
            newest = Some((name, seq_no, at));
        }
        out.insert(name.to_string(), SourceValue { value, at, seq_no, events: acc.n, aggregation: agg, weight });
    }
    let reward = if den > 0.0 { Some((num / den).clamp(0.0, 1.0)) } else { None };
    Effective { reward, sources: out, newest_source: newest.map(|(n, _, _)| n.to_string()), newest_at: newest.map(|(_, _, a)| a) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq_no: i64, target: RewardTarget, value: Option<f64>, source: &str, at: Micros) -> RewardEvent {
        RewardEvent {
            reward_id: format!("r{seq_no}"),
            target,
            value,
            source: source.into(),
            reason: None,
            created_at: at,
            idempotency_key: None,
            metadata: None,
            pending: false,
            seq_no,
            valuation: Valuation::Fixed,
        }
    }

    fn seq(strategy: Strategy) -> RewardTarget {
        RewardTarget::Sequence { sequence_id: "s".into(), strategy }
    }

    fn inputs<'a>(ids: &'a [&'a str], roles: &'a [Option<&'a str>]) -> Vec<RewardInput<'a>> {
        ids.iter()
            .zip(roles)
            .map(|(id, role)| RewardInput { triplet_id: id, role: *role, task_id: None, phase: None, immediate: None })
            .collect()
    }

    #[test]
    fn validation_bounds() {
        assert!(validate_value(0.0).is_ok());
        assert!(validate_value(1.0).is_ok());
        assert!(validate_value(1.5).is_err());
        assert!(validate_value(-0.1).is_err());
        assert!(validate_value(f64::NAN).is_err());
        assert!(validate_value(f64::INFINITY).is_err());
        assert!(validate_source("hitl").is_ok());
        assert!(validate_source("a.b-c_1").is_ok());
        assert!(validate_source("HITL").is_err());
        assert!(validate_source("").is_err());
        assert!(validate_source(&"a".repeat(65)).is_err());
        assert!(validate_source(&"a".repeat(64)).is_ok());
        assert!(Strategy::parse("discounted", Some(0.0), None).is_err());
        assert!(Strategy::parse("discounted", Some(1.0), None).is_ok());
        assert!(Strategy::parse("discounted", None, None).is_err());
        assert!(Strategy::parse("role", None, None).is_err());
        assert!(Strategy::parse("best", None, None).is_err());
    }

    #[test]
    fn strategies_reach_the_right_triplets() {
        let ids = ["a", "b", "c"];
        let roles = [Some("Code"), Some("Test"), Some("Code")];
        let t = inputs(&ids, &roles);
        let p = Policy::default();
        let uniform = effective_rewards("s", &t, &[ev(1, seq(Strategy::Uniform), Some(0.5), "hitl", 1)], &p);
        assert!(uniform.iter().all(|e| e.reward == Some(0.5)));
        let disc = effective_rewards("s", &t, &[ev(1, seq(Strategy::Discounted { gamma: 0.5 }), Some(1.0), "tests", 1)], &p);
        assert_eq!(disc.iter().map(|e| e.reward).collect::<Vec<_>>(), vec![Some(0.25), Some(0.5), Some(1.0)]);
        let last = effective_rewards("s", &t, &[ev(1, seq(Strategy::Last), Some(1.0), "terminal", 1)], &p);
        assert_eq!(last.iter().map(|e| e.reward).collect::<Vec<_>>(), vec![None, None, Some(1.0)]);
        let role = effective_rewards("s", &t, &[ev(1, seq(Strategy::Role { role: "Code".into() }), Some(0.9), "hitl", 1)], &p);
        assert_eq!(role.iter().map(|e| e.reward).collect::<Vec<_>>(), vec![Some(0.9), None, Some(0.9)]);
    }

    #[test]
    fn latest_per_source_then_weighted_mean() {
        let ids = ["a"];
        let roles = [None];
        let t = inputs(&ids, &roles);
        let trip = || RewardTarget::Triplet { triplet_id: "a".into() };
        let events = vec![
            ev(1, trip(), Some(0.0), "hitl", 10),
            ev(2, trip(), Some(1.0), "hitl", 20),
            ev(3, trip(), Some(0.5), "tests", 15),
            ev(4, trip(), None, "hitl", 30),
        ];
        let mut p = Policy::default();
        let e = &effective_rewards("s", &t, &events, &p)[0];
        assert_eq!(e.reward, Some(0.75));
        assert_eq!(e.sources["hitl"].value, 1.0);
        // The newest event is the last appended (tests, seq 3), whatever time it carries.
        assert_eq!(e.newest_source.as_deref(), Some("tests"));
        assert_eq!(e.newest_at, Some(15));
        p.sources.insert("hitl".into(), crate::policy::SourcePolicy { weight: 3.0, aggregation: None });
        let e = &effective_rewards("s", &t, &events, &p)[0];
        assert!((e.reward.unwrap_or(0.0) - (3.0 * 1.0 + 0.5) / 4.0).abs() < 1e-12);
    }

    #[test]
    fn explain_lists_every_event_considered_and_the_one_used() {
        let ids = ["a", "b"];
        let roles = [Some("Code"), Some("Test")];
        let t = inputs(&ids, &roles);
        let trip = |id: &str| RewardTarget::Triplet { triplet_id: id.into() };
        let events = vec![
            ev(1, trip("a"), Some(0.2), "hitl", 10),
            ev(2, seq(Strategy::Discounted { gamma: 0.5 }), Some(0.8), "terminal", 11),
            ev(3, trip("a"), Some(0.6), "hitl", 5),
            ev(4, trip("a"), None, "hitl", 30),
            ev(5, trip("b"), Some(1.0), "hitl", 12),
            ev(6, trip("a"), Some(0.4), "judge", 13),
            ev(7, trip("a"), Some(0.8), "judge", 14),
        ];
        let mut p = Policy::default();
        p.sources.insert("judge".into(), crate::policy::SourcePolicy { weight: 2.0, aggregation: Some(Aggregation::Mean) });
        let effective = &effective_rewards("s", &t, &events, &p)[0];
        let explained = explain_at("s", &t, &events, &p, 0);
        assert_eq!(explained.iter().map(|x| x.source.as_str()).collect::<Vec<_>>(), ["hitl", "judge", "terminal"]);
        for x in &explained {
            assert_eq!(x.value, effective.sources[&x.source].value, "{}", x.source);
            assert_eq!(x.weight, effective.sources[&x.source].weight, "{}", x.source);
            assert_eq!(x.events.len(), effective.sources[&x.source].events, "{}", x.source);
        }
        // hitl: the two valued events for "a" (not b's, not the deferred one), the later appended used.
        let hitl = &explained[0];
        assert_eq!(hitl.events.iter().map(|c| c.reward_id.as_deref()).collect::<Vec<_>>(), [Some("r1"), Some("r3")]);
        assert_eq!(hitl.events.iter().map(|c| c.used).collect::<Vec<_>>(), [false, true]);
        assert_eq!(hitl.value, 0.6);
        // judge: a mean, so every event is used.
        let judge = &explained[1];
        assert_eq!(judge.aggregation, Aggregation::Mean);
        assert!(judge.events.iter().all(|c| c.used));
        assert!((judge.value - 0.6).abs() < 1e-12);
        // terminal: the discounted share of the first of two triplets.
        assert_eq!(explained[2].events[0].value, 0.4);
        assert!(explain_at("s", &t, &events, &p, 2).is_empty(), "a position past the end explains nothing");
        // An immediate reward is considered with no reward id.
        let comps = BTreeMap::new();
        let mut t2 = inputs(&ids, &roles);
        t2[1].immediate = Some(Immediate { value: Some(0.3), components: &comps, source: "local", at: 1, order: immediate_order(0) });
        let b = explain_at("s", &t2, &events, &p, 1);
        let local = b.iter().find(|x| x.source == "local").expect("local");
        assert_eq!(local.events, vec![ConsideredEvent { reward_id: None, value: 0.3, at: 1, order: immediate_order(0), used: true }]);
    }

    #[test]
    fn latest_is_ledger_order_not_client_time() {
        let ids = ["a"];
        let roles = [None];
        let trip = || RewardTarget::Triplet { triplet_id: "a".into() };
        // A client with a clock far in the future cannot pin its value: the event appended later wins.
        let events = vec![ev(1, trip(), Some(0.1), "judge", i64::MAX / 2), ev(2, trip(), Some(0.9), "judge", 0)];
        let e = &effective_rewards("s", &inputs(&ids, &roles), &events, &Policy::default())[0];
        assert_eq!(e.reward, Some(0.9));
        // An immediate reward counts as appended when its triplet arrived: after event 1, before event 2.
        let none = BTreeMap::new();
        let t = vec![RewardInput {
            triplet_id: "a",
            role: None,
            task_id: None,
            phase: None,
            immediate: Some(Immediate { value: Some(0.4), components: &none, source: "judge", at: 0, order: immediate_order(1) }),
        }];
        assert_eq!(effective_rewards("s", &t, &events[..1], &Policy::default())[0].reward, Some(0.4));
        assert_eq!(effective_rewards("s", &t, &events, &Policy::default())[0].reward, Some(0.9));
        assert!(ledger_order(1) < immediate_order(1) && immediate_order(1) < ledger_order(2));
    }

    #[test]
    fn triplet_targets_match_default_ids_in_any_case() {
        let lower = "5b8efff798038103d269b633813fc60ceee19b7ec3c1b174";
        let upper = lower.to_ascii_uppercase();
        let ids = [upper.as_str()];
        let roles = [None];
        let events = vec![ev(1, RewardTarget::Triplet { triplet_id: lower.into() }, Some(0.3), "hitl", 1)];
        assert_eq!(effective_rewards("s", &inputs(&ids, &roles), &events, &Policy::default())[0].reward, Some(0.3));
        let ids = [lower];
        let events = vec![ev(1, RewardTarget::Triplet { triplet_id: upper.clone() }, Some(0.3), "hitl", 1)];
        assert_eq!(effective_rewards("s", &inputs(&ids, &roles), &events, &Policy::default())[0].reward, Some(0.3));
    }

    #[test]
    fn only_sequence_targeted_terminal_rewards_are_terminal() {
        let t = ev(1, RewardTarget::Triplet { triplet_id: "a".into() }, Some(1.0), "hitl", 1);
        assert!(!t.is_terminal());
        let s = ev(2, seq(Strategy::Uniform), Some(1.0), "hitl", 1);
        assert!(s.is_terminal());
        let deferred = ev(3, seq(Strategy::Uniform), None, "hitl", 1);
        assert!(!deferred.is_terminal());
        let local = ev(4, seq(Strategy::Uniform), Some(1.0), "local", 1);
        assert!(!local.is_terminal());
    }

    #[test]
    fn defects_multiply() {
        let ids = ["a"];
        let roles = [None];
        let t = inputs(&ids, &roles);
        let trip = || RewardTarget::Triplet { triplet_id: "a".into() };
        let events = vec![ev(1, trip(), Some(0.9), "defect", 1), ev(2, trip(), Some(0.5), "defect", 2)];
        let e = &effective_rewards("s", &t, &events, &Policy::default())[0];
        assert!((e.reward.unwrap_or(0.0) - 0.45).abs() < 1e-12);
        assert_eq!(e.sources["defect"].events, 2);
    }

    #[test]
    fn aggregations_per_source() {
        let ids = ["a"];
        let roles = [None];
        let t = inputs(&ids, &roles);
        let trip = || RewardTarget::Triplet { triplet_id: "a".into() };
        let events = vec![ev(1, trip(), Some(0.2), "hitl", 10), ev(2, trip(), Some(0.8), "hitl", 20), ev(3, trip(), Some(0.5), "hitl", 5)];
        let with = |agg: &str| {
            let p = Policy::from_toml(&format!("[sources.hitl]\naggregation = \"{agg}\"\n")).expect("policy");
            effective_rewards("s", &t, &events, &p)[0].reward.expect("reward")
        };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        // Latest and earliest follow ledger order (0.2, 0.8, 0.5 were appended in that order),
        // not the times the events carry.
        assert!(close(with("latest"), 0.5));
        assert!(close(with("earliest"), 0.2));
        assert!(close(with("mean"), 0.5));
        assert!(close(with("min"), 0.2));
        assert!(close(with("max"), 0.8));
        assert!(close(with("sum"), 1.0));
        assert!(close(with("product"), 0.08));
    }

    #[test]
    fn policy_valued_events_and_task_targets() {
        let ids = ["a", "b", "c"];
        let t = vec![
            RewardInput { triplet_id: "a", role: Some("Design"), task_id: Some("T1"), phase: None, immediate: None },
            RewardInput { triplet_id: "b", role: Some("Code"), task_id: Some("T1"), phase: None, immediate: None },
            RewardInput { triplet_id: "c", role: Some("Test"), task_id: None, phase: Some("Code"), immediate: None },
        ];
        let _ = ids;
        let mut hitl = ev(1, seq(Strategy::Uniform), Some(1.0), "hitl", 1);
        hitl.valuation = Valuation::Hitl(HitlDecision::ApprovedWithChanges);
        let mut defect = ev(2, RewardTarget::Task { task_id: "T1".into(), phase: "Code".into() }, Some(0.5), "defect", 2);
        defect.valuation = Valuation::Defect(Severity::High);
        let mut deferred = ev(3, seq(Strategy::Uniform), None, "hitl", 3);
        deferred.valuation = Valuation::Hitl(HitlDecision::Deferred);
        let events = vec![hitl, defect, deferred];
        // Sequence "T1:Code": every triplet is in task T1 by its sequence id; b and c are in phase Code.
        let p = Policy::default();
        let e = effective_rewards("T1:Code", &t, &events, &p);
        assert_eq!(e[0].reward, Some(0.7));
        assert!((e[1].reward.unwrap_or(0.0) - (0.7 + 0.5) / 2.0).abs() < 1e-12);
        assert!((e[2].reward.unwrap_or(0.0) - (0.7 + 0.5) / 2.0).abs() < 1e-12);
        // In sequence "other", only b is in task T1 (by state.task_id) and in phase Code.
        let e = effective_rewards("other", &t, &events, &p);
        assert!((e[1].reward.unwrap_or(0.0) - 0.6).abs() < 1e-12);
        assert_eq!(e[2].reward, Some(0.7));
        // A changed policy gives the same ledger new values.
        let p2 = Policy::from_toml("[hitl]\napproved_with_changes = 0.9\n[defects]\nHigh = 0.2\n").expect("policy");
        let e = effective_rewards("other", &t, &events, &p2);
        assert!((e[1].reward.unwrap_or(0.0) - (0.9 + 0.8) / 2.0).abs() < 1e-12);
        assert_eq!(candidate_tasks("T1:Code", [Some("T1"), Some("T2"), None].into_iter()), vec!["T1:Code", "T1", "T2"]);
        assert_eq!(candidate_tasks("proj:42:Code", std::iter::empty()), vec!["proj:42:Code", "proj", "proj:42"]);
        let t = RewardInput { triplet_id: "x", role: Some("Code"), task_id: None, phase: None, immediate: None };
        assert!(task_reaches("proj:42", "Code", "proj:42:Code", &t));
    }

    #[test]
    fn immediate_components_use_policy_weights() {
        let comps: BTreeMap<String, f64> = [("success".to_string(), 1.0), ("latency".to_string(), 0.0)].into();
        let imm = Immediate { value: None, components: &comps, source: "local", at: 5, order: immediate_order(0) };
        let mut p = Policy::default();
        assert_eq!(imm.resolve(&p), Some(0.5));
        p.components.insert("success".into(), 3.0);
        assert_eq!(imm.resolve(&p), Some(0.75));
        let t = vec![RewardInput { triplet_id: "a", role: None, task_id: None, phase: None, immediate: Some(imm) }];
        let e = &effective_rewards("s", &t, &[], &p)[0];
        assert_eq!(e.reward, Some(0.75));
        assert_eq!(e.newest_source.as_deref(), Some("local"));
    }
}
