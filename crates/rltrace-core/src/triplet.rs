//! From a span to a triplet: the `rl.*` wire conventions (DESIGN section 3), reward span events,
//! GenAI evaluation events, Agent Lightning reward spans, and LLM-call and tool-call spans from agents
//! that use no rltrace SDK (their state and action come from [`crate::genai`]).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::genai;
use crate::reward::{Strategy, validate_source};
use crate::span::{AttrValue, SpanRecord, find};
use crate::time::{Micros, nanos_to_micros, parse_rfc3339_micros};

/// Default bound on one attribute value: 1 MiB (DESIGN section 4).
pub const DEFAULT_MAX_ATTRIBUTE_VALUE_BYTES: usize = 1024 * 1024;

/// Bounds applied while analysing a span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest accepted attribute value (string or bytes), in bytes.
    pub max_attribute_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_attribute_value_bytes: DEFAULT_MAX_ATTRIBUTE_VALUE_BYTES }
    }
}

/// The triplet carried by a span.
#[derive(Debug, Clone, PartialEq)]
pub struct TripletData {
    /// The triplet id (`rl.triplet_id`, or `{trace_id}{span_id}`).
    pub triplet_id: String,
    /// Whether `triplet_id` was given explicitly.
    pub explicit_id: bool,
    /// The sequence (episode) id.
    pub sequence_id: String,
    /// `rl.sequence_scope`, informative.
    pub sequence_scope: Option<String>,
    /// `rl.sequence_index`, when given.
    pub sequence_index: Option<i64>,
    /// `rl.timestamp_utc`, or the span's start.
    pub timestamp: Micros,
    /// The state object.
    pub state: Map<String, Value>,
    /// The action object.
    pub action: Map<String, Value>,
    /// `rl.reward` (`None` when absent or `"null"`).
    pub reward: Option<f64>,
    /// `rl.reward.<component>` values.
    pub reward_components: BTreeMap<String, f64>,
    /// `rl.reward_source`, default `local`.
    pub reward_source: String,
    /// `rl.propensity`.
    pub propensity: Option<f64>,
    /// `rl.sampling.probability`: the probability with which the SDK kept this triplet's sequence.
    pub sampling_probability: Option<f64>,
    /// `rl.sequence_end`.
    pub sequence_end: bool,
    /// The span is an LLM call.
    pub llm_call: bool,
    /// The span is a tool call (and not an LLM call).
    pub tool_call: bool,
    /// The Agent Lightning rollout attempt the span (or its resource) names.
    pub rollout: Option<RolloutLink>,
}

/// A sequence's link to an Agent Lightning rollout attempt: `agentlightning.rollout_id` and
/// `agentlightning.attempt_id` on a span or its resource (DESIGN section 10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutLink {
    /// `agentlightning.rollout_id`.
    pub rollout_id: String,
    /// `agentlightning.attempt_id`.
    pub attempt_id: String,
}

/// Longest rollout or attempt id kept, in bytes.
pub const MAX_ROLLOUT_ID_BYTES: usize = 256;

/// The rollout link of a span: both ids on the span, else both on its resource; none when
/// neither carries both. An id that is not a non-empty string of at most
/// [`MAX_ROLLOUT_ID_BYTES`] is an error naming the attribute.
pub fn rollout_link(span: &SpanRecord) -> Result<Option<RolloutLink>, (&'static str, String)> {
    fn id(key: &'static str, v: Option<&AttrValue>) -> Result<Option<String>, (&'static str, String)> {
        match v {
            None => Ok(None),
            Some(AttrValue::Str(s)) if !s.is_empty() && s.len() <= MAX_ROLLOUT_ID_BYTES && !s.contains('\0') => Ok(Some(s.clone())),
            Some(AttrValue::Str(s)) if s.len() > MAX_ROLLOUT_ID_BYTES => Err((key, format!("longer than {MAX_ROLLOUT_ID_BYTES} bytes"))),
            Some(_) => Err((key, "must be a non-empty string".to_string())),
        }
    }
    const ROLLOUT: &str = "agentlightning.rollout_id";
    const ATTEMPT: &str = "agentlightning.attempt_id";
    let on_resource = |key: &str| span.origin.resource.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let span_pair = (id(ROLLOUT, span.attr(ROLLOUT))?, id(ATTEMPT, span.attr(ATTEMPT))?);
    let pair = match span_pair {
        (Some(r), Some(a)) => (Some(r), Some(a)),
        _ => (id(ROLLOUT, on_resource(ROLLOUT))?, id(ATTEMPT, on_resource(ATTEMPT))?),
    };
    Ok(match pair {
        (Some(rollout_id), Some(attempt_id)) => Some(RolloutLink { rollout_id, attempt_id }),
        _ => None,
    })
}

impl TripletData {
    /// `state.agent_role`, when a string.
    pub fn role(&self) -> Option<&str> {
        self.state.get("agent_role").and_then(Value::as_str)
    }

    /// `state.task_id` as a string (numbers are written out).
    pub fn task_id(&self) -> Option<String> {
        value_as_key(self.state.get("task_id")?)
    }

    /// `state.phase`, when a string.
    pub fn phase(&self) -> Option<&str> {
        self.state.get("phase").and_then(Value::as_str)
    }

    /// Whether the span carries an immediate reward.
    pub fn has_immediate_reward(&self) -> bool {
        self.reward.is_some() || !self.reward_components.is_empty()
    }
}

fn value_as_key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whom a reward carried inside a trace is for.
#[derive(Debug, Clone, PartialEq)]
pub enum SpanRewardTarget {
    /// The span's own triplet.
    Triplet,
    /// The sequence of the span's triplet, through a strategy.
    Sequence(Strategy),
}

/// A reward event carried by a span event (`rl.reward` or `gen_ai.evaluation.result`).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanReward {
    /// Position of the event in the span, part of the event's stable id.
    pub ordinal: usize,
    /// Target relative to the span.
    pub target: SpanRewardTarget,
    /// Value in [0, 1].
    pub value: f64,
    /// Source name.
    pub source: String,
    /// Reason.
    pub reason: Option<String>,
    /// The event time.
    pub at: Micros,
}

/// An Agent Lightning reward span (`agentlightning.annotation`).
#[derive(Debug, Clone, PartialEq)]
pub struct AnnotationReward {
    /// `agentlightning.reward.0.value`.
    pub value: f64,
    /// `agentlightning.reward.0.name`.
    pub name: Option<String>,
    /// The reward span's start; the reward goes to the latest LLM-call triplet of the trace that
    /// ended at or before it.
    pub start_time_unix_nano: u64,
}

/// A span after analysis: the span, its triplet if it is one, and the rewards it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyzedSpan {
    /// The span as received.
    pub span: SpanRecord,
    /// Its triplet, if it is one.
    pub triplet: Option<TripletData>,
    /// Rewards carried by its events.
    pub rewards: Vec<SpanReward>,
    /// The Agent Lightning reward it carries, if it is such a span.
    pub annotation: Option<AnnotationReward>,
}

/// Outcome of analysing one span: accepted, or rejected with a message naming span and attribute.
pub type SpanAnalysis = Result<AnalyzedSpan, String>;

/// Analyse one span.
pub fn analyze(span: SpanRecord, limits: &Limits) -> SpanAnalysis {
    let ctx = SpanCtx { span: &span };
    check_sizes(&ctx, limits)?;
    let triplet = extract_triplet(&ctx)?;
    let rewards = match &triplet {
        Some(_) => reward_events(&ctx)?,
        None => Vec::new(),
    };
    let annotation = agentlightning_reward(&span);
    Ok(AnalyzedSpan { triplet, rewards, annotation, span })
}

struct SpanCtx<'a> {
    span: &'a SpanRecord,
}

impl SpanCtx<'_> {
    fn reject(&self, attribute: &str, why: &str) -> String {
        format!(
            "span {}/{}: attribute {attribute}: {why}",
            self.span.trace_id_hex(),
            self.span.span_id_hex()
        )
    }
}

fn check_sizes(ctx: &SpanCtx<'_>, limits: &Limits) -> Result<(), String> {
    let max = limits.max_attribute_value_bytes;
    let too_big = |k: &str, v: &AttrValue| -> Result<(), String> {
        if v.largest_payload() > max {
            Err(ctx.reject(k, &format!("value of {} bytes exceeds the limit of {max} bytes", v.largest_payload())))
        } else {
            Ok(())
        }
    };
    for (k, v) in &ctx.span.attributes {
        too_big(k, v)?;
    }
    for e in &ctx.span.events {
        for (k, v) in &e.attributes {
            too_big(k, v)?;
        }
    }
    Ok(())
}

/// Whether the span claims to be a triplet through explicit `rl.*` attributes.
fn has_rl_claim(span: &SpanRecord) -> bool {
    span.attributes.iter().any(|(k, _)| {
        matches!(k.as_str(), "rl.triplet_id" | "rl.sequence_id" | "rl.state" | "rl.action")
            || k.starts_with("rl.state.")
            || k.starts_with("rl.action.")
    }) || span.events.iter().any(|e| e.name == "rl.reward")
}

pub use crate::genai::{is_llm_call, is_tool_call};

fn extract_triplet(ctx: &SpanCtx<'_>) -> Result<Option<TripletData>, String> {
    let span = ctx.span;
    let llm = is_llm_call(span);
    let tool = !llm && is_tool_call(span);
    if !llm && !tool && !has_rl_claim(span) {
        return Ok(None);
    }
    let mut state = Map::new();
    let mut action = Map::new();
    let mut sequence_id = None;
    if llm {
        genai::llm_state_action(span, &mut state, &mut action);
    } else if tool {
        genai::tool_state_action(span, &mut state, &mut action);
    }
    if llm || tool {
        sequence_id = genai::session_id(span);
    }

    // rl.state / rl.action as JSON strings, then the flat keys, which win.
    for (key, target) in [("rl.state", &mut state), ("rl.action", &mut action)] {
        if let Some(v) = span.attr(key) {
            let obj = match v {
                AttrValue::Str(s) => match serde_json::from_str::<Value>(s) {
                    Ok(Value::Object(m)) => m,
                    Ok(_) => return Err(ctx.reject(key, "must be a JSON object")),
                    Err(e) => return Err(ctx.reject(key, &format!("not valid JSON: {e}"))),
                },
                AttrValue::Map(m) => m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect(),
                _ => return Err(ctx.reject(key, "must be a JSON object in a string")),
            };
            target.extend(obj);
        }
    }
    for (k, v) in &span.attributes {
        if let Some(field) = k.strip_prefix("rl.state.") {
            state.insert(field.to_string(), v.to_json());
        } else if let Some(field) = k.strip_prefix("rl.action.") {
            action.insert(field.to_string(), v.to_json());
        }
    }

    let attr_str = |key: &str| -> Result<Option<String>, String> {
        match span.attr(key) {
            None => Ok(None),
            Some(AttrValue::Str(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(AttrValue::Int(i)) => Ok(Some(i.to_string())),
            Some(_) => Err(ctx.reject(key, "must be a non-empty string")),
        }
    };
    let (triplet_id, explicit_id) = match attr_str("rl.triplet_id")? {
        Some(id) => (id, true),
        None => (crate::ids::default_triplet_id(&span.trace_id, &span.span_id), false),
    };
    let sequence_id = match attr_str("rl.sequence_id")? {
        Some(s) => s,
        None => sequence_id.unwrap_or_else(|| span.trace_id_hex()),
    };
    let sequence_scope = attr_str("rl.sequence_scope")?;
    let sequence_index = match span.attr("rl.sequence_index") {
        None => None,
        Some(v) => Some(v.as_int().ok_or_else(|| ctx.reject("rl.sequence_index", "must be an integer"))?),
    };
    let timestamp = match span.attr("rl.timestamp_utc") {
        None => nanos_to_micros(span.start_time_unix_nano),
        Some(v) => v
            .as_str()
            .and_then(parse_rfc3339_micros)
            .ok_or_else(|| ctx.reject("rl.timestamp_utc", "must be an RFC 3339 timestamp"))?,
    };
    let reward = match span.attr("rl.reward") {
        None => None,
        Some(AttrValue::Str(s)) if s.trim() == "null" => None,
        Some(AttrValue::Empty) => None,
        Some(v) => Some(unit_number(v).ok_or_else(|| ctx.reject("rl.reward", "must be a number in [0, 1] or \"null\""))?),
    };
    let mut reward_components = BTreeMap::new();
    for (k, v) in &span.attributes {
        if let Some(c) = k.strip_prefix("rl.reward.") {
            let x = unit_number(v).ok_or_else(|| ctx.reject(k, "must be a number in [0, 1]"))?;
            reward_components.insert(c.to_string(), x);
        }
    }
    let reward_source = attr_str("rl.reward_source")?.unwrap_or_else(|| "local".to_string());
    validate_source(&reward_source).map_err(|e| ctx.reject("rl.reward_source", &e.to_string()))?;
    let propensity = match span.attr("rl.propensity") {
        None => None,
        Some(v) => Some(
            v.as_number()
                .filter(|p| p.is_finite() && *p > 0.0 && *p <= 1.0)
                .ok_or_else(|| ctx.reject("rl.propensity", "must be a number in (0, 1]"))?,
        ),
    };
    let sampling_probability = match span.attr("rl.sampling.probability") {
        None => None,
        Some(v) => Some(
            v.as_number()
                .filter(|p| p.is_finite() && *p > 0.0 && *p <= 1.0)
                .ok_or_else(|| ctx.reject("rl.sampling.probability", "must be a number in (0, 1]"))?,
        ),
    };
    let sequence_end = match span.attr("rl.sequence_end") {
        None => false,
        Some(v) => v.as_bool().ok_or_else(|| ctx.reject("rl.sequence_end", "must be a boolean"))?,
    };
    let rollout = rollout_link(span).map_err(|(key, why)| ctx.reject(key, &why))?;
    Ok(Some(TripletData {
        rollout,
        triplet_id,
        explicit_id,
        sequence_id,
        sequence_scope,
        sequence_index,
        timestamp,
        state,
        action,
        reward,
        reward_components,
        reward_source,
        propensity,
        sampling_probability,
        sequence_end,
        llm_call: llm,
        tool_call: tool,
    }))
}

fn unit_number(v: &AttrValue) -> Option<f64> {
    v.as_number().filter(|x| x.is_finite() && (0.0..=1.0).contains(x))
}

fn reward_events(ctx: &SpanCtx<'_>) -> Result<Vec<SpanReward>, String> {
    let mut out = Vec::new();
    for (ordinal, e) in ctx.span.events.iter().enumerate() {
        let at = nanos_to_micros(e.time_unix_nano);
        let a = |k: &str| find(&e.attributes, k);
        match e.name.as_str() {
            "rl.reward" => {
                let bad = |k: &str, why: &str| ctx.reject(&format!("event rl.reward #{ordinal} {k}"), why);
                let value = a("rl.reward.value")
                    .and_then(unit_number)
                    .ok_or_else(|| bad("rl.reward.value", "must be a number in [0, 1]"))?;
                let source = a("rl.reward.source").and_then(AttrValue::as_str).unwrap_or("local").to_string();
                validate_source(&source).map_err(|err| bad("rl.reward.source", &err.to_string()))?;
                let target = match a("rl.reward.target").and_then(AttrValue::as_str).unwrap_or("triplet") {
                    "triplet" => SpanRewardTarget::Triplet,
                    "sequence" => {
                        let name = a("rl.reward.strategy").and_then(AttrValue::as_str).unwrap_or("uniform");
                        let gamma = a("rl.reward.gamma").and_then(AttrValue::as_number);
                        let role = a("rl.reward.role").and_then(AttrValue::as_str);
                        SpanRewardTarget::Sequence(
                            Strategy::parse(name, gamma, role).map_err(|err| bad("rl.reward.strategy", &err.to_string()))?,
                        )
                    }
                    _ => return Err(bad("rl.reward.target", "must be triplet or sequence")),
                };
                let reason = a("rl.reward.reason").and_then(AttrValue::as_str).map(str::to_string);
                out.push(SpanReward { ordinal, target, value, source, reason, at });
            }
            "gen_ai.evaluation.result" => {
                // Evaluators may score on other scales; only [0, 1] scores become rewards.
                if let Some(value) = a("gen_ai.evaluation.score.value").and_then(unit_number) {
                    let reason = a("gen_ai.evaluation.name").and_then(AttrValue::as_str).map(str::to_string);
                    out.push(SpanReward { ordinal, target: SpanRewardTarget::Triplet, value, source: "judge".into(), reason, at });
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn agentlightning_reward(span: &SpanRecord) -> Option<AnnotationReward> {
    if span.name != "agentlightning.annotation" {
        return None;
    }
    let value = span.attr("agentlightning.reward.0.value").and_then(unit_number)?;
    let name = span.attr("agentlightning.reward.0.name").and_then(AttrValue::as_str).map(str::to_string);
    Some(AnnotationReward { value, name, start_time_unix_nano: span.start_time_unix_nano })
}
