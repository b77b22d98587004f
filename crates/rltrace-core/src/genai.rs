//! LLM calls and tool calls from agents that use no rltrace SDK (DESIGN section 3): spans of the
//! OpenTelemetry GenAI conventions (current `gen_ai.*` and the older flattened `gen_ai.prompt.N.*`),
//! OpenLLMetry (`llm.*`, `traceloop.association.properties.*`) and OpenInference
//! (`openinference.span.kind`, `llm.*`, `tool.*`, `input.value` / `output.value`).
//!
//! Every source attribute read here is listed in docs/MAPPING.md, in the order it is tried.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::span::{AttrValue, SpanRecord, find};

/// Whether the span is an LLM call by the GenAI, OpenLLMetry or OpenInference conventions.
pub fn is_llm_call(span: &SpanRecord) -> bool {
    let s = |k: &str| span.attr(k).and_then(AttrValue::as_str);
    matches!(s("gen_ai.operation.name"), Some("chat" | "text_completion" | "generate_content"))
        || matches!(s("llm.request.type"), Some("chat" | "completion"))
        || s("openinference.span.kind").is_some_and(|k| k.eq_ignore_ascii_case("LLM"))
        || span.name.contains("openai.chat.completion")
}

/// Whether the span is a tool call: GenAI `gen_ai.operation.name = execute_tool` or OpenInference
/// `openinference.span.kind = TOOL`.
pub fn is_tool_call(span: &SpanRecord) -> bool {
    let s = |k: &str| span.attr(k).and_then(AttrValue::as_str);
    s("gen_ai.operation.name") == Some("execute_tool")
        || s("openinference.span.kind").is_some_and(|k| k.eq_ignore_ascii_case("TOOL"))
}

/// A non-empty string attribute of the span.
fn text<'a>(span: &'a SpanRecord, key: &str) -> Option<&'a str> {
    span.attr(key).and_then(AttrValue::as_str).filter(|v| !v.is_empty())
}

/// The first non-empty string among `keys`, in order.
fn first_text<'a>(span: &'a SpanRecord, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| text(span, k))
}

/// The conversation a span belongs to, which becomes its sequence: `gen_ai.conversation.id`,
/// `session.id` on the span, the OpenLLMetry association property
/// `traceloop.association.properties.session_id`, then `session.id` on the span's resource.
/// A string or an integer; `None` when the span names none (its sequence is then its trace).
pub fn session_id(span: &SpanRecord) -> Option<String> {
    let as_key = |v: &AttrValue| match v {
        AttrValue::Str(s) if !s.is_empty() => Some(s.clone()),
        AttrValue::Int(i) => Some(i.to_string()),
        _ => None,
    };
    ["gen_ai.conversation.id", "session.id", "traceloop.association.properties.session_id"]
        .iter()
        .find_map(|k| span.attr(k).and_then(as_key))
        .or_else(|| find(&span.origin.resource, "session.id").and_then(as_key))
}

/// `success` (span status not error) and `duration_ms`, common to LLM and tool calls.
fn outcome(span: &SpanRecord, action: &mut Map<String, Value>) {
    action.insert("success".into(), Value::Bool(span.status_code != 2));
    let dur_ns = span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano);
    action.insert(
        "duration_ms".into(),
        serde_json::Number::from_f64(dur_ns as f64 / 1e6).map_or(Value::Null, Value::Number),
    );
}

/// A JSON object held in a string attribute.
fn json_object(span: &SpanRecord, key: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str(text(span, key)?) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

// ----- LLM calls -----

/// Request attributes under these prefixes are request parameters (`temperature`, `max_tokens`...).
const REQUEST_PARAM_PREFIXES: [&str; 2] = ["gen_ai.request.", "llm.request."];
/// Request attributes that are not parameters of the model (the model itself, the request kind).
const NOT_PARAMS: [&str; 3] = ["model", "model_name", "type"];

/// Fill the state and action of an LLM-call span.
pub fn llm_state_action(span: &SpanRecord, state: &mut Map<String, Value>, action: &mut Map<String, Value>) {
    let invocation = json_object(span, "llm.invocation_parameters");
    let requested = first_text(span, &["gen_ai.request.model", "llm.request.model_name"])
        .or_else(|| invocation.as_ref()?.get("model")?.as_str().filter(|m| !m.is_empty()))
        .or_else(|| text(span, "llm.request.model"));
    // OpenInference's `llm.model_name` is the response's model once there is a response, and the
    // requested one on some failed calls: on an error span it is not a response's.
    let response_model = first_text(span, &["gen_ai.response.model", "llm.response.model_name"])
        .or_else(|| text(span, "llm.model_name").filter(|_| span.status_code != 2));
    if let Some(model) = requested.or(response_model).or_else(|| text(span, "llm.model_name")) {
        state.insert("llm_model".into(), Value::String(model.into()));
    }
    if let Some(p) = first_text(span, &["gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"]) {
        state.insert("llm_provider".into(), Value::String(p.into()));
    }
    for (k, v) in &span.attributes {
        for prefix in REQUEST_PARAM_PREFIXES {
            if let Some(param) = k.strip_prefix(prefix)
                && !NOT_PARAMS.contains(&param)
                && !param.contains('.')
            {
                state.insert(param.to_string(), v.to_json());
            }
        }
    }
    if let Some(params) = invocation {
        for (k, v) in params {
            if k != "model" {
                state.entry(k).or_insert(v);
            }
        }
    }
    let prompt = text(span, "gen_ai.input.messages")
        .and_then(messages_from_json)
        .or_else(|| indexed_messages(span, "gen_ai.prompt."))
        .or_else(|| openinference_messages(span, "llm.input_messages."))
        .map(|p| with_system_instructions(span, p))
        .or_else(|| system_instructions(span).map(|m| Value::Array(vec![m])));
    if let Some(p) = prompt {
        state.insert("prompt".into(), p);
    }

    let output_json = text(span, "gen_ai.output.messages").and_then(|j| serde_json::from_str::<Value>(j).ok());
    let response = output_json
        .as_ref()
        .and_then(messages_from_value)
        .or_else(|| indexed_messages(span, "gen_ai.completion."))
        .or_else(|| openinference_messages(span, "llm.output_messages."));
    if let Some(r) = response {
        action.insert("llm_response".into(), r);
    }
    if let Some(m) = response_model {
        action.insert("llm_response_model".into(), Value::String(m.into()));
    }
    if let Some(stop) = stop_reason(span, output_json.as_ref()) {
        action.insert("llm_stop_reason".into(), Value::String(stop));
    }
    let int = |keys: &[&str]| keys.iter().find_map(|k| span.attr(k).and_then(AttrValue::as_int));
    if let Some(n) = int(&[
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",
        "llm.usage.prompt_tokens",
        "llm.token_count.prompt",
    ]) {
        action.insert("llm_tokens_in".into(), Value::from(n));
    }
    if let Some(n) = int(&[
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.usage.completion_tokens",
        "llm.token_count.completion",
    ]) {
        action.insert("llm_tokens_out".into(), Value::from(n));
    }
    outcome(span, action);
}

/// The reason the model stopped, from the first place that has one: `gen_ai.response.finish_reasons`
/// (its first entry), the older `gen_ai.completion.0.finish_reason`, OpenInference
/// `llm.finish_reason`, the first output message's `finish_reason` in `gen_ai.output.messages`
/// (streamed calls of the OpenTelemetry contrib instrumentation), OpenInference's
/// `llm.output_messages.0.message.finish_reason`, the Anthropic client's own
/// `anthropic.message.stop_reason`, and last the response body in OpenInference `output.value`
/// (`choices[0].finish_reason`, or `stop_reason`). The value is kept as the library wrote it.
fn stop_reason(span: &SpanRecord, output_messages: Option<&Value>) -> Option<String> {
    let first_finish = match span.attr("gen_ai.response.finish_reasons") {
        Some(AttrValue::Array(a)) => a.first().and_then(AttrValue::as_str).filter(|s| !s.is_empty()),
        Some(AttrValue::Str(s)) if !s.is_empty() => {
            // A JSON array in a string (some exporters flatten arrays), else the reason itself.
            match serde_json::from_str::<Value>(s) {
                Ok(Value::Array(items)) => {
                    return items.first().and_then(Value::as_str).map(str::to_string);
                }
                _ => Some(s.as_str()),
            }
        }
        _ => None,
    };
    first_finish
        .or_else(|| first_text(span, &["gen_ai.completion.0.finish_reason", "llm.finish_reason"]))
        .map(str::to_string)
        .or_else(|| {
            let first = output_messages?.as_array()?.first()?;
            first.get("finish_reason")?.as_str().filter(|s| !s.is_empty()).map(str::to_string)
        })
        .or_else(|| {
            first_text(span, &["llm.output_messages.0.message.finish_reason", "anthropic.message.stop_reason"])
                .map(str::to_string)
        })
        .or_else(|| {
            let body = json_object(span, "output.value")?;
            let from_choices = body
                .get("choices")
                .and_then(|c| c.get(0))
                .and_then(|c| c.get("finish_reason"))
                .and_then(Value::as_str);
            from_choices
                .or_else(|| body.get("stop_reason").and_then(Value::as_str))
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        })
}

/// `gen_ai.system_instructions` (a JSON list of parts, or a string) as one `system` message.
fn system_instructions(span: &SpanRecord) -> Option<Value> {
    let raw = text(span, "gen_ai.system_instructions")?;
    let content = match serde_json::from_str::<Value>(raw) {
        Ok(Value::Array(parts)) => parts_content(&parts),
        Ok(Value::String(s)) => Value::String(s),
        _ => Value::String(raw.to_string()),
    };
    let mut msg = Map::new();
    msg.insert("role".into(), Value::String("system".into()));
    msg.insert("content".into(), content);
    Some(Value::Object(msg))
}

/// The prompt with the system instructions first, when they travel apart from the messages
/// (`gen_ai.system_instructions`) and the messages have no system message of their own.
fn with_system_instructions(span: &SpanRecord, prompt: Value) -> Value {
    let Value::Array(mut messages) = prompt else { return prompt };
    let has_system = messages.iter().any(|m| m.get("role").and_then(Value::as_str) == Some("system"));
    if !has_system && let Some(sys) = system_instructions(span) {
        messages.insert(0, sys);
    }
    Value::Array(messages)
}

/// Parts (`{"type": "text", "content": ...}`) as one string when they are all text, else as given.
fn parts_content(parts: &[Value]) -> Value {
    let texts: Vec<&str> = parts.iter().filter_map(|p| p.get("content").and_then(Value::as_str)).collect();
    if texts.len() == parts.len() { Value::String(texts.join("")) } else { Value::Array(parts.to_vec()) }
}

/// `gen_ai.input.messages` / `gen_ai.output.messages`: a JSON array of messages whose content is a
/// string or a list of parts (`{"type": "text", "content": ...}`), reduced to `{role, content}`.
fn messages_from_json(json: &str) -> Option<Value> {
    messages_from_value(&serde_json::from_str::<Value>(json).ok()?)
}

fn messages_from_value(v: &Value) -> Option<Value> {
    let items = v.as_array()?;
    let out = items
        .iter()
        .map(|m| {
            let role = m.get("role").cloned().unwrap_or(Value::Null);
            let content = match (m.get("content"), m.get("parts")) {
                (Some(c), _) => c.clone(),
                (None, Some(Value::Array(parts))) => parts_content(parts),
                _ => Value::Null,
            };
            message(role, content)
        })
        .collect();
    Some(Value::Array(out))
}

fn message(role: Value, content: Value) -> Value {
    let mut m = Map::new();
    m.insert("role".into(), role);
    m.insert("content".into(), content);
    Value::Object(m)
}

/// Flattened messages `<prefix>N.role` / `<prefix>N.content` (older GenAI conventions).
fn indexed_messages(span: &SpanRecord, prefix: &str) -> Option<Value> {
    collect_indexed(span, prefix, "role", "content", None)
}

/// OpenInference `llm.input_messages.N.message.role` / `.message.content`, or the text parts
/// `.message.contents.M.message_content.text` joined when there is no `.message.content`.
fn openinference_messages(span: &SpanRecord, prefix: &str) -> Option<Value> {
    collect_indexed(span, prefix, "message.role", "message.content", Some("message.contents."))
}

#[derive(Default)]
struct Slot {
    role: Option<Value>,
    content: Option<Value>,
    /// Text parts by their index, when the content is given as parts.
    parts: BTreeMap<u32, String>,
}

fn collect_indexed(
    span: &SpanRecord,
    prefix: &str,
    role_key: &str,
    content_key: &str,
    parts_prefix: Option<&str>,
) -> Option<Value> {
    let mut by_index: BTreeMap<u32, Slot> = BTreeMap::new();
    for (k, v) in &span.attributes {
        let Some(rest) = k.strip_prefix(prefix) else { continue };
        let Some((n, field)) = rest.split_once('.') else { continue };
        let Ok(n) = n.parse::<u32>() else { continue };
        if field == role_key {
            by_index.entry(n).or_default().role = Some(v.to_json());
        } else if field == content_key {
            by_index.entry(n).or_default().content = Some(v.to_json());
        } else if let Some(part) = parts_prefix.and_then(|p| field.strip_prefix(p))
            && let Some((m, "message_content.text")) = part.split_once('.')
            && let (Ok(m), Some(t)) = (m.parse::<u32>(), v.as_str())
        {
            by_index.entry(n).or_default().parts.insert(m, t.to_string());
        }
    }
    if by_index.is_empty() {
        return None;
    }
    Some(Value::Array(
        by_index
            .into_values()
            .map(|slot| {
                let content = slot.content.unwrap_or_else(|| {
                    if slot.parts.is_empty() {
                        Value::Null
                    } else {
                        Value::String(slot.parts.into_values().collect::<Vec<_>>().join(""))
                    }
                });
                message(slot.role.unwrap_or(Value::Null), content)
            })
            .collect(),
    ))
}

// ----- tool calls -----

/// A value that may be JSON text: the parsed value when it is a JSON object or array, else as given.
fn maybe_json(v: &AttrValue) -> Value {
    if let AttrValue::Str(s) = v {
        let t = s.trim_start();
        if (t.starts_with('{') || t.starts_with('['))
            && let Ok(parsed) = serde_json::from_str::<Value>(s)
        {
            return parsed;
        }
    }
    v.to_json()
}

/// Fill the state and action of a tool-call span: state `tool_name`, `tool_call_id`,
/// `tool_arguments`; action `tool_result`, `success`, `duration_ms`.
pub fn tool_state_action(span: &SpanRecord, state: &mut Map<String, Value>, action: &mut Map<String, Value>) {
    let first = |keys: &[&str]| keys.iter().find_map(|k| span.attr(k).filter(|v| !matches!(v, AttrValue::Empty)));
    let name = first_text(span, &["gen_ai.tool.name", "tool.name", "tool_call.function.name"]).or_else(|| {
        // An `execute_tool` span is named `execute_tool {gen_ai.tool.name}`; an OpenInference TOOL
        // span after its tool.
        match span.name.strip_prefix("execute_tool ") {
            Some(n) => Some(n).filter(|n| !n.is_empty()),
            None => Some(span.name.as_str()).filter(|n| !n.is_empty() && text(span, "gen_ai.operation.name") != Some("execute_tool")),
        }
    });
    if let Some(name) = name {
        state.insert("tool_name".into(), Value::String(name.into()));
    }
    if let Some(id) = first(&["gen_ai.tool.call.id", "tool_call.id", "tool.id"]) {
        state.insert("tool_call_id".into(), id.to_json());
    }
    // OpenInference's tracer helpers write the tool's JSON schema into `tool.parameters` and the
    // call's arguments into `input.value`, so `input.value` comes first.
    if let Some(args) = first(&["gen_ai.tool.call.arguments", "tool_call.function.arguments", "input.value", "tool.parameters"]) {
        state.insert("tool_arguments".into(), maybe_json(args));
    }
    if let Some(result) = first(&["gen_ai.tool.call.result", "output.value"]) {
        action.insert("tool_result".into(), maybe_json(result));
    }
    outcome(span, action);
}
