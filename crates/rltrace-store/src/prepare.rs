//! Turning analysed spans into rows ready to bind, off the writer thread: every JSON text is
//! serialised here so the single writer only binds and steps.

use std::collections::HashMap;
use std::sync::Arc;

use rltrace_core::span::attributes_json_string;
use rltrace_core::triplet::{AnnotationReward, SpanReward};
use rltrace_core::{AnalyzedSpan, TripletData};

/// A span ready for the writer.
#[derive(Debug, Clone)]
pub struct PreparedSpan {
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
    pub(crate) parent_span_id: Option<i64>,
    pub(crate) name: String,
    pub(crate) kind: i32,
    pub(crate) start_ns: i64,
    pub(crate) end_ns: i64,
    pub(crate) status_code: i32,
    pub(crate) status_message: String,
    pub(crate) attributes: String,
    pub(crate) events: String,
    pub(crate) resource: Arc<str>,
    pub(crate) scope: String,
    /// Links, trace state, flags and the scope version as JSON, when any is set.
    pub(crate) extras: Option<String>,
    pub(crate) triplet: Option<PreparedTriplet>,
    pub(crate) rewards: Vec<SpanReward>,
    pub(crate) annotation: Option<AnnotationReward>,
}

#[derive(Debug, Clone)]
pub(crate) struct PreparedTriplet {
    pub(crate) triplet_id: String,
    pub(crate) explicit_id: bool,
    pub(crate) sequence_id: String,
    pub(crate) seq_index: Option<i64>,
    pub(crate) ts_us: i64,
    pub(crate) state: String,
    pub(crate) action: String,
    pub(crate) role: Option<String>,
    pub(crate) task_id: Option<String>,
    pub(crate) phase: Option<String>,
    pub(crate) reward: Option<f64>,
    pub(crate) reward_source: String,
    pub(crate) reward_components: Option<String>,
    pub(crate) has_immediate: bool,
    pub(crate) propensity: Option<f64>,
    pub(crate) sampling_probability: Option<f64>,
    pub(crate) seq_end: bool,
    pub(crate) llm: bool,
    pub(crate) rollout: Option<rltrace_core::triplet::RolloutLink>,
}

impl PreparedSpan {
    /// Whether `other` is of the same trace (the writer then takes its trace row again).
    pub(crate) fn same_trace(&self, other: &PreparedSpan) -> bool {
        self.trace_id == other.trace_id
    }

    /// Whether `other` carries the very same resource text (one text per resource of a request).
    pub(crate) fn same_resource(&self, other: &PreparedSpan) -> bool {
        Arc::ptr_eq(&self.resource, &other.resource)
    }

    /// Whether both are triplets of one sequence.
    pub(crate) fn same_sequence(&self, other: &PreparedSpan) -> bool {
        matches!((&self.triplet, &other.triplet), (Some(a), Some(b)) if a.sequence_id == b.sequence_id)
    }

    /// Rough size in memory, for the queue's byte bound.
    pub fn approx_bytes(&self) -> usize {
        let t = self.triplet.as_ref().map_or(0, |t| t.state.len() + t.action.len() + t.triplet_id.len() + t.sequence_id.len() + 128);
        self.attributes.len() + self.events.len() + self.name.len() + self.status_message.len() + self.scope.len() + self.extras.as_ref().map_or(0, String::len) + t + 160
    }
}

/// Prepare analysed spans for the writer. Resources shared by many spans are serialised once.
pub fn prepare_spans(spans: Vec<AnalyzedSpan>) -> Vec<PreparedSpan> {
    let mut resources: HashMap<usize, Arc<str>> = HashMap::new();
    spans
        .into_iter()
        .map(|a| {
            let s = a.span;
            let key = Arc::as_ptr(&s.origin) as usize;
            let resource = resources
                .entry(key)
                .or_insert_with(|| Arc::from(attributes_json_string(&s.origin.resource)))
                .clone();
            let extras = s.extras.to_stored_json(&s.origin.scope_version, &s.events, &s.attributes);
            let events = if s.events.is_empty() { String::from("[]") } else { s.events_json().to_string() };
            PreparedSpan {
                trace_id: s.trace_id,
                span_id: s.span_id,
                parent_span_id: s.parent_span_id.map(i64::from_be_bytes),
                kind: s.kind,
                start_ns: s.start_time_unix_nano as i64,
                end_ns: s.end_time_unix_nano as i64,
                status_code: s.status_code,
                attributes: attributes_json_string(&s.attributes),
                events,
                resource,
                scope: s.origin.scope_name.clone(),
                extras,
                triplet: a.triplet.map(prepare_triplet),
                rewards: a.rewards,
                annotation: a.annotation,
                name: s.name,
                status_message: s.status_message,
            }
        })
        .collect()
}

fn prepare_triplet(t: TripletData) -> PreparedTriplet {
    let role = t.role().map(str::to_string);
    let task_id = t.task_id();
    let phase = t.phase().map(str::to_string);
    let has_immediate = t.has_immediate_reward();
    PreparedTriplet {
        role,
        task_id,
        phase,
        has_immediate,
        reward_components: (!t.reward_components.is_empty())
            .then(|| serde_json::to_string(&t.reward_components).unwrap_or_default()),
        state: serde_json::Value::Object(t.state).to_string(),
        action: serde_json::Value::Object(t.action).to_string(),
        triplet_id: t.triplet_id,
        explicit_id: t.explicit_id,
        sequence_id: t.sequence_id,
        seq_index: t.sequence_index,
        ts_us: t.timestamp,
        reward: t.reward,
        reward_source: t.reward_source,
        propensity: t.propensity,
        sampling_probability: t.sampling_probability,
        seq_end: t.sequence_end,
        llm: t.llm_call,
        rollout: t.rollout,
    }
}
