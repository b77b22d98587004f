//! From a span to a triplet: the `rl.*` wire conventions (DESIGN section 3), reward span events,
//! GenAI evaluation events, Agent Lightning reward spans, and LLM-call spans from agents that use
//! no rltrace SDK (current `gen_ai.*`, the older flattened `gen_ai.prompt.N.*`, OpenInference `llm.*`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

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

/// Whether the span is an LLM call by the GenAI, OpenLLMetry or OpenInference conventions.
pub fn is_llm_call(span: &SpanRecord) -> bool {
    let s = |k: &str| span.attr(k).and_then(AttrValue::as_str);
    matches!(s("gen_ai.operation.name"), Some("chat" | "text_completion" | "generate_content"))
        || matches!(s("llm.request.type"), Some("chat" | "completion"))
        || s("openinference.span.kind").is_some_and(|k| k.eq_ignore_ascii_case("LLM"))
        || span.name.contains("openai.chat.completion")
}

fn extract_triplet(ctx: &SpanCtx<'_>) -> Result<Option<TripletData>, String> {
    let span = ctx.span;
    let llm = is_llm_call(span);
    if !llm && !has_rl_claim(span) {
        return Ok(None);
    }
    let mut state = Map::new();
    let mut action = Map::new();
    let mut sequence_id = None;
    if llm {
        llm_state_action(span, &mut state, &mut action);
        sequence_id = ["gen_ai.conversation.id", "session.id"]
            .iter()
            .find_map(|k| span.attr(k).and_then(AttrValue::as_str).filter(|s| !s.is_empty()))
            .map(str::to_string);
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
    Ok(Some(TripletData {
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

// ----- LLM-call spans -----

const REQUEST_PARAM_PREFIXES: [&str; 2] = ["gen_ai.request.", "llm.request."];

fn llm_state_action(span: &SpanRecord, state: &mut Map<String, Value>, action: &mut Map<String, Value>) {
    let s = |k: &str| span.attr(k).and_then(AttrValue::as_str).filter(|v| !v.is_empty());
    if let Some(model) = s("gen_ai.request.model").or(s("llm.model_name")).or(s("gen_ai.response.model")).or(s("llm.request.model")) {
        state.insert("llm_model".into(), Value::String(model.into()));
    }
    if let Some(p) = s("gen_ai.provider.name").or(s("gen_ai.system")).or(s("llm.provider")).or(s("llm.system")) {
        state.insert("llm_provider".into(), Value::String(p.into()));
    }
    for (k, v) in &span.attributes {
        for prefix in REQUEST_PARAM_PREFIXES {
            if let Some(param) = k.strip_prefix(prefix)
                && param != "model"
                && param != "type"
                && !param.contains('.')
            {
                state.insert(param.to_string(), v.to_json());
            }
        }
    }
    if let Some(Value::Object(params)) = s("llm.invocation_parameters").and_then(|j| serde_json::from_str(j).ok()) {
        for (k, v) in params {
            state.entry(k).or_insert(v);
        }
    }
    let prompt = s("gen_ai.input.messages")
        .and_then(messages_from_json)
        .or_else(|| indexed_messages(span, "gen_ai.prompt."))
        .or_else(|| openinference_messages(span, "llm.input_messages."));
    if let Some(p) = prompt {
        state.insert("prompt".into(), p);
    }

    let response = s("gen_ai.output.messages")
        .and_then(messages_from_json)
        .or_else(|| indexed_messages(span, "gen_ai.completion."))
        .or_else(|| openinference_messages(span, "llm.output_messages."));
    if let Some(r) = response {
        action.insert("llm_response".into(), r);
    }
    let stop = match span.attr("gen_ai.response.finish_reasons") {
        Some(AttrValue::Array(a)) => a.first().and_then(AttrValue::as_str).map(str::to_string),
        Some(AttrValue::Str(s)) => Some(s.clone()),
        _ => None,
    }
    .or_else(|| s("gen_ai.completion.0.finish_reason").map(str::to_string));
    if let Some(stop) = stop {
        action.insert("llm_stop_reason".into(), Value::String(stop));
    }
    let int = |keys: &[&str]| keys.iter().find_map(|k| span.attr(k).and_then(AttrValue::as_int));
    if let Some(n) = int(&["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.usage.prompt_tokens", "llm.token_count.prompt"]) {
        action.insert("llm_tokens_in".into(), Value::from(n));
    }
    if let Some(n) = int(&["gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.usage.completion_tokens", "llm.token_count.completion"]) {
        action.insert("llm_tokens_out".into(), Value::from(n));
    }
    action.insert("success".into(), Value::Bool(span.status_code != 2));
    let dur_ns = span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano);
    action.insert("duration_ms".into(), serde_json::Number::from_f64(dur_ns as f64 / 1e6).map_or(Value::Null, Value::Number));
}

/// `gen_ai.input.messages` / `gen_ai.output.messages`: a JSON array of messages whose content is a
/// string or a list of parts (`{"type": "text", "content": ...}`), reduced to `{role, content}`.
fn messages_from_json(json: &str) -> Option<Value> {
    let Value::Array(items) = serde_json::from_str::<Value>(json).ok()? else { return None };
    let out = items
        .into_iter()
        .map(|m| {
            let role = m.get("role").cloned().unwrap_or(Value::Null);
            let content = match (m.get("content"), m.get("parts")) {
                (Some(c), _) => c.clone(),
                (None, Some(Value::Array(parts))) => {
                    let texts: Vec<&str> = parts
                        .iter()
                        .filter_map(|p| p.get("content").and_then(Value::as_str))
                        .collect();
                    if texts.len() == parts.len() {
                        Value::String(texts.join(""))
                    } else {
                        Value::Array(parts.clone())
                    }
                }
                _ => Value::Null,
            };
            let mut msg = Map::new();
            msg.insert("role".into(), role);
            msg.insert("content".into(), content);
            Value::Object(msg)
        })
        .collect();
    Some(Value::Array(out))
}

/// Flattened messages `<prefix>N.role` / `<prefix>N.content` (older GenAI conventions).
fn indexed_messages(span: &SpanRecord, prefix: &str) -> Option<Value> {
    collect_indexed(span, prefix, "role", "content")
}

/// OpenInference `llm.input_messages.N.message.role` / `.message.content`.
fn openinference_messages(span: &SpanRecord, prefix: &str) -> Option<Value> {
    collect_indexed(span, prefix, "message.role", "message.content")
}

fn collect_indexed(span: &SpanRecord, prefix: &str, role_key: &str, content_key: &str) -> Option<Value> {
    let mut by_index: BTreeMap<u32, (Value, Value)> = BTreeMap::new();
    for (k, v) in &span.attributes {
        let Some(rest) = k.strip_prefix(prefix) else { continue };
        let Some((n, field)) = rest.split_once('.') else { continue };
        let Ok(n) = n.parse::<u32>() else { continue };
        let slot = by_index.entry(n).or_insert((Value::Null, Value::Null));
        if field == role_key {
            slot.0 = v.to_json();
        } else if field == content_key {
            slot.1 = v.to_json();
        }
    }
    if by_index.is_empty() {
        return None;
    }
    Some(Value::Array(
        by_index
            .into_values()
            .map(|(role, content)| {
                let mut m = Map::new();
                m.insert("role".into(), role);
                m.insert("content".into(), content);
                Value::Object(m)
            })
            .collect(),
    ))
}
