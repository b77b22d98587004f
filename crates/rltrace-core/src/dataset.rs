//! The rows trainers read (DESIGN section 7): which shapes exist, their options, how a triplet's
//! prompt and completion are formed, which triplets a shape keeps, DPO pairing and stepwise
//! rows. Pure: the caller streams triplets in and writes the rows out.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::export::TripletView;

/// Version of the dataset formats (the triplets line is format v1; the shapes came with v2).
pub const DATASET_FORMAT_VERSION: u32 = 2;
/// Default `threshold`.
pub const DEFAULT_THRESHOLD: f64 = 0.5;
/// Default `margin`.
pub const DEFAULT_MARGIN: f64 = 0.1;
/// Slack of the `margin` comparison, so that `0.9 - 0.8` counts as a difference of 0.1.
pub const MARGIN_EPSILON: f64 = 1e-9;

/// The rows of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// One Triplet per triplet.
    #[default]
    Triplets,
    /// Agent Lightning's `Triplet` model.
    AgentLightning,
    /// TRL conversational language modeling: `messages`.
    TrlSft,
    /// TRL prompt-completion: `prompt`, `completion`, `reward`.
    TrlPromptCompletion,
    /// TRL unpaired preference: `prompt`, `completion`, `label`.
    TrlKto,
    /// TRL preference: `prompt`, `chosen`, `rejected`.
    TrlDpo,
    /// TRL stepwise supervision: `prompt`, `completions`, `labels`.
    TrlStepwise,
}

impl Shape {
    /// Every shape, in the order of section 7.
    pub const ALL: [Shape; 7] =
        [Shape::Triplets, Shape::AgentLightning, Shape::TrlSft, Shape::TrlPromptCompletion, Shape::TrlKto, Shape::TrlDpo, Shape::TrlStepwise];

    /// Its name in `shape=`.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Triplets => "triplets",
            Shape::AgentLightning => "agentlightning",
            Shape::TrlSft => "trl-sft",
            Shape::TrlPromptCompletion => "trl-prompt-completion",
            Shape::TrlKto => "trl-kto",
            Shape::TrlDpo => "trl-dpo",
            Shape::TrlStepwise => "trl-stepwise",
        }
    }

    /// The shape named `s`.
    pub fn parse(s: &str) -> Result<Shape, OptionError> {
        Shape::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            OptionError::new("shape", format!("unknown shape {s:?}; one of {}", Shape::ALL.map(Shape::name).join(", ")))
        })
    }
}

/// File formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// One JSON object a line.
    #[default]
    Jsonl,
    /// Apache Parquet, zstd.
    Parquet,
}

impl Format {
    /// Its name in `format=`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
        }
    }

    /// The format named `s`.
    pub fn parse(s: &str) -> Result<Format, OptionError> {
        match s {
            "jsonl" => Ok(Format::Jsonl),
            "parquet" => Ok(Format::Parquet),
            _ => Err(OptionError::new("format", format!("unknown format {s:?}; one of jsonl, parquet"))),
        }
    }
}

/// A bad shape, format or option: the parameter it concerns and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct OptionError {
    /// The parameter (`shape`, `threshold`, `prompt_field`, ...).
    pub param: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl OptionError {
    fn new(param: &'static str, message: String) -> OptionError {
        OptionError { param, message }
    }
}

/// A JSON pointer (RFC 6901) into the Triplet object, checked when parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    /// Parse `text`: empty (the whole Triplet) or `/`-separated tokens with `~0` and `~1` escapes.
    pub fn parse(param: &'static str, text: &str) -> Result<Pointer, OptionError> {
        if text.is_empty() {
            return Err(OptionError::new(param, "must be a JSON pointer such as /state/task_description, got an empty string".into()));
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(OptionError::new(param, format!("must be a JSON pointer starting with '/', got {text:?}")));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut tok = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => tok.push('~'),
                        Some('1') => tok.push('/'),
                        _ => return Err(OptionError::new(param, format!("invalid escape in JSON pointer {text:?} (only ~0 and ~1)"))),
                    }
                } else {
                    tok.push(c);
                }
            }
            tokens.push(tok);
        }
        Ok(Pointer { text: text.to_string(), tokens })
    }

    /// The pointer as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn resolve<'v>(&self, mut v: &'v Value) -> Option<&'v Value> {
        for t in &self.tokens {
            v = match v {
                Value::Object(m) => m.get(t)?,
                Value::Array(a) => a.get(t.parse::<usize>().ok().filter(|_| t == "0" || !t.starts_with('0'))?)?,
                _ => return None,
            };
        }
        Some(v)
    }
}

/// The options of section 7.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Reward at or above which a triplet is good (`trl-sft`, `trl-kto`, `trl-stepwise`).
    pub threshold: f64,
    /// Least reward difference of a DPO pair.
    pub margin: f64,
    /// Where the prompt comes from instead of the default.
    pub prompt_field: Option<Pointer>,
    /// Where the completion comes from instead of the default.
    pub completion_field: Option<Pointer>,
    /// Plain strings instead of message lists.
    pub text: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { threshold: DEFAULT_THRESHOLD, margin: DEFAULT_MARGIN, prompt_field: None, completion_field: None, text: false }
    }
}

/// Check a `threshold` or `margin`: a finite number in [0, 1].
pub fn unit_option(param: &'static str, v: f64) -> Result<f64, OptionError> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(OptionError::new(param, format!("must be a number in [0, 1], got {v}")))
    }
}

/// Parse a number option given as text.
pub fn parse_unit_option(param: &'static str, text: &str) -> Result<f64, OptionError> {
    let v: f64 = text.trim().parse().map_err(|_| OptionError::new(param, format!("must be a number in [0, 1], got {text:?}")))?;
    unit_option(param, v)
}

impl Options {
    /// The options as recorded in a manifest.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "threshold": self.threshold,
            "margin": self.margin,
            "prompt_field": self.prompt_field.as_ref().map(Pointer::as_str),
            "completion_field": self.completion_field.as_ref().map(Pointer::as_str),
            "text": self.text,
        })
    }

    /// The options recorded in a manifest (the inverse of [`Options::to_json`]).
    pub fn from_json(v: &Value) -> Result<Options, OptionError> {
        let Value::Object(m) = v else { return Err(OptionError::new("options", "must be an object".into())) };
        let mut o = Options::default();
        for (k, val) in m {
            match k.as_str() {
                "threshold" => o.threshold = unit_option("threshold", val.as_f64().ok_or_else(|| OptionError::new("threshold", "must be a number".into()))?)?,
                "margin" => o.margin = unit_option("margin", val.as_f64().ok_or_else(|| OptionError::new("margin", "must be a number".into()))?)?,
                "prompt_field" => o.prompt_field = opt_pointer("prompt_field", val)?,
                "completion_field" => o.completion_field = opt_pointer("completion_field", val)?,
                "text" => o.text = val.as_bool().ok_or_else(|| OptionError::new("text", "must be true or false".into()))?,
                _ => return Err(OptionError::new("options", format!("unknown option {k:?}"))),
            }
        }
        Ok(o)
    }
}

fn opt_pointer(param: &'static str, v: &Value) -> Result<Option<Pointer>, OptionError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Pointer::parse(param, s).map(Some),
        _ => Err(OptionError::new(param, "must be a JSON pointer string".into())),
    }
}

/// One chat message; `content` is always a string (non-string content is written as compact
/// JSON with sorted keys), as TRL's chat templates expect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, `tool`, ...
    pub role: String,
    /// The text.
    pub content: String,
}

/// A prompt or completion: a message list (conversational) or a string (`text=true`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Text {
    /// Conversational form.
    Messages(Vec<Message>),
    /// Standard form.
    Plain(String),
}

impl Text {
    /// Canonical JSON text (the DPO grouping key).
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Approximate bytes held.
    pub fn size(&self) -> usize {
        match self {
            Text::Plain(s) => s.len(),
            Text::Messages(m) => m.iter().map(|m| m.role.len() + m.content.len() + 16).sum(),
        }
    }

    fn append(&self, other: &Text) -> Text {
        match (self, other) {
            (Text::Messages(a), Text::Messages(b)) => Text::Messages(a.iter().chain(b).cloned().collect()),
            (a, b) => Text::Plain(format!("{}{}", a.plain(), b.plain())),
        }
    }

    fn plain(&self) -> String {
        match self {
            Text::Plain(s) => s.clone(),
            Text::Messages(m) => m.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n"),
        }
    }
}

/// Compact JSON with object keys sorted at every level.
pub fn canonical_json(v: &Value) -> String {
    // Written by hand so that the text never depends on whether serde_json's `preserve_order`
    // is on somewhere in the build.
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(k) {
                    write_canonical(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Why a triplet gave no row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Skip {
    /// No effective reward, and the shape needs one.
    NoReward,
    /// Reward below `threshold` (`trl-sft`).
    BelowThreshold,
    /// `prompt_field` names nothing in this triplet.
    PromptFieldMissing,
    /// `completion_field` names nothing in this triplet.
    CompletionFieldMissing,
    /// No other completion of the same prompt to pair with, or not its highest or lowest.
    Unpaired,
    /// The stored state or action is not valid JSON.
    InvalidJson,
}

impl Skip {
    /// Its name in the manifest's `skipped` counts.
    pub fn name(self) -> &'static str {
        match self {
            Skip::NoReward => "no_reward",
            Skip::BelowThreshold => "below_threshold",
            Skip::PromptFieldMissing => "prompt_field_missing",
            Skip::CompletionFieldMissing => "completion_field_missing",
            Skip::Unpaired => "unpaired",
            Skip::InvalidJson => "invalid_json",
        }
    }
}

/// The Triplet object of a view, parsed (for JSON pointers and the Agent Lightning metadata).
pub fn triplet_object(t: &TripletView) -> Result<Value, Skip> {
    crate::export::triplet_value(t).map_err(|_| Skip::InvalidJson)
}

fn content_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => canonical_json(other),
    }
}

/// A message list read from a JSON value, when it is one (an array of objects with a `role`).
fn messages_of(v: &Value) -> Option<Vec<Message>> {
    let Value::Array(items) = v else { return None };
    items
        .iter()
        .map(|m| {
            let role = m.get("role")?.as_str()?.to_string();
            let content = m.get("content").map(content_text).unwrap_or_default();
            Some(Message { role, content })
        })
        .collect()
}

/// Whether a triplet is an LLM call as section 7 reads it: its state has a `prompt` message list
/// and its action an `llm_response` message list.
pub fn llm_messages(state: &Value, action: &Value) -> Option<(Vec<Message>, Vec<Message>)> {
    Some((messages_of(state.get("prompt")?)?, messages_of(action.get("llm_response")?)?))
}

/// The prompt and completion of one triplet.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptCompletion {
    /// The prompt.
    pub prompt: Text,
    /// The completion.
    pub completion: Text,
}

fn field_text(v: &Value, role: &str, text: bool) -> Text {
    match (messages_of(v), text) {
        (Some(m), false) => Text::Messages(m),
        (Some(m), true) => Text::Messages(m).plain_text(),
        (None, false) => Text::Messages(vec![Message { role: role.into(), content: content_text(v) }]),
        (None, true) => Text::Plain(content_text(v)),
    }
}

impl Text {
    fn plain_text(self) -> Text {
        Text::Plain(self.plain())
    }
}

/// Form a triplet's prompt and completion (section 7): an LLM call's messages, or the state and
/// action as compact JSON with sorted keys in a `user` and an `assistant` message; the options'
/// JSON pointers choose other fields; `text` gives plain strings.
pub fn prompt_completion(t: &TripletView, o: &Options) -> Result<PromptCompletion, Skip> {
    let state: Value = serde_json::from_str(&t.state).map_err(|_| Skip::InvalidJson)?;
    let action: Value = serde_json::from_str(&t.action).map_err(|_| Skip::InvalidJson)?;
    let whole = if o.prompt_field.is_some() || o.completion_field.is_some() { Some(triplet_object(t)?) } else { None };
    let llm = llm_messages(&state, &action);
    let prompt = match (&o.prompt_field, &whole) {
        (Some(p), Some(w)) => field_text(p.resolve(w).ok_or(Skip::PromptFieldMissing)?, "user", o.text),
        _ => match &llm {
            Some((p, _)) if o.text => Text::Messages(p.clone()).plain_text(),
            Some((p, _)) => Text::Messages(p.clone()),
            None => field_text(&Value::String(canonical_json(&state)), "user", o.text),
        },
    };
    let completion = match (&o.completion_field, &whole) {
        (Some(p), Some(w)) => field_text(p.resolve(w).ok_or(Skip::CompletionFieldMissing)?, "assistant", o.text),
        _ => match &llm {
            Some((_, c)) if o.text => Text::Messages(c.clone()).plain_text(),
            Some((_, c)) => Text::Messages(c.clone()),
            None => field_text(&Value::String(canonical_json(&action)), "assistant", o.text),
        },
    };
    Ok(PromptCompletion { prompt, completion })
}

/// A row of a TRL shape (the `triplets` and `agentlightning` rows are written from the view).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TrlRow {
    /// `trl-sft` in conversational form.
    Sft {
        /// Prompt messages then the completion.
        messages: Vec<Message>,
    },
    /// `trl-sft` with `text=true`.
    SftText {
        /// Prompt then completion.
        text: String,
    },
    /// `trl-prompt-completion`.
    PromptCompletion {
        /// Prompt.
        prompt: Text,
        /// Completion.
        completion: Text,
        /// Effective reward or null.
        reward: Option<f64>,
    },
    /// `trl-kto`.
    Kto {
        /// Prompt.
        prompt: Text,
        /// Completion.
        completion: Text,
        /// Reward at or above `threshold`.
        label: bool,
    },
    /// `trl-dpo`.
    Dpo {
        /// The shared prompt.
        prompt: Text,
        /// The highest-reward completion.
        chosen: Text,
        /// The lowest-reward completion.
        rejected: Text,
    },
    /// `trl-stepwise`.
    Stepwise {
        /// The first step's prompt.
        prompt: Text,
        /// Each step's completion, in order.
        completions: Vec<Text>,
        /// Each step's reward at or above `threshold`.
        labels: Vec<bool>,
    },
}

/// The row of one triplet for the per-triplet TRL shapes (`trl-sft`, `trl-prompt-completion`,
/// `trl-kto`); `Err` says why it gives none.
pub fn triplet_row(shape: Shape, t: &TripletView, o: &Options) -> Result<TrlRow, Skip> {
    let reward = t.effective.reward;
    match shape {
        Shape::TrlSft => {
            let r = reward.ok_or(Skip::NoReward)?;
            if r < o.threshold {
                return Err(Skip::BelowThreshold);
            }
            let pc = prompt_completion(t, o)?;
            Ok(match pc.prompt.append(&pc.completion) {
                Text::Messages(messages) => TrlRow::Sft { messages },
                Text::Plain(text) => TrlRow::SftText { text },
            })
        }
        Shape::TrlPromptCompletion => {
            let pc = prompt_completion(t, o)?;
            Ok(TrlRow::PromptCompletion { prompt: pc.prompt, completion: pc.completion, reward })
        }
        Shape::TrlKto => {
            let r = reward.ok_or(Skip::NoReward)?;
            let pc = prompt_completion(t, o)?;
            Ok(TrlRow::Kto { prompt: pc.prompt, completion: pc.completion, label: r >= o.threshold })
        }
        _ => Err(Skip::Unpaired),
    }
}

/// The Agent Lightning `Triplet` of one triplet: `prompt`, `response`, `reward`, `metadata`.
pub fn agentlightning_row(t: &TripletView, o: &Options) -> Result<Value, Skip> {
    let state: Value = serde_json::from_str(&t.state).map_err(|_| Skip::InvalidJson)?;
    let action: Value = serde_json::from_str(&t.action).map_err(|_| Skip::InvalidJson)?;
    let pc = prompt_completion(t, &Options { text: false, ..o.clone() })?;
    let mut prompt = serde_json::Map::new();
    prompt.insert("raw_content".into(), serde_json::to_value(&pc.prompt).unwrap_or(Value::Null));
    if let Some(ids) = state.get("prompt_token_ids").filter(|v| v.is_array()) {
        prompt.insert("token_ids".into(), ids.clone());
    }
    let mut response = serde_json::Map::new();
    response.insert("raw_content".into(), serde_json::to_value(&pc.completion).unwrap_or(Value::Null));
    if let Some(ids) = action.get("response_token_ids").filter(|v| v.is_array()) {
        response.insert("token_ids".into(), ids.clone());
    }
    if let Some(lp) = action.get("logprobs").or_else(|| action.get("response_logprobs")).filter(|v| v.is_array()) {
        response.insert("logprobs".into(), lp.clone());
    }
    let mut meta = serde_json::Map::new();
    meta.insert("triplet_id".into(), Value::String(t.triplet_id.clone()));
    meta.insert("sequence_id".into(), Value::String(t.sequence_id.clone()));
    meta.insert("sequence_index".into(), Value::from(t.sequence_index));
    meta.insert("trace_id".into(), Value::String(t.trace_id.clone()));
    meta.insert("span_id".into(), Value::String(t.span_id.clone()));
    meta.insert("timestamp_utc".into(), Value::String(crate::time::format_micros(t.timestamp)));
    meta.insert("reward_sources".into(), Value::Object(t.effective.sources.iter().map(|(k, v)| (k.clone(), Value::from(v.value))).collect()));
    meta.insert("reward_source".into(), t.effective.newest_source.clone().map_or(Value::Null, Value::String));
    if llm_messages(&state, &action).is_some() {
        let mut req = serde_json::Map::new();
        if let Value::Object(s) = &state {
            for (k, v) in s {
                if k != "prompt" && k != "prompt_token_ids" {
                    req.insert(k.clone(), v.clone());
                }
            }
        }
        let mut resp = serde_json::Map::new();
        if let Value::Object(a) = &action {
            for (k, v) in a {
                if k != "llm_response" && k != "response_token_ids" && k != "logprobs" && k != "response_logprobs" {
                    resp.insert(k.clone(), v.clone());
                }
            }
        }
        meta.insert("request".into(), Value::Object(req));
        meta.insert("response".into(), Value::Object(resp));
    }
    Ok(serde_json::json!({
        "prompt": Value::Object(prompt),
        "response": Value::Object(response),
        "reward": t.effective.reward,
        "metadata": Value::Object(meta),
    }))
}

/// The steps of one sequence for `trl-stepwise`, gathered one triplet at a time (in sequence
/// order) and bounded.
#[derive(Debug, Default)]
pub struct Stepwise {
    sequence_id: Option<String>,
    prompt: Option<Text>,
    completions: Vec<Text>,
    labels: Vec<bool>,
    bytes: usize,
}

/// A bound of the export's memory was reached.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BoundError {
    /// A sequence has more steps than a stepwise row may hold.
    #[error("trl-stepwise: sequence {sequence_id:?} has more than {max} rewarded steps (the bound of one row); narrow the export with filters")]
    Steps {
        /// The sequence.
        sequence_id: String,
        /// The bound.
        max: usize,
    },
    /// DPO pairing saw more distinct prompts than it may keep.
    #[error("trl-dpo: more than {max} distinct prompts (the pairing bound); narrow the export with filters (sequence_id, role, since, until)")]
    Prompts {
        /// The bound.
        max: usize,
    },
    /// DPO pairs waiting for their second completion hold more than the bound.
    #[error("trl-dpo: pairs waiting for their second completion hold more than {max} bytes; narrow the export with filters")]
    PendingBytes {
        /// The bound in bytes.
        max: usize,
    },
}

impl Stepwise {
    /// Add one triplet (they come in sequence order, sequence by sequence); returns the finished
    /// row of the previous sequence when this one starts another.
    pub fn push(&mut self, t: &TripletView, o: &Options, max_steps: usize) -> Result<(Option<TrlRow>, Option<Skip>), BoundError> {
        let done = if self.sequence_id.as_deref() != Some(t.sequence_id.as_str()) {
            let row = self.finish();
            self.sequence_id = Some(t.sequence_id.clone());
            row
        } else {
            None
        };
        let Some(r) = t.effective.reward else { return Ok((done, Some(Skip::NoReward))) };
        let pc = match prompt_completion(t, o) {
            Ok(pc) => pc,
            Err(skip) => return Ok((done, Some(skip))),
        };
        if self.completions.len() >= max_steps {
            return Err(BoundError::Steps { sequence_id: t.sequence_id.clone(), max: max_steps });
        }
        if self.prompt.is_none() {
            self.bytes += pc.prompt.size();
            self.prompt = Some(pc.prompt);
        }
        self.bytes += pc.completion.size();
        self.completions.push(pc.completion);
        self.labels.push(r >= o.threshold);
        Ok((done, None))
    }

    /// Bytes held for the current sequence.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The row of the sequence gathered so far (none when it had no rewarded step).
    pub fn finish(&mut self) -> Option<TrlRow> {
        let prompt = self.prompt.take();
        let completions = std::mem::take(&mut self.completions);
        let labels = std::mem::take(&mut self.labels);
        self.bytes = 0;
        prompt.map(|prompt| TrlRow::Stepwise { prompt, completions, labels })
    }
}

/// The grouping key of a DPO prompt: the first 16 bytes of the SHA-256 of its canonical JSON.
pub fn prompt_key(p: &Text) -> [u8; 16] {
    let d = Sha256::digest(p.canonical().as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

#[derive(Debug, Clone, Copy)]
struct Extremes {
    hi: (f64, u64),
    lo: (f64, u64),
}

/// First pass of DPO pairing: per prompt only the highest and the lowest reward seen and where
/// (the position of the triplet in the export), bounded by the number of distinct prompts.
#[derive(Debug)]
pub struct DpoPlanner {
    prompts: HashMap<[u8; 16], Extremes>,
    max_prompts: usize,
}

/// Which triplets (by position in the export) make DPO pairs: position -> (pair, is chosen).
#[derive(Debug, Default)]
pub struct DpoPlan {
    /// Position -> (pair number, chosen).
    pub members: HashMap<u64, (u32, bool)>,
    /// Pairs planned.
    pub pairs: u64,
}

impl DpoPlanner {
    /// A planner keeping at most `max_prompts` distinct prompts.
    pub fn new(max_prompts: usize) -> DpoPlanner {
        DpoPlanner { prompts: HashMap::new(), max_prompts }
    }

    /// Distinct prompts kept.
    pub fn prompts(&self) -> usize {
        self.prompts.len()
    }

    /// Note the triplet at position `pos` with prompt `key` and reward `reward`. Ties keep the
    /// first seen, so the plan is the same for the same stream.
    pub fn observe(&mut self, key: [u8; 16], reward: f64, pos: u64) -> Result<(), BoundError> {
        let n = self.prompts.len();
        match self.prompts.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let x = e.get_mut();
                if reward > x.hi.0 {
                    x.hi = (reward, pos);
                }
                if reward < x.lo.0 {
                    x.lo = (reward, pos);
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                if n >= self.max_prompts {
                    return Err(BoundError::Prompts { max: self.max_prompts });
                }
                e.insert(Extremes { hi: (reward, pos), lo: (reward, pos) });
            }
        }
        Ok(())
    }

    /// The pairs: every prompt whose highest and lowest rewards differ by at least `margin`.
    pub fn plan(self, margin: f64) -> DpoPlan {
        let mut pairs: Vec<(u64, u64)> = self
            .prompts
            .into_values()
            .filter(|x| x.hi.1 != x.lo.1 && x.hi.0 - x.lo.0 >= margin - MARGIN_EPSILON)
            .map(|x| (x.hi.1, x.lo.1))
            .collect();
        // Number the pairs by where their later member comes, the order rows are written in.
        pairs.sort_by_key(|(a, b)| (*a.max(b), *a.min(b)));
        let mut plan = DpoPlan { members: HashMap::with_capacity(pairs.len() * 2), pairs: pairs.len() as u64 };
        for (i, (hi, lo)) in pairs.into_iter().enumerate() {
            let id = u32::try_from(i).unwrap_or(u32::MAX);
            plan.members.insert(hi, (id, true));
            plan.members.insert(lo, (id, false));
        }
        plan
    }
}

/// Second pass of DPO pairing: holds the first member of each pair until its second arrives.
#[derive(Debug, Default)]
pub struct DpoPairer {
    waiting: HashMap<u32, (bool, PromptCompletion)>,
    bytes: usize,
    max_bytes: usize,
}

impl DpoPairer {
    /// A pairer holding at most `max_bytes` of waiting completions.
    pub fn new(max_bytes: usize) -> DpoPairer {
        DpoPairer { waiting: HashMap::new(), bytes: 0, max_bytes }
    }

    /// A planned member arrived; returns the pair's row when it is the second.
    pub fn member(&mut self, pair: u32, chosen: bool, pc: PromptCompletion) -> Result<Option<TrlRow>, BoundError> {
        match self.waiting.remove(&pair) {
            Some((first_chosen, first)) => {
                self.bytes = self.bytes.saturating_sub(first.prompt.size() + first.completion.size());
                let (c, r) = if first_chosen { (first.completion, pc.completion) } else { (pc.completion, first.completion) };
                debug_assert!(first_chosen != chosen);
                Ok(Some(TrlRow::Dpo { prompt: first.prompt, chosen: c, rejected: r }))
            }
            None => {
                let size = pc.prompt.size() + pc.completion.size();
                if self.bytes + size > self.max_bytes {
                    return Err(BoundError::PendingBytes { max: self.max_bytes });
                }
                self.bytes += size;
                self.waiting.insert(pair, (chosen, pc));
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::Effective;

    fn view(id: &str, seq: &str, state: &str, action: &str, reward: Option<f64>) -> TripletView {
        TripletView {
            triplet_id: id.into(),
            sequence_id: seq.into(),
            sequence_index: 0,
            timestamp: 0,
            state: state.into(),
            action: action.into(),
            effective: Effective { reward, ..Effective::default() },
            trace_id: "ab".into(),
            span_id: "cd".into(),
            propensity: None,
            sampling_probability: None,
            role: None,
            sequence_end: false,
        }
    }

    #[test]
    fn shapes_formats_and_options_parse_or_name_their_parameter() {
        for s in Shape::ALL {
            assert_eq!(Shape::parse(s.name()), Ok(s));
        }
        assert_eq!(Shape::parse("trl-ppo").map_err(|e| e.param), Err("shape"));
        assert_eq!(Format::parse("parquet"), Ok(Format::Parquet));
        assert_eq!(Format::parse("csv").map_err(|e| e.param), Err("format"));
        assert_eq!(parse_unit_option("threshold", "1"), Ok(1.0));
        assert_eq!(parse_unit_option("threshold", "0"), Ok(0.0));
        for bad in ["1.0001", "-0.1", "NaN", "inf", "x", ""] {
            assert_eq!(parse_unit_option("threshold", bad).map_err(|e| e.param), Err("threshold"), "{bad}");
        }
        for bad in ["", "state", "/state/~2", "/a~"] {
            assert!(Pointer::parse("prompt_field", bad).is_err(), "{bad}");
        }
        let p = Pointer::parse("prompt_field", "/state/a~1b/~0c/1").expect("valid");
        let v = serde_json::json!({"state": {"a/b": {"~c": ["x", "y"]}}});
        assert_eq!(p.resolve(&v), Some(&Value::String("y".into())));
        let o = Options { prompt_field: Some(p), text: true, ..Options::default() };
        assert_eq!(Options::from_json(&o.to_json()), Ok(o));
        assert!(Options::from_json(&serde_json::json!({"tresh": 1})).is_err());
    }

    #[test]
    fn prompt_and_completion_of_llm_calls_and_other_triplets() {
        let llm = view(
            "a",
            "s",
            r#"{"llm_model":"m","prompt":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#,
            r#"{"llm_response":[{"role":"assistant","content":"hello"}],"success":true}"#,
            Some(1.0),
        );
        let pc = prompt_completion(&llm, &Options::default()).expect("formed");
        assert_eq!(pc.prompt, Text::Messages(vec![Message { role: "system".into(), content: "be brief".into() }, Message { role: "user".into(), content: "hi".into() }]));
        assert_eq!(pc.completion, Text::Messages(vec![Message { role: "assistant".into(), content: "hello".into() }]));
        let t = prompt_completion(&llm, &Options { text: true, ..Options::default() }).expect("formed");
        assert_eq!(t.prompt, Text::Plain("be brief\nhi".into()));
        let other = view("b", "s", r#"{"z":1,"a":{"y":2,"b":3}}"#, r#"{"success":true}"#, None);
        let pc = prompt_completion(&other, &Options::default()).expect("formed");
        assert_eq!(pc.prompt, Text::Messages(vec![Message { role: "user".into(), content: r#"{"a":{"b":3,"y":2},"z":1}"#.into() }]));
        assert_eq!(pc.completion, Text::Messages(vec![Message { role: "assistant".into(), content: r#"{"success":true}"#.into() }]));
        let o = Options { prompt_field: Pointer::parse("prompt_field", "/state/z").ok(), completion_field: Pointer::parse("completion_field", "/nope").ok(), ..Options::default() };
        assert_eq!(prompt_completion(&other, &o), Err(Skip::CompletionFieldMissing));
        let o = Options { prompt_field: Pointer::parse("prompt_field", "/state/a").ok(), ..Options::default() };
        assert_eq!(prompt_completion(&other, &o).expect("formed").prompt, Text::Messages(vec![Message { role: "user".into(), content: r#"{"b":3,"y":2}"#.into() }]));
    }

    #[test]
    fn rows_keep_what_their_shape_needs() {
        let o = Options::default();
        let good = view("a", "s", "{}", "{}", Some(0.5));
        let bad = view("b", "s", "{}", "{}", Some(0.4999));
        let none = view("c", "s", "{}", "{}", None);
        assert!(matches!(triplet_row(Shape::TrlSft, &good, &o), Ok(TrlRow::Sft { ref messages }) if messages.len() == 2));
        assert_eq!(triplet_row(Shape::TrlSft, &bad, &o), Err(Skip::BelowThreshold));
        assert_eq!(triplet_row(Shape::TrlSft, &none, &o), Err(Skip::NoReward));
        assert_eq!(triplet_row(Shape::TrlKto, &none, &o), Err(Skip::NoReward));
        assert!(matches!(triplet_row(Shape::TrlKto, &bad, &o), Ok(TrlRow::Kto { label: false, .. })));
        assert!(matches!(triplet_row(Shape::TrlPromptCompletion, &none, &o), Ok(TrlRow::PromptCompletion { reward: None, .. })));
    }

    #[test]
    fn dpo_pairs_highest_against_lowest_with_margin_and_bounds() {
        let key = prompt_key(&Text::Plain("p".into()));
        let other = prompt_key(&Text::Plain("q".into()));
        let mut p = DpoPlanner::new(2);
        p.observe(key, 0.8, 0).expect("room");
        p.observe(other, 0.5, 1).expect("room");
        p.observe(key, 0.9, 2).expect("room");
        p.observe(key, 0.8, 3).expect("room");
        p.observe(other, 0.45, 4).expect("room");
        assert_eq!(p.observe(prompt_key(&Text::Plain("r".into())), 0.1, 5), Err(BoundError::Prompts { max: 2 }));
        let plan = p.plan(0.1);
        // 0.9 - 0.8 counts as 0.1; 0.5 - 0.45 does not.
        assert_eq!(plan.pairs, 1);
        assert_eq!(plan.members.get(&2), Some(&(0, true)));
        assert_eq!(plan.members.get(&0), Some(&(0, false)), "ties keep the first seen");
        let mut pairer = DpoPairer::new(1000);
        let pc = |c: &str| PromptCompletion { prompt: Text::Plain("p".into()), completion: Text::Plain(c.into()) };
        assert_eq!(pairer.member(0, false, pc("low")), Ok(None));
        assert_eq!(pairer.member(0, true, pc("high")), Ok(Some(TrlRow::Dpo { prompt: Text::Plain("p".into()), chosen: Text::Plain("high".into()), rejected: Text::Plain("low".into()) })));
        // The waiting bound: exactly at it fits, one byte over does not.
        let mut small = DpoPairer::new(2);
        assert_eq!(small.member(1, true, PromptCompletion { prompt: Text::Plain("a".into()), completion: Text::Plain("b".into()) }), Ok(None));
        assert_eq!(small.member(2, true, pc("c")), Err(BoundError::PendingBytes { max: 2 }));
        // Equal rewards never pair, whatever the margin.
        let mut p = DpoPlanner::new(10);
        p.observe(key, 0.5, 0).expect("room");
        p.observe(key, 0.5, 1).expect("room");
        assert_eq!(p.plan(0.0).pairs, 0);
    }

    #[test]
    fn stepwise_rows_per_sequence_with_a_bound() {
        let o = Options::default();
        let mut s = Stepwise::default();
        assert_eq!(s.push(&view("a", "s1", "{}", r#"{"n":1}"#, Some(0.7)), &o, 2).map(|r| r.0), Ok(None));
        assert_eq!(s.push(&view("b", "s1", "{}", r#"{"n":2}"#, None), &o, 2).map(|r| r.1), Ok(Some(Skip::NoReward)));
        assert_eq!(s.push(&view("c", "s1", "{}", r#"{"n":3}"#, Some(0.2)), &o, 2).map(|r| r.1), Ok(None));
        assert!(matches!(s.push(&view("d", "s1", "{}", "{}", Some(0.2)), &o, 2), Err(BoundError::Steps { max: 2, .. })));
        let (row, _) = s.push(&view("e", "s2", "{}", "{}", Some(1.0)), &o, 2).expect("new sequence");
        match row {
            Some(TrlRow::Stepwise { completions, labels, .. }) => {
                assert_eq!(labels, vec![true, false]);
                assert_eq!(completions.len(), 2);
            }
            other => panic!("expected a stepwise row, got {other:?}"),
        }
        assert!(matches!(s.finish(), Some(TrlRow::Stepwise { ref labels, .. }) if labels == &vec![true]));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v: Value = serde_json::from_str(r#"{"b":[{"d":1,"c":2}],"a":"x\"y"}"#).expect("json");
        assert_eq!(canonical_json(&v), r#"{"a":"x\"y","b":[{"c":2,"d":1}]}"#);
    }
}
