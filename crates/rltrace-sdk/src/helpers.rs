//! Helpers for code running inside a triplet (a `#[rl_triplet]` function or a request of the
//! tower layer): add state and action fields, set reward components, emit reward span events for
//! the triplet or its sequence, end the sequence, and propagate W3C trace context.

use std::time::SystemTime;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde::Serialize;
use serde_json::Value;

use crate::Error;
use crate::config::valid_name;
use crate::runtime::{Frame, with_current_frame};

/// How a sequence reward reaches the triplets of the sequence (DESIGN section 5).
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Every triplet gets the value.
    Uniform,
    /// Triplet i of n gets `value * gamma^(n-1-i)`; gamma in (0, 1].
    Discounted {
        /// The discount factor, in (0, 1].
        gamma: f64,
    },
    /// Only the last triplet.
    Last,
    /// Only the triplets whose `state.agent_role` equals the role.
    Role(String),
}

impl Strategy {
    /// The wire name: `uniform`, `discounted`, `last` or `role`.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Uniform => "uniform",
            Strategy::Discounted { .. } => "discounted",
            Strategy::Last => "last",
            Strategy::Role(_) => "role",
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        match self {
            Strategy::Discounted { gamma } if !(gamma.is_finite() && *gamma > 0.0 && *gamma <= 1.0) => {
                Err(Error::InvalidReward(format!("gamma must be in (0, 1], got {gamma}")))
            }
            Strategy::Role(r) if r.is_empty() => Err(Error::InvalidReward("the role of a role strategy must not be empty".into())),
            _ => Ok(()),
        }
    }
}

pub(crate) fn validate_value(value: f64) -> Result<f64, Error> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(Error::InvalidReward(format!("value must be a finite number in [0, 1], got {value}")))
    }
}

pub(crate) fn validate_source(source: &str) -> Result<(), Error> {
    if valid_name(source) { Ok(()) } else { Err(Error::InvalidReward(format!("source {source:?} must match [a-z0-9_.-]{{1,64}}"))) }
}

fn json<T: Serialize + ?Sized>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Add a field to the state of the current triplet (under the capture mode). Outside a
/// recording triplet it does nothing.
///
/// ```
/// #[rltrace_sdk::rl_triplet(role = "Plan", task_id = task)]
/// fn plan(task: &str) -> usize {
///     rltrace_sdk::state("phase", "design");
///     rltrace_sdk::action("steps", &3);
///     3
/// }
/// assert_eq!(plan("t-1"), 3);
/// ```
pub fn state<T: Serialize + ?Sized>(key: &str, value: &T) {
    with_current_frame(|f| f.with_extras(|e| e.state.push((key.to_string(), json(value)))));
}

/// Add a field to the action of the current triplet (under the capture mode). Outside a
/// recording triplet it does nothing.
pub fn action<T: Serialize + ?Sized>(key: &str, value: &T) {
    with_current_frame(|f| f.with_extras(|e| e.action.push((key.to_string(), json(value)))));
}

/// Set an immediate reward component (`rl.reward.<name>`) of the current triplet, e.g. `cost`
/// or `validation`; it replaces the computed `success` or `latency` when named so. Outside a
/// recording triplet it does nothing.
pub fn reward_component(name: &str, value: f64) -> Result<(), Error> {
    if !valid_name(name) {
        return Err(Error::InvalidReward(format!("component name {name:?} must match [a-z0-9_.-]{{1,64}}")));
    }
    let value = validate_value(value)?;
    with_current_frame(|f| {
        f.with_extras(|e| match e.components.iter_mut().find(|(c, _)| c == name) {
            Some(slot) => slot.1 = value,
            None => e.components.push((name.to_string(), value)),
        })
    });
    Ok(())
}

/// Mark the current triplet as the last of its sequence (`rl.sequence_end`); the sequence's
/// index counter is released when the triplet ends. Outside a recording triplet it does nothing.
pub fn end_sequence() {
    with_current_frame(|f| f.with_extras(|e| e.sequence_end = true));
}

/// The id of the current triplet, when one is recording.
pub fn current_triplet_id() -> Option<String> {
    with_current_frame(|f| f.triplet_id.as_deref().map(str::to_string)).flatten()
}

/// The sequence id of the current triplet (also when its sequence is not sampled).
pub fn current_sequence_id() -> Option<String> {
    Context::map_current(|cx| cx.get::<Frame>().map(|f| f.sequence_id.to_string()))
}

/// A reward event for the current triplet or its sequence, sent inside the trace as an
/// `rl.reward` span event. Start one with [`reward`].
#[derive(Debug, Clone)]
#[must_use = "call emit() to record the reward"]
pub struct Reward {
    value: f64,
    source: String,
    reason: Option<String>,
    sequence: Option<Strategy>,
}

/// A reward of `value` in [0, 1] (source `local` unless set), for the current triplet unless
/// [`Reward::for_sequence`] is called.
///
/// ```
/// use rltrace_sdk::Strategy;
///
/// #[rltrace_sdk::rl_triplet(role = "Review", task_id = "t-7")]
/// fn review() -> Result<(), rltrace_sdk::Error> {
///     rltrace_sdk::reward(0.9).source("judge").reason("clear and correct").emit()?;
///     rltrace_sdk::reward(1.0).source("terminal").for_sequence(Strategy::Discounted { gamma: 0.9 }).emit()?;
///     Ok(())
/// }
/// // Without an installed SDK nothing is recorded, and emitting is not an error.
/// assert!(review().is_ok());
/// ```
pub fn reward(value: f64) -> Reward {
    Reward { value, source: "local".into(), reason: None, sequence: None }
}

impl Reward {
    /// The source (`[a-z0-9_.-]{1,64}`, e.g. `judge`, `tests`).
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// Why this reward.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Reward the sequence of the current triplet through a strategy.
    pub fn for_sequence(mut self, strategy: Strategy) -> Self {
        self.sequence = Some(strategy);
        self
    }

    /// Validate and attach the event to the current triplet. Inside a triplet whose sequence is
    /// not sampled, or when no SDK is installed, it validates and records nothing; outside any
    /// triplet of an installed SDK it is [`Error::NoCurrentTriplet`].
    pub fn emit(self) -> Result<(), Error> {
        let value = validate_value(self.value)?;
        validate_source(&self.source)?;
        if let Some(s) = &self.sequence {
            s.validate()?;
        }
        let mut attrs = vec![KeyValue::new("rl.reward.value", value), KeyValue::new("rl.reward.source", self.source)];
        match &self.sequence {
            None => attrs.push(KeyValue::new("rl.reward.target", "triplet")),
            Some(s) => {
                attrs.push(KeyValue::new("rl.reward.target", "sequence"));
                attrs.push(KeyValue::new("rl.reward.strategy", s.name()));
                match s {
                    Strategy::Discounted { gamma } => attrs.push(KeyValue::new("rl.reward.gamma", *gamma)),
                    Strategy::Role(r) => attrs.push(KeyValue::new("rl.reward.role", r.clone())),
                    _ => {}
                }
            }
        }
        if let Some(r) = self.reason {
            attrs.push(KeyValue::new("rl.reward.reason", r));
        }
        let now = SystemTime::now();
        let found = Context::map_current(|cx| match cx.get::<Frame>() {
            Some(f) => {
                if f.sampled {
                    f.with_extras(|e| e.events.push((now, attrs)));
                }
                true
            }
            None => false,
        });
        if found || crate::runtime::current().is_none() { Ok(()) } else { Err(Error::NoCurrentTriplet) }
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value)) {
            self.0.insert(k, v);
        }
    }
}

pub(crate) struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Write the W3C `traceparent` (and `tracestate`) of the current context into outgoing
/// request headers, so the service called joins the trace.
///
/// ```
/// let mut headers = http::HeaderMap::new();
/// rltrace_sdk::inject_traceparent(&mut headers);
/// // No span is current here, so nothing is written.
/// assert!(headers.get("traceparent").is_none());
/// ```
pub fn inject_traceparent(headers: &mut http::HeaderMap) {
    inject_context(&Context::current(), headers);
}

pub(crate) fn inject_context(cx: &Context, headers: &mut http::HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

/// The context carried by incoming W3C `traceparent` / `tracestate` headers, on top of the
/// current one.
pub fn extract_context(headers: &http::HeaderMap) -> Context {
    Context::map_current(|cx| TraceContextPropagator::new().extract_with_context(cx, &HeaderExtractor(headers)))
}
