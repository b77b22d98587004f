//! The reward ledger's semantics: events, targets, strategies, validation, and how the effective
//! reward of each triplet of a sequence is computed from the events that reach it.

use std::collections::{BTreeMap, HashMap};

use crate::policy::Policy;
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
}

impl Strategy {
    /// Build a strategy from its name and parameters, validating them.
    pub fn parse(name: &str, gamma: Option<f64>, role: Option<&str>) -> Result<Strategy, RewardError> {
        match name {
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
        }
    }

    /// `gamma`, for the discounted strategy.
    pub fn gamma(&self) -> Option<f64> {
        match self {
            Strategy::Discounted { gamma } => Some(*gamma),
            _ => None,
        }
    }

    /// `role`, for the role strategy.
    pub fn role(&self) -> Option<&str> {
        match self {
            Strategy::Role { role } => Some(role),
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
}

/// A triplet as the reward computation needs it, given in sequence order.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardInput<'a> {
    /// Triplet id.
    pub triplet_id: &'a str,
    /// `state.agent_role`.
    pub role: Option<&'a str>,
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
    /// Ledger order of that event (immediate rewards sort first).
    pub seq_no: i64,
    /// How many events of this source reach the triplet.
    pub events: usize,
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
pub fn sequence_share(strategy: &Strategy, value: f64, i: usize, n: usize, role: Option<&str>) -> Option<f64> {
    match strategy {
        Strategy::Uniform => Some(value),
        Strategy::Discounted { gamma } => Some(value * gamma.powi((n - 1 - i) as i32)),
        Strategy::Last => (i + 1 == n).then_some(value),
        Strategy::Role { role: r } => (role == Some(r.as_str())).then_some(value),
    }
}

/// Compute the effective reward of every triplet of one sequence.
///
/// `triplets` are in sequence order; `events` are the ledger events that target the sequence or one
/// of its triplets (others are ignored). For each source the latest event reaching a triplet is
/// used (`defect` events multiply instead); the result is the weighted mean over sources with the
/// policy's weights. Events with no value (HITL `deferred`) are recorded but change nothing.
pub fn effective_rewards(triplets: &[RewardInput<'_>], events: &[RewardEvent], policy: &Policy) -> Vec<Effective> {
    let n = triplets.len();
    let mut per: Vec<BTreeMap<String, SourceValue>> = vec![BTreeMap::new(); n];
    for (i, t) in triplets.iter().enumerate() {
        if let Some(imm) = &t.immediate
            && let Some(v) = imm.resolve(policy)
        {
            merge(&mut per[i], imm.source, v, imm.at, i64::MIN);
        }
    }
    let mut index: Option<HashMap<&str, usize>> = None;
    for e in events {
        let Some(value) = e.value else { continue };
        match &e.target {
            RewardTarget::Triplet { triplet_id } => {
                let idx = index.get_or_insert_with(|| {
                    triplets.iter().enumerate().map(|(i, t)| (t.triplet_id, i)).collect()
                });
                if let Some(&i) = idx.get(triplet_id.as_str()) {
                    merge(&mut per[i], &e.source, value, e.created_at, e.seq_no);
                }
            }
            RewardTarget::Sequence { strategy, .. } => {
                for (i, t) in triplets.iter().enumerate() {
                    if let Some(v) = sequence_share(strategy, value, i, n, t.role) {
                        merge(&mut per[i], &e.source, v, e.created_at, e.seq_no);
                    }
                }
            }
        }
    }
    per.into_iter().map(|sources| finish(sources, policy)).collect()
}

fn merge(map: &mut BTreeMap<String, SourceValue>, source: &str, value: f64, at: Micros, seq_no: i64) {
    match map.get_mut(source) {
        None => {
            map.insert(source.to_string(), SourceValue { value, at, seq_no, events: 1 });
        }
        Some(cur) => {
            cur.events += 1;
            let newer = (at, seq_no) > (cur.at, cur.seq_no);
            if source == "defect" {
                cur.value *= value;
            } else if newer {
                cur.value = value;
            }
            if newer {
                cur.at = at;
                cur.seq_no = seq_no;
            }
        }
    }
}

fn finish(sources: BTreeMap<String, SourceValue>, policy: &Policy) -> Effective {
    if sources.is_empty() {
        return Effective::default();
    }
    let mut num = 0.0;
    let mut den = 0.0;
    let mut newest: Option<(&String, &SourceValue)> = None;
    for (name, sv) in &sources {
        let w = policy.source_weight(name);
        num += w * sv.value;
        den += w;
        if newest.is_none_or(|(_, n)| (sv.at, sv.seq_no) > (n.at, n.seq_no)) {
            newest = Some((name, sv));
        }
    }
    let reward = if den > 0.0 { Some((num / den).clamp(0.0, 1.0)) } else { None };
    let newest_source = newest.map(|(n, _)| n.clone());
    let newest_at = newest.map(|(_, s)| s.at);
    Effective { reward, sources, newest_source, newest_at }
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
        }
    }

    fn seq(strategy: Strategy) -> RewardTarget {
        RewardTarget::Sequence { sequence_id: "s".into(), strategy }
    }

    fn inputs<'a>(ids: &'a [&'a str], roles: &'a [Option<&'a str>]) -> Vec<RewardInput<'a>> {
        ids.iter()
            .zip(roles)
            .map(|(id, role)| RewardInput { triplet_id: id, role: *role, immediate: None })
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
        let uniform = effective_rewards(&t, &[ev(1, seq(Strategy::Uniform), Some(0.5), "hitl", 1)], &p);
        assert!(uniform.iter().all(|e| e.reward == Some(0.5)));
        let disc = effective_rewards(&t, &[ev(1, seq(Strategy::Discounted { gamma: 0.5 }), Some(1.0), "tests", 1)], &p);
        assert_eq!(disc.iter().map(|e| e.reward).collect::<Vec<_>>(), vec![Some(0.25), Some(0.5), Some(1.0)]);
        let last = effective_rewards(&t, &[ev(1, seq(Strategy::Last), Some(1.0), "terminal", 1)], &p);
        assert_eq!(last.iter().map(|e| e.reward).collect::<Vec<_>>(), vec![None, None, Some(1.0)]);
        let role = effective_rewards(&t, &[ev(1, seq(Strategy::Role { role: "Code".into() }), Some(0.9), "hitl", 1)], &p);
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
        let e = &effective_rewards(&t, &events, &p)[0];
        assert_eq!(e.reward, Some(0.75));
        assert_eq!(e.sources["hitl"].value, 1.0);
        assert_eq!(e.newest_source.as_deref(), Some("hitl"));
        assert_eq!(e.newest_at, Some(20));
        p.sources.insert("hitl".into(), crate::policy::SourcePolicy { weight: 3.0 });
        let e = &effective_rewards(&t, &events, &p)[0];
        assert!((e.reward.unwrap_or(0.0) - (3.0 * 1.0 + 0.5) / 4.0).abs() < 1e-12);
    }

    #[test]
    fn defects_multiply() {
        let ids = ["a"];
        let roles = [None];
        let t = inputs(&ids, &roles);
        let trip = || RewardTarget::Triplet { triplet_id: "a".into() };
        let events = vec![ev(1, trip(), Some(0.9), "defect", 1), ev(2, trip(), Some(0.5), "defect", 2)];
        let e = &effective_rewards(&t, &events, &Policy::default())[0];
        assert!((e.reward.unwrap_or(0.0) - 0.45).abs() < 1e-12);
        assert_eq!(e.sources["defect"].events, 2);
    }

    #[test]
    fn immediate_components_use_policy_weights() {
        let comps: BTreeMap<String, f64> = [("success".to_string(), 1.0), ("latency".to_string(), 0.0)].into();
        let imm = Immediate { value: None, components: &comps, source: "local", at: 5 };
        let mut p = Policy::default();
        assert_eq!(imm.resolve(&p), Some(0.5));
        p.components.insert("success".into(), 3.0);
        assert_eq!(imm.resolve(&p), Some(0.75));
        let t = vec![RewardInput { triplet_id: "a", role: None, immediate: Some(imm) }];
        let e = &effective_rewards(&t, &[], &p)[0];
        assert_eq!(e.reward, Some(0.75));
        assert_eq!(e.newest_source.as_deref(), Some("local"));
    }
}
