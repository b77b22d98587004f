//! The REST API's wire types: every response body and every JSON request body, with their OpenAPI
//! schemas (`utoipa::ToSchema`), and the one place where store and core types become response
//! bodies (the `From` impls at the end of each section).
//!
//! Invariants:
//! - The fields of every response struct are declared in alphabetical order. The API has always
//!   written its objects with sorted keys (they were `serde_json::Value` maps), and clients may
//!   compare bodies byte for byte; a test checks that each struct serialises exactly as its
//!   `serde_json::Value` does.
//! - Each `From` impl destructures the store or core type without `..`, so a field added there
//!   does not compile until it is mapped here (or deliberately ignored with `field: _`).
//! - Request structs deny unknown fields; they carry the shape only. Values are checked by the
//!   domain rules of `rltrace_core` after deserialisation (`api::parse_reward`, `callbacks`).

use std::collections::BTreeMap;

use rltrace_core::export::TripletView;
use rltrace_core::reward::{HitlDecision, PSP_DEFECT_TYPES, Severity, Strategy};
use rltrace_core::time::format_micros;
use rltrace_store as store;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, Type};

// ---------------------------------------------------------------------------------------------
// Errors and health
// ---------------------------------------------------------------------------------------------

/// The error shape of every REST failure: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code for programs.
    pub code: ErrorCode,
    /// A sentence for people; for a body of the wrong shape it starts with the path of the bad
    /// field (`target.gamma: invalid type: ...`).
    pub message: String,
}

/// The stable error codes, one per kind of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: a malformed query, path or cursor, or a body that is not JSON.
    BadRequest,
    /// 422: a JSON body of the wrong shape (unknown field, wrong type, missing field) or with a
    /// value out of range.
    ValidationFailed,
    /// 404: no such resource (or route).
    NotFound,
    /// 409: an idempotency key used again with another body.
    Conflict,
    /// 413: the body is over the bound.
    PayloadTooLarge,
    /// 401: no key, or not a valid one.
    Unauthenticated,
    /// 403: the key lacks the route's scope.
    PermissionDenied,
    /// 503 with `Retry-After`: the writer queue is full; retry later.
    Overloaded,
    /// 503: the store does not answer.
    NotReady,
    /// 500: something failed inside.
    Internal,
}

/// `GET /healthz` and `GET /readyz`: `{"status": "ok"}` and `{"status": "ready"}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (alive) or `ready` (the store answers).
    #[schema(example = "ok")]
    pub status: String,
}

// ---------------------------------------------------------------------------------------------
// Sequences
// ---------------------------------------------------------------------------------------------

/// A sequence in a list.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SequenceSummary {
    /// Ended by `rl.sequence_end`, by a terminal-type reward, or by the policy's `sequence_idle`.
    pub complete: bool,
    /// Earliest triplet timestamp (RFC 3339 UTC, microseconds).
    #[schema(required, format = DateTime)]
    pub first_at: Option<String>,
    /// Latest triplet timestamp.
    #[schema(required, format = DateTime)]
    pub last_at: Option<String>,
    /// Mean effective reward of its rewarded triplets; null when none is rewarded.
    #[schema(required)]
    pub reward_mean: Option<f64>,
    /// Some triplet has an effective reward under the current policy.
    pub rewarded: bool,
    /// The agent roles of its triplets, in order of first appearance.
    pub roles: Vec<String>,
    /// The Agent Lightning rollout attempt the sequence is linked to (`agentlightning.rollout_id`
    /// and `agentlightning.attempt_id` on one of its spans or their resource); null when none.
    #[schema(required)]
    pub rollout: Option<Rollout>,
    /// The sequence id.
    pub sequence_id: String,
    /// Number of triplets.
    pub triplet_count: i64,
}

/// A sequence with its triplets in order and every ledger event of it and its triplets.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SequenceDetail {
    /// Ended by `rl.sequence_end`, by a terminal-type reward, or by the policy's `sequence_idle`.
    pub complete: bool,
    /// Earliest triplet timestamp (RFC 3339 UTC, microseconds).
    #[schema(required, format = DateTime)]
    pub first_at: Option<String>,
    /// Latest triplet timestamp.
    #[schema(required, format = DateTime)]
    pub last_at: Option<String>,
    /// Every ledger event of the sequence and its triplets, in ledger order.
    pub ledger: Vec<RewardEvent>,
    /// Opaque cursor of the next page of triplets; null on the last one.
    #[schema(required)]
    pub next_cursor: Option<String>,
    /// Mean effective reward of its rewarded triplets; null when none is rewarded.
    #[schema(required)]
    pub reward_mean: Option<f64>,
    /// Some triplet has an effective reward under the current policy.
    pub rewarded: bool,
    /// The agent roles of its triplets, in order of first appearance.
    pub roles: Vec<String>,
    /// The Agent Lightning rollout attempt the sequence is linked to (`agentlightning.rollout_id`
    /// and `agentlightning.attempt_id` on one of its spans or their resource); null when none.
    #[schema(required)]
    pub rollout: Option<Rollout>,
    /// The sequence id.
    pub sequence_id: String,
    /// Number of triplets.
    pub triplet_count: i64,
    /// One page of its triplets in sequence order (`limit`, default 1,000; `cursor`).
    pub triplets: Vec<Triplet>,
}

/// A sequence's link to an Agent Lightning rollout attempt.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Rollout {
    /// The attempt id (`agentlightning.attempt_id`).
    pub attempt_id: String,
    /// The rollout id (`agentlightning.rollout_id`).
    pub rollout_id: String,
    /// The episode reward each way the bridge may form it (`[agentlightning] episode_reward`).
    pub episode_reward: EpisodeRewardOut,
}

/// A linked sequence's episode reward: the last triplet's effective reward, the mean and the
/// least over the triplets that have one; each null when there is none yet.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EpisodeRewardOut {
    /// The last triplet's effective reward.
    #[schema(required)]
    pub last: Option<f64>,
    /// The mean.
    #[schema(required)]
    pub mean: Option<f64>,
    /// The least.
    #[schema(required)]
    pub min: Option<f64>,
}

/// A page of `GET /api/v1/sequences`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SequencePage {
    /// The sequences of this page.
    pub items: Vec<SequenceSummary>,
    /// Opaque cursor of the next page; null on the last one.
    #[schema(required)]
    pub next_cursor: Option<String>,
}

fn opt_time(t: Option<i64>) -> Option<String> {
    t.map(format_micros)
}

impl From<store::SequenceSummary> for SequenceSummary {
    fn from(s: store::SequenceSummary) -> Self {
        let store::SequenceSummary { sequence_id, triplet_count, first_at, last_at, rewarded, complete, reward_mean, roles, rollout, episode } = s;
        SequenceSummary {
            complete,
            first_at: opt_time(first_at),
            last_at: opt_time(last_at),
            reward_mean,
            rewarded,
            roles,
            rollout: rollout.map(|l| Rollout {
                attempt_id: l.attempt_id,
                rollout_id: l.rollout_id,
                episode_reward: EpisodeRewardOut { last: episode.last, mean: episode.mean, min: episode.min },
            }),
            sequence_id,
            triplet_count,
        }
    }
}

impl From<store::SequenceDetail> for SequenceDetail {
    fn from(d: store::SequenceDetail) -> Self {
        let store::SequenceDetail { summary, triplets, ledger, next } = d;
        let SequenceSummary { complete, first_at, last_at, reward_mean, rewarded, roles, rollout, sequence_id, triplet_count } = summary.into();
        SequenceDetail {
            complete,
            first_at,
            last_at,
            ledger: ledger.into_iter().map(Into::into).collect(),
            next_cursor: next.map(|n| crate::api::encode_cursor("q", n)),
            reward_mean,
            rewarded,
            roles,
            rollout,
            sequence_id,
            triplet_count,
            triplets: triplets.into_iter().map(Into::into).collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Triplets
// ---------------------------------------------------------------------------------------------

/// A triplet: the object of export format v1 (DESIGN section 7), with its effective reward.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Triplet {
    /// The action (`rl.action.*`, `gen_ai.*` output), a JSON object.
    #[schema(value_type = Object)]
    pub action: Value,
    /// `rl.propensity`, for off-policy training.
    #[schema(required)]
    pub propensity: Option<f64>,
    /// Effective reward: the weighted mean over sources; null when no event reaches the triplet.
    #[schema(required)]
    pub reward: Option<f64>,
    /// Time of the newest ledger event reaching the triplet.
    #[schema(required, format = DateTime)]
    pub reward_assigned_at: Option<String>,
    /// Source of the newest ledger event reaching the triplet.
    #[schema(required)]
    pub reward_source: Option<String>,
    /// Each source and the value used for it.
    pub reward_sources: BTreeMap<String, f64>,
    /// `rl.sampling.probability`: the probability with which the recording SDK kept this
    /// sequence (reweight by its inverse).
    #[schema(required)]
    pub sampling_probability: Option<f64>,
    /// The sequence id.
    pub sequence_id: String,
    /// Position in the sequence.
    pub sequence_index: i64,
    /// Span id (16 lowercase hex digits).
    pub span_id: String,
    /// The state (`rl.state.*`, `gen_ai.*` input), a JSON object.
    #[schema(value_type = Object)]
    pub state: Value,
    /// `rl.timestamp_utc` or the span's start.
    #[schema(format = DateTime)]
    pub timestamp_utc: String,
    /// Trace id (32 lowercase hex digits).
    pub trace_id: String,
    /// The triplet id.
    pub triplet_id: String,
}

/// A triplet and the ledger events that reach it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TripletDetail {
    /// The action (`rl.action.*`, `gen_ai.*` output), a JSON object.
    #[schema(value_type = Object)]
    pub action: Value,
    /// How the effective reward was formed: each source reaching the triplet, with every event
    /// considered, the one used, the aggregation and the weight.
    pub explain: Vec<SourceExplanation>,
    /// The ledger events reaching this triplet, in ledger order.
    pub ledger: Vec<RewardEvent>,
    /// `rl.propensity`, for off-policy training.
    #[schema(required)]
    pub propensity: Option<f64>,
    /// Effective reward: the weighted mean over sources; null when no event reaches the triplet.
    #[schema(required)]
    pub reward: Option<f64>,
    /// Time of the newest ledger event reaching the triplet.
    #[schema(required, format = DateTime)]
    pub reward_assigned_at: Option<String>,
    /// Source of the newest ledger event reaching the triplet.
    #[schema(required)]
    pub reward_source: Option<String>,
    /// Each source and the value used for it.
    pub reward_sources: BTreeMap<String, f64>,
    /// `rl.sampling.probability`: the probability with which the recording SDK kept this
    /// sequence (reweight by its inverse).
    #[schema(required)]
    pub sampling_probability: Option<f64>,
    /// The sequence id.
    pub sequence_id: String,
    /// Position in the sequence.
    pub sequence_index: i64,
    /// Span id.
    pub span_id: String,
    /// The state (`rl.state.*`, `gen_ai.*` input), a JSON object.
    #[schema(value_type = Object)]
    pub state: Value,
    /// `rl.timestamp_utc` or the span's start.
    #[schema(format = DateTime)]
    pub timestamp_utc: String,
    /// Trace id.
    pub trace_id: String,
    /// The triplet id.
    pub triplet_id: String,
}

/// How one source's value for a triplet was formed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SourceExplanation {
    /// How its events are combined: `latest`, `earliest`, `mean`, `min`, `max`, `sum`, `product`.
    pub aggregation: String,
    /// Every event of the source reaching the triplet, in ledger order.
    pub events: Vec<ConsideredEvent>,
    /// The source (`hitl`, `tests`, `local`, ...).
    pub source: String,
    /// The value used for the source.
    pub value: f64,
    /// The source's weight in the mean over sources.
    pub weight: f64,
}

/// One reward that reached a triplet for a source.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConsideredEvent {
    /// When it was recorded.
    #[schema(format = DateTime)]
    pub at: String,
    /// The ledger event's id; null for the span's own immediate reward.
    #[schema(required)]
    pub reward_id: Option<String>,
    /// Whether the source's value comes from it: the one event chosen by `latest`, `earliest`,
    /// `min` or `max`; every event for `mean`, `sum` and `product`.
    pub used: bool,
    /// Its value as it reaches this triplet (a sequence reward's share under its strategy).
    pub value: f64,
}

impl From<rltrace_core::reward::SourceExplanation> for SourceExplanation {
    fn from(x: rltrace_core::reward::SourceExplanation) -> Self {
        SourceExplanation {
            aggregation: x.aggregation.name().to_string(),
            events: x
                .events
                .into_iter()
                .map(|c| ConsideredEvent { at: format_micros(c.at), reward_id: c.reward_id, used: c.used, value: c.value })
                .collect(),
            source: x.source,
            value: x.value,
            weight: x.weight,
        }
    }
}

/// A page of `GET /api/v1/triplets`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TripletPage {
    /// The triplets of this page.
    pub items: Vec<Triplet>,
    /// Opaque cursor of the next page; null on the last one.
    #[schema(required)]
    pub next_cursor: Option<String>,
}

/// Stored JSON text (state, action, attributes) as a value; unreadable text becomes null.
fn json_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

impl From<TripletView> for Triplet {
    fn from(t: TripletView) -> Self {
        let TripletView {
            triplet_id,
            sequence_id,
            sequence_index,
            timestamp,
            state,
            action,
            effective,
            trace_id,
            span_id,
            propensity,
            sampling_probability,
            role: _,
            sequence_end: _,
        } = t;
        Triplet {
            action: json_text(&action),
            propensity,
            reward: effective.reward,
            reward_assigned_at: opt_time(effective.newest_at),
            reward_source: effective.newest_source,
            reward_sources: effective.sources.into_iter().map(|(source, v)| (source, v.value)).collect(),
            sampling_probability,
            sequence_id,
            sequence_index,
            span_id,
            state: json_text(&state),
            timestamp_utc: format_micros(timestamp),
            trace_id,
            triplet_id,
        }
    }
}

impl From<store::TripletDetail> for TripletDetail {
    fn from(d: store::TripletDetail) -> Self {
        let store::TripletDetail { triplet, ledger, explain } = d;
        let Triplet {
            action,
            propensity,
            reward,
            reward_assigned_at,
            reward_source,
            reward_sources,
            sampling_probability,
            sequence_id,
            sequence_index,
            span_id,
            state,
            timestamp_utc,
            trace_id,
            triplet_id,
        } = triplet.into();
        TripletDetail {
            action,
            explain: explain.into_iter().map(Into::into).collect(),
            ledger: ledger.into_iter().map(Into::into).collect(),
            propensity,
            reward,
            reward_assigned_at,
            reward_source,
            reward_sources,
            sampling_probability,
            sequence_id,
            sequence_index,
            span_id,
            state,
            timestamp_utc,
            trace_id,
            triplet_id,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The reward ledger
// ---------------------------------------------------------------------------------------------

/// One event of the append-only reward ledger.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RewardEvent {
    /// When the collector appended it (ledger order decides "latest", not this time).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The caller's idempotency key, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub idempotency_key: Option<String>,
    /// The caller's metadata; a callback keeps its inputs here.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub metadata: Option<Value>,
    /// Appended before its target was known and not yet joined.
    pub pending: bool,
    /// Why, in words.
    #[schema(required)]
    pub reason: Option<String>,
    /// Unique id of the event.
    pub reward_id: String,
    /// Where it came from (`hitl`, `tests`, `defect`, `judge`, ...).
    pub source: String,
    /// What it rewards.
    pub target: RewardEventTarget,
    /// Value in [0, 1]; null for an event that records a decision without a reward (HITL
    /// `deferred`).
    #[schema(required)]
    pub value: Option<f64>,
}

/// What a ledger event rewards.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum RewardEventTarget {
    /// One triplet.
    Triplet {
        /// The triplet id.
        triplet_id: String,
    },
    /// A sequence, reaching its triplets through a strategy.
    Sequence {
        /// `gamma` of the `discounted` strategy.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        gamma: Option<f64>,
        /// The phase of the `phase` strategy (defects reported by sequence id).
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        phase: Option<String>,
        /// The role of the `role` strategy.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        role: Option<String>,
        /// The sequence id.
        sequence_id: String,
        /// `uniform`, `discounted`, `last`, `role` or `phase`.
        strategy: String,
    },
    /// The triplets of a task in one phase (defects reported by task id).
    Task {
        /// The phase (an `agent_role` or `phase` of the state).
        phase: String,
        /// The task id.
        task_id: String,
    },
}

impl From<rltrace_core::reward::RewardTarget> for RewardEventTarget {
    fn from(t: rltrace_core::reward::RewardTarget) -> Self {
        use rltrace_core::reward::RewardTarget as Core;
        match t {
            Core::Triplet { triplet_id } => RewardEventTarget::Triplet { triplet_id },
            Core::Sequence { sequence_id, strategy } => {
                let (role, phase) = match &strategy {
                    Strategy::Role { role } => (Some(role.clone()), None),
                    Strategy::Phase { phase } => (None, Some(phase.clone())),
                    Strategy::Uniform | Strategy::Discounted { .. } | Strategy::Last => (None, None),
                };
                RewardEventTarget::Sequence { gamma: strategy.gamma(), phase, role, sequence_id, strategy: strategy.name().to_string() }
            }
            Core::Task { task_id, phase } => RewardEventTarget::Task { phase, task_id },
        }
    }
}

impl From<rltrace_core::reward::RewardEvent> for RewardEvent {
    fn from(e: rltrace_core::reward::RewardEvent) -> Self {
        let rltrace_core::reward::RewardEvent {
            reward_id,
            target,
            value,
            source,
            reason,
            created_at,
            idempotency_key,
            metadata,
            pending,
            seq_no: _,
            valuation: _,
        } = e;
        RewardEvent {
            created_at: format_micros(created_at),
            idempotency_key,
            metadata,
            pending,
            reason,
            reward_id,
            source,
            target: target.into(),
            value,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Traces
// ---------------------------------------------------------------------------------------------

/// `GET /api/v1/traces/{trace_id}`: the spans of a trace in tree order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Trace {
    /// Parents before children, siblings by start time.
    pub spans: Vec<Span>,
    /// Trace id (32 lowercase hex digits).
    pub trace_id: String,
}

/// A stored span.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Span {
    /// The span's attributes as a JSON object.
    #[schema(value_type = Object)]
    pub attributes: Value,
    /// Depth in the tree (0 for roots).
    pub depth: usize,
    /// End time (RFC 3339 UTC, microseconds).
    #[schema(format = DateTime)]
    pub end_time: String,
    /// The span's events.
    #[schema(value_type = Vec<Object>)]
    pub events: Value,
    /// OTLP span kind.
    pub kind: SpanKind,
    /// Span name.
    pub name: String,
    /// Parent span id.
    #[schema(required)]
    pub parent_span_id: Option<String>,
    /// Resource attributes as a JSON object.
    #[schema(value_type = Object)]
    pub resource: Value,
    /// Span id (16 lowercase hex digits).
    pub span_id: String,
    /// Start time.
    #[schema(format = DateTime)]
    pub start_time: String,
    /// OTLP status.
    pub status: SpanStatus,
    /// Trace id.
    pub trace_id: String,
    /// The triplet id, when the span is a triplet.
    #[schema(required)]
    pub triplet_id: Option<String>,
}

/// OTLP span kind, by its enum name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum SpanKind {
    /// `SPAN_KIND_UNSPECIFIED` (0, or a number OTLP does not define).
    #[serde(rename = "SPAN_KIND_UNSPECIFIED")]
    Unspecified,
    /// `SPAN_KIND_INTERNAL` (1).
    #[serde(rename = "SPAN_KIND_INTERNAL")]
    Internal,
    /// `SPAN_KIND_SERVER` (2).
    #[serde(rename = "SPAN_KIND_SERVER")]
    Server,
    /// `SPAN_KIND_CLIENT` (3).
    #[serde(rename = "SPAN_KIND_CLIENT")]
    Client,
    /// `SPAN_KIND_PRODUCER` (4).
    #[serde(rename = "SPAN_KIND_PRODUCER")]
    Producer,
    /// `SPAN_KIND_CONSUMER` (5).
    #[serde(rename = "SPAN_KIND_CONSUMER")]
    Consumer,
}

impl SpanKind {
    /// From the OTLP number; unknown numbers are `SPAN_KIND_UNSPECIFIED`.
    pub fn from_otlp(k: i32) -> SpanKind {
        match k {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }
}

/// OTLP span status.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SpanStatus {
    /// The status code by its enum name.
    pub code: SpanStatusCode,
    /// The status message (empty when none).
    pub message: String,
}

/// OTLP status code, by its enum name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum SpanStatusCode {
    /// `STATUS_CODE_UNSET` (0, or a number OTLP does not define).
    #[serde(rename = "STATUS_CODE_UNSET")]
    Unset,
    /// `STATUS_CODE_OK` (1).
    #[serde(rename = "STATUS_CODE_OK")]
    Ok,
    /// `STATUS_CODE_ERROR` (2).
    #[serde(rename = "STATUS_CODE_ERROR")]
    Error,
}

impl SpanStatusCode {
    /// From the OTLP number; unknown numbers are `STATUS_CODE_UNSET`.
    pub fn from_otlp(c: i32) -> SpanStatusCode {
        match c {
            1 => SpanStatusCode::Ok,
            2 => SpanStatusCode::Error,
            _ => SpanStatusCode::Unset,
        }
    }
}

impl From<store::SpanOut> for Span {
    fn from(s: store::SpanOut) -> Self {
        let store::SpanOut {
            trace_id,
            span_id,
            parent_span_id,
            name,
            kind,
            start_ns,
            end_ns,
            status_code,
            status_message,
            attributes,
            events,
            resource,
            depth,
            triplet_id,
        } = s;
        Span {
            attributes: json_text(&attributes),
            depth,
            end_time: format_micros(end_ns / 1000),
            events: json_text(&events),
            kind: SpanKind::from_otlp(kind),
            name,
            parent_span_id,
            resource: json_text(&resource),
            span_id,
            start_time: format_micros(start_ns / 1000),
            status: SpanStatus { code: SpanStatusCode::from_otlp(status_code), message: status_message },
            trace_id,
            triplet_id,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------------------------

/// `POST /api/v1/settle`: how many sequences got the fallback reward.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Settled {
    /// Sequences settled.
    pub settled: u64,
}

/// `GET /api/v1/forwarders`: every forwarding target of this collector.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Forwarders {
    /// The targets, in the config file's order.
    pub forwarders: Vec<ForwarderOut>,
}

/// One forwarding target: where it is, its cursor and lag, and what happened to its requests.
/// Counts are this collector's since it started; the cursor is the store's.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ForwarderOut {
    /// The target's name (the key of its cursor).
    pub name: String,
    /// `otlp` (`[[forward]]`), `agentlightning-spans`, `agentlightning-rewards` (the bridge to a
    /// 0.3 LightningStore) or `agentlightning-gateway` (the bridge to a 1.0 gateway).
    pub kind: String,
    /// The URL posted to (no credentials or query).
    pub endpoint: String,
    /// `all`, `triplets` or `linked` (spans linked to a rollout attempt: the bridge).
    pub what: String,
    /// `starting`, `sending`, `idle`, `backoff`, `standby` (another collector sends) or `stopped`.
    pub state: String,
    /// Span rows up to this id were delivered or skipped (the store's cursor).
    pub cursor: i64,
    /// The newest span row id.
    pub last_span_id: i64,
    /// Span rows stored after the cursor.
    pub lag_spans: i64,
    /// How long the oldest span not yet delivered has waited, in seconds (0 when caught up).
    pub lag_seconds: f64,
    /// Spans acknowledged by the target.
    pub sent_spans: u64,
    /// Requests acknowledged by the target.
    pub sent_requests: u64,
    /// Attempts retried (429, 5xx, connection errors, timeouts).
    pub retried: u64,
    /// Requests refused for good (other 4xx) and skipped.
    pub failed_requests: u64,
    /// Spans of the skipped requests.
    pub skipped_spans: u64,
    /// Spans acknowledged but reported rejected by the target (OTLP partial success).
    pub rejected_spans: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// When it happened (RFC 3339).
    pub last_error_at: Option<String>,
    /// The last acknowledged request (RFC 3339).
    pub last_sent_at: Option<String>,
    /// The cursor last moved (RFC 3339), from the store.
    pub cursor_updated_at: Option<String>,
    /// Spans skipped because the LightningStore does not know their rollout (bridge spans).
    pub unknown_rollout_spans: u64,
    /// The bridge's reward outbox (bridge rewards only).
    pub outbox: Option<OutboxOut>,
}

/// The Agent Lightning bridge's reward outbox, from the store.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OutboxOut {
    /// Rewards waiting to be delivered.
    pub pending: i64,
    /// Rewards delivered.
    pub delivered: i64,
    /// Rewards given up (rollout unknown to the store, or refused).
    pub skipped: i64,
    /// When the oldest pending reward was written (RFC 3339).
    pub oldest_pending_at: Option<String>,
}

impl ForwarderOut {
    /// A target's view from its status here and its cursor as stored (which another collector
    /// holding the lease may have moved on).
    pub fn new(t: &crate::forward::Target, s: &crate::forward::Status, stored: Option<&store::ForwardCursor>, last_id: i64) -> ForwarderOut {
        let (cursor, last, lag_spans, lag_seconds, outbox) = if matches!(t.kind, crate::forward::Kind::AglRewards { .. } | crate::forward::Kind::AglGateway { .. }) {
            // A bridge's rewards: the cursor is its walk over sequences; the lag is its outbox.
            let o = s.outbox.unwrap_or_default();
            let oldest = o.oldest_pending_us;
            let waited = oldest.map_or(0.0, |u| ((rltrace_store::now_micros() - u).max(0) as f64) / 1e6);
            let out = OutboxOut { pending: o.pending, delivered: o.delivered, skipped: o.skipped, oldest_pending_at: oldest.map(format_micros) };
            (stored.map_or(s.cursor, |c| c.after_id), last_id, o.pending, waited, Some(out))
        } else {
            let cursor = stored.map_or(s.cursor, |c| c.after_id.max(s.cursor));
            let last = last_id.max(s.last_id);
            (cursor, last, (last - cursor).max(0), if cursor >= last { 0.0 } else { s.lag_seconds() }, None)
        };
        ForwarderOut {
            name: t.name.clone(),
            kind: t.kind.as_str().into(),
            endpoint: t.shown.clone(),
            what: t.what.as_str().into(),
            state: s.phase.as_str().into(),
            cursor,
            last_span_id: last,
            lag_spans,
            lag_seconds,
            sent_spans: s.sent_spans,
            sent_requests: s.sent_requests,
            retried: s.retried,
            failed_requests: s.failed_requests,
            skipped_spans: s.skipped_spans,
            rejected_spans: s.rejected_spans,
            last_error: s.last_error.clone(),
            last_error_at: s.last_error_us.map(format_micros),
            last_sent_at: s.last_sent_us.map(format_micros),
            cursor_updated_at: stored.filter(|c| c.updated_us > 0).map(|c| format_micros(c.updated_us)),
            unknown_rollout_spans: s.unknown_rollout_spans,
            outbox,
        }
    }
}

/// `GET /api/v1/stats`: store-wide counts and the recent ingest rate.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Stats {
    /// Spans stored per second over the last seconds.
    pub ingest_spans_per_s: f64,
    /// Events in the reward ledger (including rewards carried by spans).
    pub reward_events: u64,
    /// Triplets with an effective reward under the current policy.
    pub rewarded_triplets: u64,
    /// Sequences with at least one triplet.
    pub sequences: u64,
    /// Spans stored.
    pub spans: u64,
    /// Triplets stored.
    pub triplets: u64,
}

impl Stats {
    /// The store's counts with the collector's ingest rate.
    pub fn new(s: store::Stats, ingest_spans_per_s: f64) -> Stats {
        let store::Stats { spans, triplets, sequences, rewarded_triplets, reward_events } = s;
        Stats { ingest_spans_per_s, reward_events, rewarded_triplets, sequences, spans, triplets }
    }
}

// ---------------------------------------------------------------------------------------------
// What-if
// ---------------------------------------------------------------------------------------------

/// `POST /api/v1/whatif`: a proposed reward policy and the filters of the sample it is tried on.
/// Nothing is stored.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WhatIfRequest {
    /// The proposed policy: the structure of the `--policy` TOML file as JSON
    /// (`{"sources": {"hitl": {"weight": 3}}, "hitl": {"approved_with_changes": 0.6}}`), or
    /// `{"toml": "..."}` holding the file's text. Omitted fields take their defaults, as in the file.
    #[schema(value_type = Object)]
    pub policy: Value,
    /// Only this sequence.
    pub sequence_id: Option<String>,
    /// Sequences with a triplet of this `state.agent_role`; only that role's triplets are counted.
    pub role: Option<String>,
    /// Triplets at or after this time (RFC 3339).
    #[schema(format = DateTime)]
    pub since: Option<String>,
    /// Triplets at or before this time (RFC 3339).
    #[schema(format = DateTime)]
    pub until: Option<String>,
    /// Only triplets of complete (or incomplete) sequences, completeness under the current policy.
    pub complete: Option<bool>,
    /// The most recent sequences matching the filters to evaluate, 1 to 10,000 (default 1,000).
    #[schema(minimum = 1, maximum = 10000)]
    pub sequences: Option<u64>,
    /// Histogram bins over [0, 1], 1 to 100 (default 10).
    #[schema(minimum = 1, maximum = 100)]
    pub bins: Option<u64>,
    /// Most-changed sequences returned, 0 to 200 (default 20).
    #[schema(minimum = 0, maximum = 200)]
    pub top: Option<u64>,
}

/// A distribution of effective rewards over the evaluated triplets.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RewardDistribution {
    /// Triplets per bin: bin `i` of `n` counts rewards in `[i/n, (i+1)/n)`, the last one also 1.0.
    pub bins: Vec<u64>,
    /// Mean effective reward of the rewarded triplets; null when none is.
    #[schema(required)]
    pub mean: Option<f64>,
    /// Triplets with an effective reward.
    pub rewarded: u64,
    /// Triplets without one.
    pub unrewarded: u64,
}

impl From<rltrace_core::whatif::Histogram> for RewardDistribution {
    fn from(h: rltrace_core::whatif::Histogram) -> Self {
        let (rewarded, mean) = (h.rewarded(), h.mean());
        let rltrace_core::whatif::Histogram { bins, unrewarded, sum: _ } = h;
        RewardDistribution { bins, mean, rewarded, unrewarded }
    }
}

/// One sequence whose rewards change under the proposed policy.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChangedSequence {
    /// Mean over its counted triplets of the absolute change of the effective reward (a reward
    /// that appears or vanishes counts 1).
    pub change: f64,
    /// Triplets whose effective reward differs.
    pub changed_triplets: u64,
    /// Mean effective reward under the current policy.
    #[schema(required)]
    pub current_mean: Option<f64>,
    /// Mean effective reward under the proposed policy.
    #[schema(required)]
    pub proposed_mean: Option<f64>,
    /// The sequence id.
    pub sequence_id: String,
    /// Triplets counted.
    pub triplets: u64,
}

impl From<rltrace_core::whatif::Changed> for ChangedSequence {
    fn from(c: rltrace_core::whatif::Changed) -> Self {
        let rltrace_core::whatif::Changed { sequence_id, triplets, changed_triplets, current_mean, proposed_mean, change } = c;
        ChangedSequence { change, changed_triplets: changed_triplets as u64, current_mean, proposed_mean, sequence_id, triplets: triplets as u64 }
    }
}

/// The answer of `POST /api/v1/whatif`: both distributions over the same triplets and the
/// sequences that change most. Computed on the most recent sequences matching the filters, at
/// most `max_sequences` of them; nothing is stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WhatIfResponse {
    /// The sample stopped at a bound (sequences, triplets or rows looked at) before the oldest
    /// matching sequence: older ones were not evaluated.
    pub bounded: bool,
    /// Triplets whose effective reward differs between the two policies.
    pub changed_triplets: u64,
    /// Under the collector's current policy.
    pub current: RewardDistribution,
    /// The current policy's hash (`sha256:...`, as in export manifests).
    pub current_policy_hash: String,
    /// Sequences evaluated.
    pub evaluated_sequences: u64,
    /// Triplets counted (those the filters keep).
    pub evaluated_triplets: u64,
    /// The bound on sequences evaluated for this request.
    pub max_sequences: u64,
    /// The sequences whose rewards change most, largest change first.
    pub most_changed: Vec<ChangedSequence>,
    /// The proposed policy as read, every default filled in (JSON).
    #[schema(value_type = Object)]
    pub policy: Value,
    /// The proposed policy's hash.
    pub policy_hash: String,
    /// The proposed policy as a `--policy` TOML file.
    pub policy_toml: String,
    /// Under the proposed policy.
    pub proposed: RewardDistribution,
    /// Sequences passed over because they alone exceed the triplet bound (100,000).
    pub skipped_long_sequences: u64,
}

// ---------------------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------------------

/// `POST /api/v1/rewards`: a reward event to append (DESIGN section 5).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardRequest {
    /// What it rewards.
    pub target: RewardRequestTarget,
    /// A finite JSON number in [0, 1].
    #[schema(minimum = 0, maximum = 1)]
    pub value: f64,
    /// Where it comes from: lowercase `[a-z0-9_.-]{1,64}`.
    #[schema(pattern = "^[a-z0-9_.-]{1,64}$")]
    pub source: String,
    /// Why, in words (not empty when given).
    pub reason: Option<String>,
    /// Idempotency key: the same key and body again answers the stored event (200), the same
    /// key with another body is 409. The `Idempotency-Key` header may carry it instead.
    #[schema(min_length = 1, max_length = 256)]
    pub idempotency_key: Option<String>,
    /// Any JSON object, kept with the event.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Record the event even if its target is not stored yet; it joins when the target arrives.
    pub pending: Option<bool>,
}

/// The target of a new reward: one triplet, or a sequence with a strategy.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(untagged, try_from = "TargetFields")]
pub enum RewardRequestTarget {
    /// One triplet.
    Triplet {
        /// The triplet id.
        triplet_id: String,
    },
    /// A sequence, shared out over its triplets by a strategy.
    Sequence {
        /// The sequence id.
        sequence_id: String,
        /// How the value reaches the triplets (default `uniform`).
        #[schema(schema_with = strategy_schema)]
        strategy: Option<String>,
        /// For `discounted`: triplet i of n gets `value * gamma^(n-1-i)`; in (0, 1].
        #[schema(exclusive_minimum = 0, maximum = 1)]
        gamma: Option<f64>,
        /// For `role`: only triplets whose `state.agent_role` equals it.
        role: Option<String>,
    },
}

/// The fields a target may have, read first so that a wrong field or type is reported with its
/// path; which combination is allowed is decided by the `TryFrom` below.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFields {
    triplet_id: Option<String>,
    sequence_id: Option<String>,
    strategy: Option<String>,
    gamma: Option<f64>,
    role: Option<String>,
}

impl TryFrom<TargetFields> for RewardRequestTarget {
    type Error = String;

    fn try_from(f: TargetFields) -> Result<Self, String> {
        let TargetFields { triplet_id, sequence_id, strategy, gamma, role } = f;
        match (triplet_id, sequence_id) {
            (Some(triplet_id), None) => {
                if strategy.is_some() || gamma.is_some() || role.is_some() {
                    return Err("strategy, gamma and role go with sequence_id, not with triplet_id".into());
                }
                Ok(RewardRequestTarget::Triplet { triplet_id })
            }
            (None, Some(sequence_id)) => Ok(RewardRequestTarget::Sequence { sequence_id, strategy, gamma, role }),
            (Some(_), Some(_)) => Err("give either triplet_id or sequence_id, not both".into()),
            (None, None) => Err("give triplet_id or sequence_id".into()),
        }
    }
}

/// `POST /api/v1/callbacks/hitl`: a human decision on a sequence (source `hitl`, strategy
/// `uniform`; the value comes from the policy's decision values).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HitlCallback {
    /// The sequence reviewed.
    #[schema(min_length = 1)]
    pub sequence_id: String,
    /// The decision; `deferred` is recorded without a value.
    #[schema(schema_with = decision_schema)]
    pub decision: String,
    /// Who decided.
    #[schema(min_length = 1)]
    pub reviewer: String,
    /// Why: required, as the platform's own review requires.
    #[schema(min_length = 1)]
    pub justification: String,
    /// Idempotency key: the same key and body again answers the stored event (200), the same
    /// key with another body is 409. The `Idempotency-Key` header may carry it instead.
    #[schema(min_length = 1, max_length = 256)]
    pub idempotency_key: Option<String>,
    /// Record the event even if its target is not stored yet; it joins when the target arrives.
    pub pending: Option<bool>,
}

/// `POST /api/v1/callbacks/tests`: test results for a sequence (source `tests`, value
/// `passed / (passed + failed)`; both 0 is refused).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestsCallback {
    /// The sequence tested.
    #[schema(min_length = 1)]
    pub sequence_id: String,
    /// Tests passed.
    #[schema(value_type = u64)]
    pub passed: Count,
    /// Tests failed.
    #[schema(value_type = u64)]
    pub failed: Count,
    /// Tests skipped (kept in the metadata; no effect on the value).
    #[schema(value_type = Option<u64>)]
    pub skipped: Option<Count>,
    /// Idempotency key: the same key and body again answers the stored event (200), the same
    /// key with another body is 409. The `Idempotency-Key` header may carry it instead.
    #[schema(min_length = 1, max_length = 256)]
    pub idempotency_key: Option<String>,
    /// Record the event even if its target is not stored yet; it joins when the target arrives.
    pub pending: Option<bool>,
}

/// `POST /api/v1/callbacks/defects`: a defect found later, penalising the triplets of the phase
/// that injected it (source `defect`, value `1 - penalty(severity)`). Give `task_id` or
/// `sequence_id`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefectCallback {
    /// Reaches the triplets whose `state.task_id` equals it, or whose sequence id equals it or
    /// starts with `{task_id}:`.
    #[schema(min_length = 1)]
    pub task_id: Option<String>,
    /// Reaches the triplets of this sequence.
    #[schema(min_length = 1)]
    pub sequence_id: Option<String>,
    /// The PSP defect type.
    #[schema(schema_with = defect_type_schema)]
    pub defect_type: String,
    /// Penalty 0.1, 0.25, 0.5 or 1.0 (by default).
    #[schema(schema_with = severity_schema)]
    pub severity: String,
    /// The phase that injected the defect: triplets whose `state.agent_role` or `state.phase`
    /// equals it are penalised.
    #[schema(min_length = 1)]
    pub phase_injected: String,
    /// The phase that removed it; not the same as `phase_injected`.
    #[schema(min_length = 1)]
    pub phase_removed: String,
    /// What the defect was.
    #[schema(min_length = 1)]
    pub description: String,
    /// Idempotency key: the same key and body again answers the stored event (200), the same
    /// key with another body is 409. The `Idempotency-Key` header may carry it instead.
    #[schema(min_length = 1, max_length = 256)]
    pub idempotency_key: Option<String>,
    /// Record the event even if its target is not stored yet; it joins when the target arrives.
    pub pending: Option<bool>,
}

/// A count: a JSON integer >= 0 (anything else is reported as "expected a non-negative integer").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count(pub u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Count, D::Error> {
        struct CountVisitor;
        impl serde::de::Visitor<'_> for CountVisitor {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a non-negative integer")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Count, E> {
                u64::try_from(v).map(Count).map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
        }
        d.deserialize_u64(CountVisitor)
    }
}

/// The strategy names a client may send (`phase` is the collector's own, for defects).
pub const REQUEST_STRATEGIES: [&str; 4] = ["uniform", "discounted", "last", "role"];

/// The HITL decisions, by wire name.
pub fn decision_names() -> [&'static str; 4] {
    [HitlDecision::Approved, HitlDecision::ApprovedWithChanges, HitlDecision::Rejected, HitlDecision::Deferred].map(HitlDecision::name)
}

/// The defect severities, by wire name.
pub fn severity_names() -> [&'static str; 4] {
    [Severity::Low, Severity::Medium, Severity::High, Severity::Critical].map(Severity::name)
}

/// A string schema with the values `rltrace_core` accepts (`schema_with` replaces the field's
/// doc comment, so the description is given here).
fn string_enum(values: &[&str], description: &str) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values.iter().copied())).description(Some(description))
}

fn strategy_schema() -> ObjectBuilder {
    string_enum(&REQUEST_STRATEGIES, "How the value reaches the triplets.").default(Some(Value::from("uniform")))
}

fn decision_schema() -> ObjectBuilder {
    string_enum(&decision_names(), "The decision; `deferred` is recorded without a value.")
}

fn severity_schema() -> ObjectBuilder {
    string_enum(&severity_names(), "The severity; by default the penalty is 0.1, 0.25, 0.5 or 1.0.")
}

fn defect_type_schema() -> ObjectBuilder {
    string_enum(&PSP_DEFECT_TYPES, "The PSP defect type.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rltrace_core::reward::{Effective, RewardTarget, SourceValue, Valuation};

    fn view() -> TripletView {
        let mut effective = Effective { reward: Some(0.5), newest_source: Some("hitl".into()), newest_at: Some(1_700_000_000_000_000), ..Effective::default() };
        effective.sources.insert(
            "hitl".into(),
            SourceValue { value: 0.5, at: 1, seq_no: 1, events: 1, aggregation: rltrace_core::policy::Aggregation::Latest, weight: 1.0 },
        );
        TripletView {
            triplet_id: "t\"1".into(),
            sequence_id: "s".into(),
            sequence_index: 2,
            timestamp: 0,
            state: r#"{"zeta":1,"agent_role":"Code"}"#.into(),
            action: r#"{"b":[1,2.5],"a":{"y":true,"x":null}}"#.into(),
            effective,
            trace_id: "ab".into(),
            span_id: "cd".into(),
            propensity: None,
            sampling_probability: Some(0.25),
            role: Some("Code".into()),
            sequence_end: false,
        }
    }

    fn event(target: RewardTarget, key: Option<&str>) -> rltrace_core::reward::RewardEvent {
        rltrace_core::reward::RewardEvent {
            reward_id: "r1".into(),
            target,
            value: Some(1.0),
            source: "tests".into(),
            reason: None,
            created_at: 5,
            idempotency_key: key.map(str::to_string),
            metadata: key.map(|_| serde_json::json!({"z": 1, "a": [1.0]})),
            pending: false,
            seq_no: 3,
            valuation: Valuation::Fixed,
        }
    }

    fn summary() -> store::SequenceSummary {
        store::SequenceSummary {
            sequence_id: "s".into(),
            triplet_count: 1,
            first_at: Some(0),
            last_at: None,
            rewarded: true,
            complete: false,
            reward_mean: Some(0.5),
            roles: vec!["Code".into()],
            rollout: None,
            episode: Default::default(),
        }
    }

    fn span() -> store::SpanOut {
        store::SpanOut {
            trace_id: "ab".into(),
            span_id: "cd".into(),
            parent_span_id: None,
            name: "n".into(),
            kind: 2,
            start_ns: 1_000,
            end_ns: 2_000,
            status_code: 2,
            status_message: "boom".into(),
            attributes: r#"{"b":1,"a":2}"#.into(),
            events: "[]".into(),
            resource: "{}".into(),
            depth: 0,
            triplet_id: Some("t".into()),
        }
    }

    /// Every response type, with every optional part present once.
    fn samples() -> Vec<(&'static str, String, Value)> {
        fn both<T: Serialize>(name: &'static str, v: &T) -> (&'static str, String, Value) {
            (name, serde_json::to_string(v).expect("serialise"), serde_json::to_value(v).expect("to value"))
        }
        let events = vec![
            event(RewardTarget::Triplet { triplet_id: "t".into() }, Some("k")),
            event(RewardTarget::Sequence { sequence_id: "s".into(), strategy: Strategy::Discounted { gamma: 0.5 } }, None),
            event(RewardTarget::Sequence { sequence_id: "s".into(), strategy: Strategy::Role { role: "Code".into() } }, None),
            event(RewardTarget::Sequence { sequence_id: "s".into(), strategy: Strategy::Phase { phase: "Test".into() } }, None),
            event(RewardTarget::Task { task_id: "T".into(), phase: "Code".into() }, None),
        ];
        let detail = store::SequenceDetail { summary: summary(), triplets: vec![view()], ledger: events.clone(), next: Some(7) };
        let explain = vec![rltrace_core::reward::SourceExplanation {
            source: "hitl".into(),
            aggregation: rltrace_core::policy::Aggregation::Latest,
            weight: 1.0,
            value: 0.5,
            events: vec![
                rltrace_core::reward::ConsideredEvent { reward_id: Some("r1".into()), value: 0.2, at: 1, order: 2, used: false },
                rltrace_core::reward::ConsideredEvent { reward_id: None, value: 0.5, at: 2, order: 3, used: true },
            ],
        }];
        let tdetail = store::TripletDetail { triplet: view(), ledger: events.clone(), explain };
        let stats = store::Stats { spans: 1, triplets: 2, sequences: 3, rewarded_triplets: 4, reward_events: 5 };
        vec![
            both("SequenceSummary", &SequenceSummary::from(summary())),
            both("SequenceDetail", &SequenceDetail::from(detail)),
            both("SequencePage", &SequencePage { items: vec![summary().into()], next_cursor: Some("c".into()) }),
            both("Triplet", &Triplet::from(view())),
            both("TripletDetail", &TripletDetail::from(tdetail)),
            both("TripletPage", &TripletPage { items: vec![view().into()], next_cursor: None }),
            both("RewardEvents", &events.into_iter().map(RewardEvent::from).collect::<Vec<_>>()),
            both("Trace", &Trace { spans: vec![span().into()], trace_id: "ab".into() }),
            both("Stats", &Stats::new(stats, 1.5)),
            both("Health", &Health { status: "ok".into() }),
            both("Error", &ErrorBody { error: ErrorDetail { code: ErrorCode::ValidationFailed, message: "m".into() } }),
        ]
    }

    #[test]
    fn responses_serialise_with_sorted_keys_as_the_api_always_did() {
        for (name, text, value) in samples() {
            assert_eq!(text, value.to_string(), "{name}: fields must be declared in alphabetical order");
        }
    }

    fn keys(v: &Value) -> Vec<String> {
        v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
    }

    #[test]
    fn details_carry_every_field_of_their_summary() {
        let s = serde_json::to_value(SequenceSummary::from(summary())).expect("value");
        let d = serde_json::to_value(SequenceDetail::from(store::SequenceDetail { summary: summary(), triplets: vec![], next: None, ledger: vec![] })).expect("value");
        for k in keys(&s) {
            assert_eq!(d[&k], s[&k], "sequence detail field {k}");
        }
        assert_eq!(keys(&d).len(), keys(&s).len() + 3, "detail = summary + triplets + ledger + next_cursor: {d}");
        let t = serde_json::to_value(Triplet::from(view())).expect("value");
        let td = serde_json::to_value(TripletDetail::from(store::TripletDetail { triplet: view(), ledger: vec![], explain: vec![] })).expect("value");
        for k in keys(&t) {
            assert_eq!(td[&k], t[&k], "triplet detail field {k}");
        }
        assert_eq!(keys(&td).len(), keys(&t).len() + 2, "triplet detail = triplet + ledger + explain: {td}");
    }

    #[test]
    fn triplet_matches_the_export_line() {
        // The API's Triplet is the export line's object (written by core), with sorted keys.
        let t = view();
        let from_core = rltrace_core::export::triplet_value(&t).expect("valid");
        assert_eq!(serde_json::to_string(&Triplet::from(t)).expect("serialise"), from_core.to_string());
    }

    #[test]
    fn ledger_targets_have_their_wire_shapes() {
        let t = |target| serde_json::to_value(RewardEvent::from(event(target, None))).expect("value")["target"].clone();
        assert_eq!(t(RewardTarget::Triplet { triplet_id: "x".into() }), serde_json::json!({"triplet_id": "x"}));
        assert_eq!(
            t(RewardTarget::Sequence { sequence_id: "s".into(), strategy: Strategy::Discounted { gamma: 0.5 } }),
            serde_json::json!({"sequence_id": "s", "strategy": "discounted", "gamma": 0.5})
        );
        assert_eq!(t(RewardTarget::Sequence { sequence_id: "s".into(), strategy: Strategy::Uniform }), serde_json::json!({"sequence_id": "s", "strategy": "uniform"}));
        assert_eq!(
            t(RewardTarget::Sequence { sequence_id: "s".into(), strategy: Strategy::Phase { phase: "Code".into() } }),
            serde_json::json!({"sequence_id": "s", "strategy": "phase", "phase": "Code"})
        );
        assert_eq!(t(RewardTarget::Task { task_id: "T".into(), phase: "Code".into() }), serde_json::json!({"task_id": "T", "phase": "Code"}));
        let with_key = serde_json::to_value(RewardEvent::from(event(RewardTarget::Triplet { triplet_id: "x".into() }, Some("k")))).expect("value");
        assert_eq!(with_key["idempotency_key"], "k");
        assert_eq!(with_key["metadata"], serde_json::json!({"z": 1, "a": [1.0]}));
        let without = serde_json::to_value(RewardEvent::from(event(RewardTarget::Triplet { triplet_id: "x".into() }, None))).expect("value");
        assert!(without.get("idempotency_key").is_none() && without.get("metadata").is_none(), "{without}");
        assert!(without["reason"].is_null() && without.get("reason").is_some(), "reason is always written: {without}");
    }

    #[test]
    fn schema_enums_are_what_core_accepts() {
        for d in decision_names() {
            assert!(HitlDecision::parse(d).is_some(), "{d}");
        }
        for s in severity_names() {
            assert!(Severity::parse(s).is_some(), "{s}");
        }
        for s in REQUEST_STRATEGIES {
            assert!(Strategy::parse(s, Some(0.5), Some("r")).is_ok(), "{s}");
        }
        assert!(Strategy::parse("phase", None, Some("r")).is_err(), "phase is not for clients");
    }

    #[test]
    fn request_target_reports_its_shape() {
        let parse = |v: Value| serde_json::from_value::<RewardRequestTarget>(v).map_err(|e| e.to_string());
        assert_eq!(parse(serde_json::json!({"triplet_id": "t"})), Ok(RewardRequestTarget::Triplet { triplet_id: "t".into() }));
        assert_eq!(
            parse(serde_json::json!({"sequence_id": "s", "strategy": "role", "role": "Code"})),
            Ok(RewardRequestTarget::Sequence { sequence_id: "s".into(), strategy: Some("role".into()), gamma: None, role: Some("Code".into()) })
        );
        assert!(parse(serde_json::json!({"triplet_id": "t", "sequence_id": "s"})).is_err_and(|e| e.contains("not both")));
        assert!(parse(serde_json::json!({})).is_err_and(|e| e.contains("triplet_id or sequence_id")));
        assert!(parse(serde_json::json!({"triplet_id": "t", "gamma": 0.5})).is_err_and(|e| e.contains("with sequence_id")));
        assert!(parse(serde_json::json!({"sequence_id": "s", "phase": "x"})).is_err_and(|e| e.contains("unknown field `phase`")));
        assert!(parse(serde_json::json!({"sequence_id": "s", "gamma": "x"})).is_err_and(|e| e.contains("expected f64")));
    }
}
