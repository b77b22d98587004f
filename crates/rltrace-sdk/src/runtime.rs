//! The triplet machinery shared by `#[rl_triplet]` and the tower layer: the installed tracer and
//! settings, the frame of the current triplet carried in the OpenTelemetry [`Context`] (so it
//! follows `.await` and nested calls), and [`Call`], one triplet from start to end.

use std::any::Any;
use std::borrow::Cow;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use opentelemetry::trace::{Span as _, SpanId, SpanKind, Status, TraceContextExt, TraceId, Tracer as _};
use opentelemetry::{Context, ContextGuard, KeyValue, StringValue};
use opentelemetry_sdk::trace::{IdGenerator, SdkTracer};
use rand::Rng as _;
use serde::Serialize;
use serde_json::Value;

use crate::capture::{self, write_bool, write_f64, write_key, write_raw, write_str, write_u64, write_value};
use crate::config::{CaptureMode, Settings, latency_reward};
use crate::sequence;

/// How a triplet's sequence id is formed (DESIGN section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `{task_id}` (the default).
    Pipeline,
    /// `{task_id}:{agent_role}`.
    Agent,
    /// `{session_id}`.
    Session,
    /// Set by the caller (`sequence_id = ...`).
    Custom,
}

impl Scope {
    /// The wire name (`rl.sequence_scope`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Pipeline => "pipeline",
            Scope::Agent => "agent",
            Scope::Session => "session",
            Scope::Custom => "custom",
        }
    }
}

/// What an installed SDK holds: its tracer and settings.
pub(crate) struct Runtime {
    pub tracer: SdkTracer,
    pub settings: Settings,
    pub sample_threshold: Option<u64>,
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
static RUNTIME: RwLock<Option<Arc<Runtime>>> = RwLock::new(None);
/// Changed on every install and uninstall: a thread's cached runtime is current while its
/// generation is.
static GENERATION: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's copy of the installed runtime, so a call takes no lock. A stale copy is kept
    /// (not used) until the thread next asks while an SDK is installed.
    static CACHED: std::cell::RefCell<(u64, Option<Arc<Runtime>>)> = const { std::cell::RefCell::new((u64::MAX, None)) };
}

/// Install a runtime; fails when one is installed.
pub(crate) fn install(rt: Runtime) -> Result<(), crate::Error> {
    let mut g = RUNTIME.write().unwrap_or_else(|p| p.into_inner());
    if g.is_some() {
        return Err(crate::Error::AlreadyInitialized);
    }
    *g = Some(Arc::new(rt));
    GENERATION.fetch_add(1, Ordering::AcqRel);
    ACTIVE.store(true, Ordering::Release);
    Ok(())
}

/// Remove the installed runtime (on shutdown).
pub(crate) fn uninstall() {
    let mut g = RUNTIME.write().unwrap_or_else(|p| p.into_inner());
    ACTIVE.store(false, Ordering::Release);
    *g = None;
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// The installed runtime, if any.
pub(crate) fn current() -> Option<Arc<Runtime>> {
    if !ACTIVE.load(Ordering::Acquire) {
        return None;
    }
    let generation = GENERATION.load(Ordering::Acquire);
    let read = || RUNTIME.read().ok()?.clone();
    CACHED
        .try_with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != generation {
                *c = (generation, read());
            }
            c.1.clone()
        })
        .unwrap_or_else(|_| read())
}

thread_local! {
    static NEXT_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// Random ids, except that a root triplet may choose its trace id beforehand: its sequence id
/// (the trace id when no key is given) must be known for the sampling decision before the span
/// starts.
#[derive(Debug, Default)]
pub(crate) struct RlIdGenerator;

impl IdGenerator for RlIdGenerator {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE_ID.with(Cell::take).unwrap_or_else(random_trace_id)
    }

    fn new_span_id(&self) -> SpanId {
        loop {
            let id: u64 = with_rng(|r| r.random());
            if id != 0 {
                return SpanId::from(id);
            }
        }
    }
}

fn random_trace_id() -> TraceId {
    loop {
        let id: u128 = with_rng(|r| r.random());
        if id != 0 {
            return TraceId::from(id);
        }
    }
}

thread_local! {
    /// A fast generator per thread, seeded from the OS-seeded thread generator: ids need to be
    /// unique, not unpredictable, and ChaCha costs several times more per id.
    static RNG: std::cell::RefCell<rand::rngs::SmallRng> = std::cell::RefCell::new(rand::SeedableRng::from_rng(&mut rand::rng()));
}

/// Run `f` with this thread's fast generator.
pub(crate) fn with_rng<T>(f: impl FnOnce(&mut rand::rngs::SmallRng) -> T) -> T {
    RNG.with(|r| f(&mut r.borrow_mut()))
}

/// A field added by a helper, kept until the triplet ends.
#[derive(Default)]
pub(crate) struct Extras {
    pub state: Vec<(String, Value)>,
    pub action: Vec<(String, Value)>,
    pub components: Vec<(String, f64)>,
    pub events: Vec<(SystemTime, Vec<KeyValue>)>,
    pub sequence_end: bool,
}

/// The current triplet, as seen from the code it runs (stored in the [`Context`]).
pub(crate) struct Frame {
    pub sequence_id: Arc<str>,
    pub scope: Scope,
    pub task_id: Option<Arc<str>>,
    pub session_id: Option<Arc<str>>,
    pub depth: u32,
    pub sampled: bool,
    pub triplet_id: Option<Arc<str>>,
    pub extras: Mutex<Extras>,
}

impl Frame {
    pub(crate) fn with_extras<T>(&self, f: impl FnOnce(&mut Extras) -> T) -> T {
        let mut g = self.extras.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }
}

/// Run `f` with the frame of the current triplet, if any is recording.
pub(crate) fn with_current_frame<T>(f: impl FnOnce(&Frame) -> T) -> Option<T> {
    Context::map_current(|cx| cx.get::<Frame>().filter(|fr| fr.sampled).map(f))
}

/// The keys of a sequence given at a call.
#[derive(Debug, Default)]
pub struct Keys {
    /// `task_id = ...`.
    pub task_id: Option<Arc<str>>,
    /// `session_id = ...`.
    pub session_id: Option<Arc<str>>,
    /// `sequence_id = ...`.
    pub sequence_id: Option<Arc<str>>,
}

/// A key given as a string literal (`task_id = "..."`): its shared string is made once per call
/// site, so a call clones it instead of allocating.
#[derive(Debug)]
pub struct StaticKey {
    text: &'static str,
    shared: std::sync::OnceLock<Arc<str>>,
}

impl StaticKey {
    /// A key for `text`.
    pub const fn new(text: &'static str) -> StaticKey {
        StaticKey { text, shared: std::sync::OnceLock::new() }
    }

    /// The shared string.
    pub fn get(&self) -> Arc<str> {
        self.shared.get_or_init(|| Arc::from(self.text)).clone()
    }
}

/// What is known of a triplet before it starts.
pub(crate) struct Start<'a> {
    pub name: Cow<'static, str>,
    pub kind: SpanKind,
    pub scope: Scope,
    pub role: Option<&'a str>,
    pub function: Option<&'a str>,
    pub keys: Keys,
    pub extra_attributes: Vec<KeyValue>,
    pub latency_budget: Option<std::time::Duration>,
}

/// Writes the captured arguments (or a custom state) into the state object.
pub struct StateWriter<'a> {
    buf: &'a mut Vec<u8>,
    mode: CaptureMode,
    args_open: bool,
}

impl StateWriter<'_> {
    /// Capture one argument under `args.<name>`.
    pub fn arg<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) {
        if !self.args_open {
            write_key(self.buf, "args");
            self.buf.push(b'{');
            self.args_open = true;
        }
        write_key(self.buf, name);
        write_value(self.buf, value, &self.mode);
    }

    /// Record the value of a custom state capturer under `args`.
    pub fn custom<T: Serialize + ?Sized>(&mut self, value: &T) {
        write_key(self.buf, "args");
        write_value(self.buf, value, &self.mode);
    }

    /// Add a top-level state field.
    pub(crate) fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        write_key(self.buf, key);
        write_value(self.buf, value, &self.mode);
    }

    fn close(&mut self) {
        if self.args_open {
            self.buf.push(b'}');
            self.args_open = false;
        }
    }
}

/// The action of a call being recorded: error, output and custom fields.
pub struct Outcome {
    fields: Vec<u8>,
    success: bool,
    error_message: Option<String>,
    mode: CaptureMode,
    attributes: Vec<KeyValue>,
}

impl Outcome {
    fn new(mode: CaptureMode) -> Outcome {
        Outcome { fields: Vec::new(), success: true, error_message: None, mode, attributes: Vec::new() }
    }

    /// Record a failure: its type and message.
    pub fn error(&mut self, error_type: &str, message: Option<String>) {
        self.success = false;
        write_key(&mut self.fields, "error_type");
        write_str(&mut self.fields, error_type);
        if let Some(m) = &message {
            write_key(&mut self.fields, "error_message");
            write_value(&mut self.fields, m.as_str(), &self.mode);
        }
        self.error_message = message.or_else(|| Some(error_type.to_string()));
    }

    /// Record the output: its size in bytes and SHA-256 as JSON, and the value under the capture
    /// mode. A `null` output (a function returning `()`) records nothing.
    pub fn output<T: Serialize + ?Sized>(&mut self, value: &T) {
        let mut json = capture::take_buf();
        if serde_json::to_writer(&mut json, value).is_err() || json == b"null" {
            capture::give_buf(json);
            return;
        }
        write_key(&mut self.fields, "output_size");
        write_u64(&mut self.fields, json.len() as u64);
        write_key(&mut self.fields, "output_sha256");
        write_str(&mut self.fields, &capture::sha256_hex(&json));
        write_key(&mut self.fields, "output");
        if json.len() < self.mode.untouched_below() {
            self.fields.extend_from_slice(&json);
        } else {
            match serde_json::from_slice::<Value>(&json) {
                Ok(mut v) => {
                    capture::apply_mode(&mut v, &self.mode);
                    write_value(&mut self.fields, &v, &CaptureMode::Full);
                }
                Err(_) => self.fields.extend_from_slice(b"null"),
            }
        }
        capture::give_buf(json);
    }

    /// Add an action field.
    pub(crate) fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        write_key(&mut self.fields, key);
        write_value(&mut self.fields, value, &self.mode);
    }

    /// Add a span attribute besides the `rl.*` ones.
    pub(crate) fn attribute(&mut self, kv: KeyValue) {
        self.attributes.push(kv);
    }

    /// Mark the call failed without an error value (e.g. an HTTP 5xx).
    pub(crate) fn fail(&mut self, message: String) {
        self.success = false;
        self.error_message = Some(message);
    }
}

struct Recording {
    rt: Arc<Runtime>,
    span: opentelemetry_sdk::trace::Span,
    started: SystemTime,
    state: Vec<u8>,
    latency_budget: Option<std::time::Duration>,
}

/// One triplet from its start to its end. Created by the code `#[rl_triplet]` generates and by
/// the tower layer; not meant to be used directly.
#[must_use = "a triplet ends when finished or dropped"]
pub struct Call {
    cx: Option<Context>,
    rec: Option<Box<Recording>>,
}

impl Call {
    /// A call that records nothing (no SDK installed).
    pub(crate) fn disabled() -> Call {
        Call { cx: None, rec: None }
    }

    /// Start the triplet of an instrumented function.
    pub fn start_fn(meta: &'static FnMeta, role: Option<&str>, keys: Keys, args: impl FnOnce(&mut StateWriter<'_>)) -> Call {
        let Some(rt) = current() else { return Call::disabled() };
        let start = Start {
            name: Cow::Borrowed(meta.name),
            kind: SpanKind::Internal,
            scope: meta.scope,
            role,
            function: Some(meta.function),
            keys,
            extra_attributes: Vec::new(),
            latency_budget: None,
        };
        Context::map_current(|parent| Call::start(rt, parent, start, args))
    }

    /// Start a triplet under `parent`.
    pub(crate) fn start(rt: Arc<Runtime>, parent: &Context, s: Start<'_>, write_state: impl FnOnce(&mut StateWriter<'_>)) -> Call {
        let parent_frame = parent.get::<Frame>();
        let Keys { task_id, session_id, sequence_id } = s.keys;
        let explicit_task = task_id.is_some();
        let task_id: Option<Arc<str>> = task_id.or_else(|| parent_frame.and_then(|f| f.task_id.clone()));
        let session_id: Option<Arc<str>> = session_id.or_else(|| parent_frame.and_then(|f| f.session_id.clone()));
        let keyed: Option<Arc<str>> = match s.scope {
            Scope::Custom => sequence_id,
            Scope::Session => session_id.clone(),
            Scope::Agent => match (&task_id, s.role) {
                (Some(t), Some(r)) => Some(Arc::from(format!("{t}:{r}"))),
                _ => None,
            },
            // Without its own key a pipeline triplet continues the sequence of its parent.
            Scope::Pipeline => task_id.clone().filter(|_| explicit_task),
        };
        let mut root_trace: Option<TraceId> = None;
        let (sequence_id, scope) = match (keyed, parent_frame) {
            (Some(k), _) => (k, s.scope),
            (None, Some(f)) => (f.sequence_id.clone(), f.scope),
            (None, None) => {
                let sc = parent.span().span_context().clone();
                let tid = if sc.is_valid() {
                    sc.trace_id()
                } else {
                    let t = random_trace_id();
                    root_trace = Some(t);
                    t
                };
                (Arc::from(tid.to_string()), Scope::Custom)
            }
        };
        let sampled = match parent_frame {
            Some(f) if f.sequence_id == sequence_id => f.sampled,
            _ => sequence::keep(&sequence_id, rt.sample_threshold),
        };
        let depth = parent_frame.map_or(0, |f| f.depth + 1);
        if !sampled {
            let frame = Frame { sequence_id, scope, task_id, session_id, depth, sampled: false, triplet_id: None, extras: Mutex::default() };
            return Call { cx: Some(parent.with_value(frame)), rec: None };
        }

        let index = sequence::next_index(&sequence_id);
        let triplet_id: Arc<str> = {
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            Arc::from(&*uuid::Builder::from_random_bytes(with_rng(|r| r.random())).into_uuid().hyphenated().encode_lower(&mut buf))
        };
        let mode = rt.settings.capture;

        // The fixed fields are written with constant key fragments; `call_depth` is never the
        // first field, so every fragment but the first carries its comma.
        let mut state = capture::take_buf();
        state.push(b'{');
        if let Some(r) = s.role {
            write_raw(&mut state, "\"agent_role\":");
            write_str(&mut state, r);
        }
        if let Some(f) = s.function {
            let key = if state.len() > 1 { ",\"function\":" } else { "\"function\":" };
            write_raw(&mut state, key);
            write_str(&mut state, f);
        }
        let key = if state.len() > 1 { ",\"call_depth\":" } else { "\"call_depth\":" };
        write_raw(&mut state, key);
        write_u64(&mut state, u64::from(depth));
        if let Some(t) = &task_id {
            write_raw(&mut state, ",\"task_id\":");
            write_str(&mut state, t);
        }
        if let Some(t) = &session_id {
            write_raw(&mut state, ",\"session_id\":");
            write_str(&mut state, t);
        }
        {
            let mut w = StateWriter { buf: &mut state, mode, args_open: false };
            write_state(&mut w);
            w.close();
        }

        let mut attributes = Vec::with_capacity(14 + s.extra_attributes.len());
        attributes.push(KeyValue::new("rl.triplet_id", StringValue::from(triplet_id.clone())));
        attributes.push(KeyValue::new("rl.sequence_id", StringValue::from(sequence_id.clone())));
        attributes.push(KeyValue::new("rl.sequence_scope", scope.as_str()));
        attributes.push(KeyValue::new("rl.sequence_index", index as i64));
        let started = SystemTime::now();
        attributes.push(KeyValue::new("rl.timestamp_utc", capture::rfc3339_utc(started)));
        attributes.push(KeyValue::new("rl.sampling.probability", rt.settings.sampling_ratio));
        attributes.extend(s.extra_attributes);
        let mut builder = rt.tracer.span_builder(s.name).with_kind(s.kind).with_start_time(started);
        builder.attributes = Some(attributes);
        if let Some(t) = root_trace {
            NEXT_TRACE_ID.with(|c| c.set(Some(t)));
        }
        let span = rt.tracer.build_with_context(builder, parent);
        NEXT_TRACE_ID.with(|c| c.set(None));

        let frame = Frame { sequence_id, scope, task_id, session_id, depth, sampled: true, triplet_id: Some(triplet_id), extras: Mutex::default() };
        let cx = parent.with_value(frame).with_remote_span_context(span.span_context().clone());
        Call { cx: Some(cx), rec: Some(Box::new(Recording { rt, span, started, state, latency_budget: s.latency_budget })) }
    }

    /// Whether this call records a triplet.
    pub fn is_recording(&self) -> bool {
        self.rec.is_some()
    }

    /// The context the body runs in (the triplet's span and frame), if any.
    pub fn context(&self) -> Option<Context> {
        self.cx.clone()
    }

    /// Make the triplet's context current until the guard drops.
    pub fn enter(&self) -> Option<ContextGuard> {
        self.cx.as_ref().map(|c| c.clone().attach())
    }

    /// A new outcome to fill in before [`Call::finish`].
    pub fn outcome(&self) -> Outcome {
        Outcome::new(self.rec.as_ref().map_or(CaptureMode::Full, |r| r.rt.settings.capture))
    }

    /// End the triplet with its outcome.
    pub fn finish(mut self, outcome: Outcome) {
        self.end(outcome);
    }

    /// End the triplet of a call that panicked; the caller resumes the panic.
    pub fn finish_panic(mut self, payload: &(dyn Any + Send)) {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic with a non-string payload".to_string());
        let mut o = self.outcome();
        o.error("panic", Some(message));
        o.field("panic", &true);
        self.end(o);
    }

    fn end(&mut self, outcome: Outcome) {
        let (Some(rec), Some(cx)) = (self.rec.take(), self.cx.take()) else { return };
        // The wall clock read once at each end gives the span's times and the duration.
        let ended = SystemTime::now();
        let Recording { rt, mut span, started, state, latency_budget } = *rec;
        let elapsed = ended.duration_since(started).unwrap_or_default();
        let Some(frame) = cx.get::<Frame>() else { return };
        let extras = frame.with_extras(std::mem::take);
        let settings = &rt.settings;
        let mode = settings.capture;

        let mut state = state;
        for (k, v) in &extras.state {
            write_key(&mut state, k);
            write_value(&mut state, v, &mode);
        }
        state.push(b'}');
        let state_value = capture::state_value(&state);
        capture::give_buf(state);

        let mut action = capture::take_buf();
        write_raw(&mut action, "{\"success\":");
        write_bool(&mut action, outcome.success);
        write_raw(&mut action, ",\"duration_ms\":");
        write_f64(&mut action, elapsed.as_secs_f64() * 1000.0);
        // Each outcome field was written with its leading comma.
        action.extend_from_slice(&outcome.fields);
        for (k, v) in &extras.action {
            write_key(&mut action, k);
            write_value(&mut action, v, &mode);
        }
        action.push(b'}');
        let action_value = capture::to_string_value(&action);
        capture::give_buf(action);

        let given = |name: &str| extras.components.iter().find(|(c, _)| c == name).map(|(_, v)| *v);
        let success = given("success").unwrap_or(if outcome.success { 1.0 } else { 0.0 });
        let latency = given("latency").unwrap_or_else(|| latency_reward(elapsed, latency_budget.unwrap_or(settings.latency_budget)));
        let others = || extras.components.iter().filter(|(c, _)| c != "success" && c != "latency");

        span.set_attribute(KeyValue::new("rl.state", state_value));
        span.set_attribute(KeyValue::new("rl.action", action_value));
        if let Some(w) = &settings.reward_weights
            && let Some(r) = w.combine([("success", success), ("latency", latency)].into_iter().chain(others().map(|(c, v)| (c.as_str(), *v))))
        {
            span.set_attribute(KeyValue::new("rl.reward", r));
        }
        span.set_attribute(KeyValue::new("rl.reward.success", success));
        span.set_attribute(KeyValue::new("rl.reward.latency", latency));
        for (c, v) in others() {
            span.set_attribute(KeyValue::new(format!("rl.reward.{c}"), *v));
        }
        if extras.sequence_end {
            span.set_attribute(KeyValue::new("rl.sequence_end", true));
        }
        for kv in outcome.attributes {
            span.set_attribute(kv);
        }
        if !outcome.success {
            span.set_status(Status::error(outcome.error_message.unwrap_or_default()));
        }
        for (at, attrs) in extras.events {
            span.add_event_with_timestamp("rl.reward", at, attrs);
        }
        span.end_with_timestamp(ended);
        if extras.sequence_end {
            sequence::forget(&frame.sequence_id);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.rec.is_some() {
            // Dropped before it finished: a future cancelled while awaiting.
            let mut o = self.outcome();
            o.fail("cancelled".into());
            o.field("cancelled", &true);
            self.end(o);
        }
    }
}

/// Static facts of an instrumented function, generated by `#[rl_triplet]`.
#[derive(Debug)]
pub struct FnMeta {
    /// Span name.
    pub name: &'static str,
    /// Function name (`state.function`).
    pub function: &'static str,
    /// Sequence scope.
    pub scope: Scope,
}
