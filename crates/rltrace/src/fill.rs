//! `rltrace loadgen --fill`: fill a running collector, over its HTTP API only, with a realistic
//! mix of triplets and rewards, to measure the read paths at scale (DESIGN sections 6 and 8).
//!
//! What is sent, deterministic for a seed (ids, times, contents, which rewards go where):
//! - sequences `task-{n}` (pipeline scope), one trace each: a root `orchestrator.run_task` span
//!   (not a triplet), agent-step triplets of the seven roles with review and test loops
//!   (`rl.triplet_id`, `rl.sequence_id`, `rl.sequence_index`, `rl.state.agent_role`,
//!   `rl.state.task_id`, a small JSON `rl.state` and `rl.action`), and under some steps an LLM-call
//!   span with GenAI attributes only (`gen_ai.operation.name = chat`, model, messages, token
//!   counts, `gen_ai.conversation.id = task-{n}`), which the collector makes a triplet of the same
//!   sequence;
//! - immediate rewards (`rl.reward.success`, `rl.reward.latency`) on most agent steps;
//! - sequence rewards carried by `rl.reward` span events on a sequence's last agent step, with
//!   every strategy (uniform, discounted with gamma, last, role) and the sources `terminal` and
//!   `judge`; judge scores (`gen_ai.evaluation.result`) on some LLM calls;
//! - through the REST API, after the sequence's spans are acknowledged: HITL decisions (every kind,
//!   deferred included), test results, defects by task id, and rewards for single triplets;
//! - before any span: pending rewards (`"pending": true`) for triplets and sequences that do not
//!   exist yet, joined by the collector when their spans arrive.
//!
//! `--triplets` counts every triplet (agent steps and LLM calls); `--long-sequence L` makes
//! `task-0` a sequence of exactly L triplets, the others share the rest. Every REST call carries an
//! idempotency key derived from the seed, and every span id derives from it, so the same fill sent
//! twice to one collector stores nothing new. Spans go in batches of `--batch` with
//! `--concurrency` requests in flight; REST calls run in a pool of the same size. A 503 (or 429) is
//! waited out as its `Retry-After` says and the same request sent again, a bounded number of times.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use prost::Message;
use rltrace_otlp::proto::collector::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use rltrace_otlp::proto::common::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value};
use rltrace_otlp::proto::resource::Resource;
use rltrace_otlp::proto::trace::{ResourceSpans, ScopeSpans, Span, Status, span};
use serde_json::json;

/// What to fill.
#[derive(Debug, Clone)]
pub(crate) struct FillConfig {
    /// `http://HOST:PORT` of the collector's HTTP listener.
    pub target: String,
    /// Triplets in all (agent steps and LLM calls).
    pub triplets: u64,
    /// Sequences in all.
    pub sequences: u64,
    /// Seed of everything generated.
    pub seed: u64,
    /// Length of the long sequence `task-0` (0: none).
    pub long_sequence: u64,
    /// OTLP requests in flight, and REST calls in flight.
    pub concurrency: usize,
    /// Spans per OTLP request.
    pub batch: usize,
    /// Bound on the whole fill.
    pub max_seconds: u64,
    /// Print the summary as one JSON object.
    pub json: bool,
}

/// The seven agent roles of the pipeline.
const ROLES: [&str; 7] = ["Planning", "Design", "Design Review", "Code", "Code Review", "Test", "Postmortem"];
/// A fixed start (2026-01-01T00:00:00Z) so that times are the same on every run.
const EPOCH_NS: u64 = 1_767_225_600_000_000_000;
/// Sequences start spread over this window after [`EPOCH_NS`].
const WINDOW_NS: u64 = 30 * 24 * 3600 * 1_000_000_000;
/// Longest sequence: a sequence travels in one OTLP request, which must stay under the
/// collector's default body limit of 16 MiB (a span is under 1 KB of protobuf).
const MAX_SEQUENCE_TRIPLETS: u64 = 16_000;
/// REST calls in flight per OTLP request in flight: a REST call is small and waits mostly for the
/// writer's commit, which groups the calls that wait together.
const REST_WORKERS_PER_REQUEST: usize = 4;
/// Retries of one request answered 503 / 429 or not answered at all.
const MAX_ATTEMPTS: u32 = 60;

// Shares of sequences (or steps) that get each kind of reward.
const P_IMMEDIATE: f64 = 0.85;
const P_LLM_CALL: f64 = 0.35;
const P_EVAL: f64 = 0.15;
const P_TERMINAL: f64 = 0.6;
const P_JUDGE: f64 = 0.15;
const P_HITL: f64 = 0.2;
const P_TESTS: f64 = 0.2;
const P_DEFECT: f64 = 0.05;
const P_TRIPLET: f64 = 0.05;
const P_PENDING_TRIPLET: f64 = 0.02;
const P_PENDING_SEQUENCE: f64 = 0.01;
const P_SEQUENCE_END: f64 = 0.8;

// ----- deterministic randomness (SplitMix64: the same numbers on every platform and version) -----

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a random stream is for; each purpose of each sequence has its own stream.
#[derive(Clone, Copy)]
#[repr(u64)]
enum Tag {
    Length = 1,
    Plan,
    Content,
    Rewards,
    Rest,
    Pending,
    Forced,
    Ids,
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64, tag: Tag, n: u64) -> Rng {
        Rng(mix(seed ^ mix((tag as u64) ^ mix(n))))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in [0, n) (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A value in [0, 1] with two decimals.
    fn score(&mut self, lo: f64) -> f64 {
        let v = lo + (1.0 - lo) * self.unit();
        (v * 100.0).round() / 100.0
    }
}

const WORDS: [&str; 48] = [
    "cache", "parser", "schema", "retry", "index", "pager", "token", "queue", "handler", "router", "config", "session", "export",
    "ledger", "reward", "policy", "review", "latency", "budget", "migration", "endpoint", "fixture", "timeout", "payload",
    "batch", "cursor", "filter", "window", "metric", "trace", "span", "sequence", "writer", "reader", "snapshot", "manifest",
    "checksum", "rollout", "buffer", "limit", "client", "server", "backoff", "refactor", "module", "interface", "contract",
    "threshold",
];

fn words(rng: &mut Rng, n: usize, out: &mut String) {
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
}

// ----- the plan of a fill -----

/// Which sequences get which reward: each kind with its probability, and for every kind one
/// sequence chosen by the seed whatever the draw, so that even a small fill has every kind.
struct Fill {
    cfg: FillConfig,
    forced: BTreeMap<&'static str, u64>,
}

impl Fill {
    fn new(cfg: FillConfig) -> Fill {
        let mut forced = BTreeMap::new();
        let mut rng = Rng::new(cfg.seed, Tag::Forced, 0);
        for kind in ["terminal", "judge", "hitl", "tests", "defect", "triplet", "pending_triplet", "pending_sequence"] {
            forced.insert(kind, rng.below(cfg.sequences));
        }
        Fill { cfg, forced }
    }

    fn chosen(&self, rng: &mut Rng, kind: &'static str, n: u64, p: f64) -> bool {
        // Draw first, so the stream advances the same way whether or not the sequence is forced.
        rng.chance(p) | (self.forced.get(kind) == Some(&n))
    }

    fn sequence_id(n: u64) -> String {
        format!("task-{n}")
    }

    /// Triplets in sequence `n`: the long sequence's length for `task-0` when asked, the rest
    /// shared out evenly, pairs of sequences trading a seeded amount so that lengths vary while
    /// the total stays exact.
    fn length(&self, n: u64) -> u64 {
        let c = &self.cfg;
        let (first, total, count) = if c.long_sequence > 0 { (1, c.triplets - c.long_sequence, c.sequences - 1) } else { (0, c.triplets, c.sequences) };
        if n < first {
            return c.long_sequence;
        }
        let j = n - first;
        let share = |j: u64| total / count + u64::from(j < total % count);
        let pair = j / 2;
        let (a, b) = (2 * pair, 2 * pair + 1);
        if b >= count {
            return share(j);
        }
        let (la, lb) = (share(a), share(b));
        let mut rng = Rng::new(c.seed, Tag::Length, first + pair);
        let d = rng.below(lb.div_ceil(2)).min(lb - 1);
        if j == a { la + d } else { lb - d }
    }

    /// The steps of sequence `n`: agent roles with review and test loops, some followed by an LLM
    /// call, `len` triplets in all.
    fn plan(&self, n: u64) -> Plan {
        let len = self.length(n);
        let mut rng = Rng::new(self.cfg.seed, Tag::Plan, n);
        let mut steps = Vec::new();
        let mut pos = 0u64;
        let mut role = 0usize;
        let mut iteration = 1u32;
        while pos < len {
            let llm = pos + 1 < len && rng.chance(P_LLM_CALL);
            steps.push(Step { pos, role, iteration, llm });
            pos += 1 + u64::from(llm);
            role = match ROLES[role] {
                "Design Review" if rng.chance(0.3) => 1,
                "Code Review" if rng.chance(0.3) => 3,
                "Test" if rng.chance(0.2) => 3,
                "Postmortem" => {
                    iteration += 1;
                    0
                }
                _ => role + 1,
            };
        }
        let ended = rng.chance(P_SEQUENCE_END);
        Plan { n, len, steps, ended }
    }

    fn triplet_id(&self, n: u64, pos: u64) -> String {
        let mut rng = Rng::new(self.cfg.seed, Tag::Ids, n.wrapping_mul(1 << 24) ^ pos);
        let (a, b) = (rng.next(), rng.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }

    fn trace_id(&self, n: u64) -> Vec<u8> {
        let mut rng = Rng::new(self.cfg.seed, Tag::Ids, u64::MAX - n);
        let mut id = Vec::with_capacity(16);
        id.extend_from_slice(&(rng.next() | 1).to_be_bytes());
        id.extend_from_slice(&rng.next().to_be_bytes());
        id
    }

    fn span_id(&self, n: u64, j: u64) -> Vec<u8> {
        (mix(self.cfg.seed ^ mix(n ^ mix(j.wrapping_add(0x5151)))) | 1).to_be_bytes().to_vec()
    }

    /// When the triplet at `pos` of sequence `n` starts: sequences spread over 30 days from a
    /// fixed date, steps 40 s apart.
    fn step_time(&self, n: u64, pos: u64) -> u64 {
        let start = EPOCH_NS + (n as u128 * WINDOW_NS as u128 / self.cfg.sequences.max(1) as u128) as u64;
        start + pos * 40_000_000_000
    }
}

/// One agent step of a sequence: its position, role, pipeline iteration, and whether an LLM call
/// (the triplet at `pos + 1`) runs under it.
#[derive(Debug, Clone, Copy)]
struct Step {
    pos: u64,
    role: usize,
    iteration: u32,
    llm: bool,
}

#[derive(Debug)]
struct Plan {
    n: u64,
    len: u64,
    steps: Vec<Step>,
    ended: bool,
}

impl Plan {
    fn roles(&self) -> BTreeSet<&'static str> {
        self.steps.iter().map(|s| ROLES[s.role]).collect()
    }
}

/// Counts of what was sent, by kind.
#[derive(Debug, Default, Clone)]
struct Counts {
    sequences: u64,
    spans: u64,
    triplets: u64,
    immediate: u64,
    terminal: u64,
    judge: u64,
    hitl: u64,
    tests: u64,
    defect: u64,
    triplet: u64,
    pending_triplet: u64,
    pending_sequence: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.sequences += o.sequences;
        self.spans += o.spans;
        self.triplets += o.triplets;
        self.immediate += o.immediate;
        self.terminal += o.terminal;
        self.judge += o.judge;
        self.hitl += o.hitl;
        self.tests += o.tests;
        self.defect += o.defect;
        self.triplet += o.triplet;
        self.pending_triplet += o.pending_triplet;
        self.pending_sequence += o.pending_sequence;
    }

    fn add_kind(&mut self, kind: RestKind) {
        match kind {
            RestKind::Hitl => self.hitl += 1,
            RestKind::Tests => self.tests += 1,
            RestKind::Defect => self.defect += 1,
            RestKind::Triplet => self.triplet += 1,
            RestKind::PendingTriplet => self.pending_triplet += 1,
            RestKind::PendingSequence => self.pending_sequence += 1,
        }
    }
}

// ----- spans -----

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn s(v: impl Into<String>) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

fn int(v: i64) -> any_value::Value {
    any_value::Value::IntValue(v)
}

fn dbl(v: f64) -> any_value::Value {
    any_value::Value::DoubleValue(v)
}

const MODELS: [(&str, &str); 3] = [("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4"), ("openai", "gpt-4.1")];
const STRATEGIES: [&str; 4] = ["uniform", "discounted", "last", "role"];

impl Fill {
    /// The spans of one sequence, in order: the root, then each step and its LLM call.
    fn spans(&self, plan: &Plan, out: &mut Vec<(Span, Counts)>) {
        let n = plan.n;
        let seq = Fill::sequence_id(n);
        let trace_id = self.trace_id(n);
        let mut rng = Rng::new(self.cfg.seed, Tag::Content, n);
        let mut rewards = Rng::new(self.cfg.seed, Tag::Rewards, n);
        let terminal = self.chosen(&mut rewards, "terminal", n, P_TERMINAL);
        let judge = self.chosen(&mut rewards, "judge", n, P_JUDGE);
        let roles: Vec<&str> = plan.roles().into_iter().collect();
        let root_id = self.span_id(n, u64::MAX);
        let start = self.step_time(n, 0);
        let end = self.step_time(n, plan.len) - 1_000_000_000;
        let root = Span {
            trace_id: trace_id.clone(),
            span_id: root_id.clone(),
            name: "orchestrator.run_task".into(),
            kind: 2,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: vec![kv("task.id", s(seq.clone())), kv("http.route", s("/tasks/{task_id}/run")), kv("pipeline.iterations", int(plan.steps.last().map_or(1, |s| s.iteration) as i64))],
            status: Some(Status { code: 1, ..Default::default() }),
            ..Default::default()
        };
        out.push((root, Counts { spans: 1, ..Default::default() }));
        let last_step = plan.steps.len().saturating_sub(1);
        let mut budget = 5000i64;
        for (i, step) in plan.steps.iter().enumerate() {
            let role = ROLES[step.role];
            let mut counts = Counts { spans: 1, triplets: 1, ..Default::default() };
            let t0 = self.step_time(n, step.pos);
            let duration = rng.range(2_000, 30_000) * 1_000_000;
            budget -= rng.range(10, 120) as i64;
            let success = !(role == "Test" && rng.chance(0.25)) && rng.chance(0.95);
            let mut state = String::with_capacity(320);
            state.push_str(&format!(
                r#"{{"iteration":{},"attempt":{},"budget_remaining":{budget},"files_in_scope":{},"open_reviews":{},"previous_role":"{}","context":""#,
                step.iteration,
                1 + rng.below(3),
                rng.range(1, 40),
                rng.below(4),
                if i == 0 { "none" } else { ROLES[plan.steps[i - 1].role] },
            ));
            let context_words = 4 + rng.below(6) as usize;
            words(&mut rng, context_words, &mut state);
            state.push_str(r#"","goal":""#);
            words(&mut rng, 4, &mut state);
            state.push_str("\"}");
            let artifact = match role {
                "Planning" => "plan",
                "Design" => "design_doc",
                "Design Review" | "Code Review" => "review",
                "Code" => "patch",
                "Test" => "test_report",
                _ => "postmortem",
            };
            let mut action = format!(
                r#"{{"success":{success},"duration_ms":{},"artifact":"{artifact}","output_size":{},"summary":""#,
                duration / 1_000_000,
                rng.range(200, 20_000)
            );
            words(&mut rng, 5, &mut action);
            action.push('"');
            match role {
                "Design Review" | "Code Review" => action.push_str(&format!(r#","verdict":"{}""#, rng.pick(&["approve", "changes_requested", "comment"]))),
                "Test" => action.push_str(&format!(r#","tests_run":{},"tests_failed":{}"#, rng.range(20, 400), if success { 0 } else { rng.range(1, 9) })),
                "Code" => action.push_str(&format!(r#","lines_added":{},"lines_removed":{}"#, rng.range(1, 400), rng.below(200))),
                _ => {}
            }
            action.push('}');
            let mut attributes = vec![
                kv("rl.triplet_id", s(self.triplet_id(n, step.pos))),
                kv("rl.sequence_id", s(seq.clone())),
                kv("rl.sequence_scope", s("pipeline")),
                kv("rl.sequence_index", int(step.pos as i64)),
                kv("rl.state.agent_role", s(role)),
                kv("rl.state.task_id", s(seq.clone())),
                kv("rl.state", s(state)),
                kv("rl.action", s(action)),
            ];
            if rewards.chance(P_IMMEDIATE) {
                attributes.push(kv("rl.reward.success", dbl(if success { 1.0 } else { 0.0 })));
                attributes.push(kv("rl.reward.latency", dbl((1.0 - duration as f64 / 40e9).clamp(0.0, 1.0))));
                counts.immediate += 1;
            }
            let mut events = Vec::new();
            if i == last_step {
                if plan.ended {
                    attributes.push(kv("rl.sequence_end", any_value::Value::BoolValue(true)));
                }
                for (on, source) in [(terminal, "terminal"), (judge, "judge")] {
                    if !on {
                        continue;
                    }
                    let strategy = *rewards.pick(&STRATEGIES);
                    let mut a = vec![
                        kv("rl.reward.value", dbl(rewards.score(0.0))),
                        kv("rl.reward.target", s("sequence")),
                        kv("rl.reward.strategy", s(strategy)),
                        kv("rl.reward.source", s(source)),
                        kv("rl.reward.reason", s(if source == "terminal" { "task finished" } else { "judge score of the whole task" })),
                    ];
                    match strategy {
                        "discounted" => a.push(kv("rl.reward.gamma", dbl(*rewards.pick(&[0.9, 0.95, 0.99])))),
                        "role" => a.push(kv("rl.reward.role", s(*rewards.pick(&roles)))),
                        _ => {}
                    }
                    events.push(span::Event { time_unix_nano: t0 + duration, name: "rl.reward".into(), attributes: a, ..Default::default() });
                    if source == "terminal" {
                        counts.terminal += 1;
                    } else {
                        counts.judge += 1;
                    }
                }
            }
            let agent = Span {
                trace_id: trace_id.clone(),
                span_id: self.span_id(n, step.pos),
                parent_span_id: root_id.clone(),
                name: format!("{}_agent.execute", role.to_ascii_lowercase().replace(' ', "_")),
                kind: 1,
                start_time_unix_nano: t0,
                end_time_unix_nano: t0 + duration,
                attributes,
                events,
                status: Some(if success { Status { code: 1, ..Default::default() } } else { Status { code: 2, message: format!("{artifact} failed") } }),
                ..Default::default()
            };
            out.push((agent, counts));
            if step.llm {
                let mut counts = Counts { spans: 1, triplets: 1, ..Default::default() };
                // Not instrumented by rltrace: GenAI attributes only; the conversation is the task.
                let (provider, model) = *rng.pick(&MODELS);
                let mut prompt = String::new();
                words(&mut rng, 10, &mut prompt);
                let mut answer = String::new();
                words(&mut rng, 8, &mut answer);
                let input = json!([
                    {"role": "system", "content": format!("You are the {role} agent of the pipeline.")},
                    {"role": "user", "content": prompt},
                ]);
                let output = json!([{"role": "assistant", "content": answer}]);
                let (tokens_in, tokens_out) = (rng.range(200, 4000) as i64, rng.range(20, 800) as i64);
                let llm_start = t0 + 500_000_000;
                let llm_end = llm_start + rng.range(300, 1_500) * 1_000_000;
                let mut events = Vec::new();
                if !judge && rewards.chance(P_EVAL) {
                    events.push(span::Event {
                        time_unix_nano: llm_end,
                        name: "gen_ai.evaluation.result".into(),
                        attributes: vec![kv("gen_ai.evaluation.name", s("helpfulness")), kv("gen_ai.evaluation.score.value", dbl(rewards.score(0.2)))],
                        ..Default::default()
                    });
                    counts.judge += 1;
                }
                let llm = Span {
                    trace_id: trace_id.clone(),
                    span_id: self.span_id(n, step.pos + 1),
                    parent_span_id: self.span_id(n, step.pos),
                    name: format!("chat {model}"),
                    kind: 3,
                    start_time_unix_nano: llm_start,
                    end_time_unix_nano: llm_end,
                    attributes: vec![
                        kv("gen_ai.operation.name", s("chat")),
                        kv("gen_ai.provider.name", s(provider)),
                        kv("gen_ai.request.model", s(model)),
                        kv("gen_ai.request.temperature", dbl(0.2)),
                        kv("gen_ai.request.max_tokens", int(1024)),
                        kv("gen_ai.conversation.id", s(seq.clone())),
                        kv("gen_ai.input.messages", s(input.to_string())),
                        kv("gen_ai.output.messages", s(output.to_string())),
                        kv("gen_ai.response.finish_reasons", any_value::Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(s("stop")) }] })),
                        kv("gen_ai.usage.input_tokens", int(tokens_in)),
                        kv("gen_ai.usage.output_tokens", int(tokens_out)),
                    ],
                    events,
                    status: Some(Status { code: 1, ..Default::default() }),
                    ..Default::default()
                };
                out.push((llm, counts));
            }
        }
    }
}

// ----- REST calls -----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RestKind {
    Hitl,
    Tests,
    Defect,
    Triplet,
    PendingTriplet,
    PendingSequence,
}

#[derive(Debug)]
struct RestCall {
    kind: RestKind,
    path: &'static str,
    body: String,
}

const REVIEWERS: [&str; 5] = ["ann", "bo", "chen", "dana", "eli"];

impl Fill {
    fn idempotency_key(&self, n: u64, kind: &str) -> String {
        format!("fill-{:x}-{n}-{kind}", self.cfg.seed)
    }

    /// The REST calls made once sequence `n` is stored.
    fn rest_calls(&self, plan: &Plan) -> Vec<RestCall> {
        let n = plan.n;
        let seq = Fill::sequence_id(n);
        let mut rng = Rng::new(self.cfg.seed, Tag::Rest, n);
        let mut calls = Vec::new();
        if self.chosen(&mut rng, "hitl", n, P_HITL) {
            let (decision, why) = *rng.pick(&[
                ("approved", "meets the acceptance criteria"),
                ("approved", "clean change, well tested"),
                ("approved_with_changes", "rename the helper and add a test"),
                ("rejected", "the design misses the retry requirement"),
                ("deferred", "waiting for the product owner"),
            ]);
            let body = json!({"sequence_id": seq, "decision": decision, "reviewer": rng.pick(&REVIEWERS), "justification": why, "idempotency_key": self.idempotency_key(n, "hitl")});
            calls.push(RestCall { kind: RestKind::Hitl, path: "/api/v1/callbacks/hitl", body: body.to_string() });
        }
        if self.chosen(&mut rng, "tests", n, P_TESTS) {
            let passed = rng.range(10, 300);
            let failed = if rng.chance(0.6) { 0 } else { rng.range(1, 20) };
            let body = json!({"sequence_id": seq, "passed": passed, "failed": failed, "skipped": rng.below(10), "idempotency_key": self.idempotency_key(n, "tests")});
            calls.push(RestCall { kind: RestKind::Tests, path: "/api/v1/callbacks/tests", body: body.to_string() });
        }
        if self.chosen(&mut rng, "defect", n, P_DEFECT) {
            let roles = plan.roles();
            let candidates: Vec<&str> = ["Design", "Code", "Planning"].into_iter().filter(|r| roles.contains(r)).collect();
            let injected = *rng.pick(&candidates);
            let removed = *rng.pick(match injected {
                "Planning" => &["Design Review", "Code Review", "Test"][..],
                "Design" => &["Design Review", "Code Review", "Test"][..],
                _ => &["Code Review", "Test", "Postmortem"][..],
            });
            let body = json!({
                "task_id": seq,
                "defect_type": rng.pick(&rltrace_core::reward::PSP_DEFECT_TYPES),
                "severity": rng.pick(&["Low", "Medium", "Medium", "High", "Critical"]),
                "phase_injected": injected,
                "phase_removed": removed,
                "description": format!("{} found in {removed}", words_string(&mut rng, 5)),
                "idempotency_key": self.idempotency_key(n, "defect"),
            });
            calls.push(RestCall { kind: RestKind::Defect, path: "/api/v1/callbacks/defects", body: body.to_string() });
        }
        if self.chosen(&mut rng, "triplet", n, P_TRIPLET) {
            let step = rng.pick(&plan.steps);
            let body = json!({
                "target": {"triplet_id": self.triplet_id(n, step.pos)},
                "value": rng.score(0.0),
                "source": "feedback",
                "reason": *rng.pick(&["thumbs up", "thumbs down", "edited by the user", "accepted as is"]),
                "metadata": {"fill": "triplet"},
                "idempotency_key": self.idempotency_key(n, "triplet"),
            });
            calls.push(RestCall { kind: RestKind::Triplet, path: "/api/v1/rewards", body: body.to_string() });
        }
        calls
    }

    /// The pending rewards of sequence `n`, sent before any span.
    fn pending_calls(&self, n: u64) -> Vec<RestCall> {
        let mut rng = Rng::new(self.cfg.seed, Tag::Pending, n);
        let mut calls = Vec::new();
        if self.chosen(&mut rng, "pending_triplet", n, P_PENDING_TRIPLET) {
            let plan = self.plan(n);
            let step = rng.pick(&plan.steps);
            let body = json!({
                "target": {"triplet_id": self.triplet_id(n, step.pos)},
                "value": rng.score(0.0),
                "source": "feedback",
                "reason": "rated in the UI before the trace was exported",
                "metadata": {"fill": "pending"},
                "pending": true,
                "idempotency_key": self.idempotency_key(n, "pending-triplet"),
            });
            calls.push(RestCall { kind: RestKind::PendingTriplet, path: "/api/v1/rewards", body: body.to_string() });
        }
        if self.chosen(&mut rng, "pending_sequence", n, P_PENDING_SEQUENCE) {
            let body = json!({
                "target": {"sequence_id": Fill::sequence_id(n), "strategy": "last"},
                "value": rng.score(0.0),
                "source": "terminal",
                "reason": "CI result before the trace arrived",
                "metadata": {"fill": "pending"},
                "pending": true,
                "idempotency_key": self.idempotency_key(n, "pending-sequence"),
            });
            calls.push(RestCall { kind: RestKind::PendingSequence, path: "/api/v1/rewards", body: body.to_string() });
        }
        calls
    }
}

fn words_string(rng: &mut Rng, n: usize) -> String {
    let mut s = String::new();
    words(rng, n, &mut s);
    s
}

// ----- sending -----

/// A batch of spans ready to send, and the REST calls of the sequences it completes.
struct Batch {
    body: bytes::Bytes,
    counts: Counts,
    /// The REST calls of each sequence of the batch, made once it is acknowledged.
    completes: Vec<Vec<RestCall>>,
}

struct Shared {
    cfg: FillConfig,
    http: reqwest::Client,
    deadline: Instant,
    sent: std::sync::Mutex<Counts>,
    retries: AtomicU64,
    errors: AtomicU64,
    rejected: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Shared {
    fn error(&self, msg: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(msg);
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.target.trim_end_matches('/'))
    }

    /// POST `body` until it is answered other than 503 / 429 (waiting as `Retry-After` says), at
    /// most [`MAX_ATTEMPTS`] times and not past the deadline. Returns the status and body.
    async fn post(&self, path: &str, content_type: &str, body: bytes::Bytes) -> Result<(u16, bytes::Bytes), String> {
        let url = self.url(path);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let wait = match self.http.post(&url).header("content-type", content_type).body(body.clone()).send().await {
                Ok(resp) if resp.status().as_u16() == 503 || resp.status().as_u16() == 429 => {
                    let secs = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(1);
                    Duration::from_secs(secs.clamp(1, 10))
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let bytes = resp.bytes().await.map_err(|e| format!("POST {path}: reading the answer: {e}"))?;
                    return Ok((status, bytes));
                }
                // Refused or reset under overload: wait and send again, like a 503.
                Err(e) if e.is_connect() || e.is_request() => Duration::from_millis(200 * u64::from(attempt.min(10))),
                Err(e) => return Err(format!("POST {path}: {e}")),
            };
            self.retries.fetch_add(1, Ordering::Relaxed);
            if attempt >= MAX_ATTEMPTS || Instant::now() + wait >= self.deadline {
                return Err(format!("POST {path}: still overloaded after {attempt} attempts"));
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn rest(&self, call: RestCall) {
        match self.post(call.path, "application/json", bytes::Bytes::from(call.body)).await {
            Ok((200 | 201, _)) => self.sent.lock().unwrap_or_else(|e| e.into_inner()).add_kind(call.kind),
            Ok((status, body)) => self.error(format!("POST {} answered {status}: {}", call.path, String::from_utf8_lossy(&body))),
            Err(e) => self.error(e),
        }
    }
}

/// Run REST calls from `rx` with `workers` in flight until the channel closes. The calls of one
/// sequence come as one group, sent in order by one worker, so that the ledger order within a
/// sequence (which decides the newest event, and the latest of a source) is the same on every run.
fn rest_pool(shared: &Arc<Shared>, rx: tokio::sync::mpsc::Receiver<Vec<RestCall>>, workers: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    (0..workers)
        .map(|_| {
            let (shared, rx) = (Arc::clone(shared), Arc::clone(&rx));
            tokio::spawn(async move {
                loop {
                    let Some(calls) = rx.lock().await.recv().await else { break };
                    for call in calls {
                        if Instant::now() >= shared.deadline {
                            break;
                        }
                        shared.rest(call).await;
                    }
                }
            })
        })
        .collect()
}

/// Generate the batches (on a thread of its own) into `tx`, stopping at the deadline. A batch
/// holds whole sequences: about `batch` spans, more when one sequence is longer. So every span of
/// a sequence is committed at once, and the ledger order within a sequence (immediate rewards
/// count as appended when their triplet arrives) is the same on every run.
fn generate(fill: &Fill, tx: &tokio::sync::mpsc::Sender<Batch>, deadline: Instant) {
    let cfg = &fill.cfg;
    let resource = Resource {
        attributes: vec![kv("service.name", s("agent-platform")), kv("service.version", s("2.4.1")), kv("deployment.environment.name", s("bench"))],
        ..Default::default()
    };
    let scope = InstrumentationScope { name: "agent-platform.pipeline".into(), version: "2.4.1".into(), ..Default::default() };
    let mut spans = Vec::with_capacity(cfg.batch + 64);
    let mut counts = Counts::default();
    let mut completes = Vec::new();
    let mut seq_spans = Vec::new();
    let flush = |spans: &mut Vec<Span>, counts: &mut Counts, completes: &mut Vec<Vec<RestCall>>| -> bool {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans { scope: Some(scope.clone()), spans: std::mem::take(spans), ..Default::default() }],
                ..Default::default()
            }],
        };
        let batch = Batch { body: bytes::Bytes::from(req.encode_to_vec()), counts: std::mem::take(counts), completes: std::mem::take(completes) };
        tx.blocking_send(batch).is_ok()
    };
    for n in 0..cfg.sequences {
        if Instant::now() >= deadline {
            return;
        }
        let plan = fill.plan(n);
        fill.spans(&plan, &mut seq_spans);
        if !spans.is_empty() && spans.len() + seq_spans.len() > cfg.batch && !flush(&mut spans, &mut counts, &mut completes) {
            return;
        }
        for (span, c) in seq_spans.drain(..) {
            spans.push(span);
            counts.add(&c);
        }
        counts.sequences += 1;
        let calls = fill.rest_calls(&plan);
        if !calls.is_empty() {
            completes.push(calls);
        }
        if spans.len() >= cfg.batch && !flush(&mut spans, &mut counts, &mut completes) {
            return;
        }
    }
    if !spans.is_empty() {
        flush(&mut spans, &mut counts, &mut completes);
    }
}

/// Send the batches from `rx` until it closes; pass on the REST calls of acknowledged sequences.
async fn send_batches(
    shared: Arc<Shared>,
    rx: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Batch>>>,
    rest: tokio::sync::mpsc::Sender<Vec<RestCall>>,
    pb: indicatif::ProgressBar,
) {
    loop {
        let Some(batch) = rx.lock().await.recv().await else { break };
        if Instant::now() >= shared.deadline {
            continue;
        }
        let ready = match shared.post("/v1/traces", "application/x-protobuf", batch.body).await {
            Ok((200, body)) => {
                let rejected = ExportTraceServiceResponse::decode(body.as_ref()).ok().and_then(|r| r.partial_success).filter(|p| p.rejected_spans > 0);
                if let Some(p) = rejected {
                    shared.rejected.fetch_add(p.rejected_spans as u64, Ordering::Relaxed);
                    shared.error(format!("{} spans rejected: {}", p.rejected_spans, p.error_message));
                }
                shared.sent.lock().unwrap_or_else(|e| e.into_inner()).add(&batch.counts);
                pb.inc(batch.counts.triplets);
                batch.completes
            }
            Ok((status, body)) => {
                shared.error(format!("POST /v1/traces answered {status}: {}", String::from_utf8_lossy(&body)));
                Vec::new()
            }
            Err(e) => {
                shared.error(e);
                Vec::new()
            }
        };
        for calls in ready {
            if rest.send(calls).await.is_err() {
                return;
            }
        }
    }
}

/// Fill the collector; prints the summary line (or JSON object) at the end.
pub(crate) fn run(cfg: FillConfig) -> Result<()> {
    if cfg.sequences == 0 || cfg.triplets < cfg.sequences {
        bail!("--fill needs at least one sequence and at least as many triplets as sequences (got {} triplets, {} sequences)", cfg.triplets, cfg.sequences);
    }
    if cfg.long_sequence > 0 {
        let rest = cfg.triplets.checked_sub(cfg.long_sequence).context("--long-sequence must not exceed --triplets")?;
        if rest < cfg.sequences - 1 || (cfg.sequences == 1 && rest > 0) {
            bail!(
                "--long-sequence {} leaves {rest} triplets for the other {} sequences; each needs at least one (and with one sequence, --triplets must equal --long-sequence)",
                cfg.long_sequence,
                cfg.sequences - 1
            );
        }
    }
    let (total, count) = if cfg.long_sequence > 0 { (cfg.triplets - cfg.long_sequence, cfg.sequences - 1) } else { (cfg.triplets, cfg.sequences) };
    // A sequence gets its share plus at most half of it again (see Fill::length).
    let share = if count == 0 { 0 } else { total.div_ceil(count) };
    let longest = cfg.long_sequence.max(share + share.div_ceil(2));
    if longest > MAX_SEQUENCE_TRIPLETS {
        bail!("sequences of up to {longest} triplets: at most {MAX_SEQUENCE_TRIPLETS} fit in one OTLP request (a sequence is sent whole); use more --sequences or a shorter --long-sequence");
    }
    if cfg.batch == 0 || cfg.concurrency == 0 {
        bail!("--batch and --concurrency must be at least 1");
    }
    if !cfg.target.starts_with("http://") {
        bail!("--target must be an http:// URL of the collector's HTTP listener; got {:?}", cfg.target);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    rt.block_on(run_async(cfg))
}

async fn run_async(cfg: FillConfig) -> Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(cfg.max_seconds);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(2 * cfg.concurrency)
        .timeout(Duration::from_secs(120))
        .build()
        .context("cannot build the HTTP client")?;
    let fill = Arc::new(Fill::new(cfg.clone()));
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        http,
        deadline,
        sent: std::sync::Mutex::new(Counts::default()),
        retries: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        first_error: std::sync::Mutex::new(None),
    });
    let workers = cfg.concurrency;
    let rest_workers = REST_WORKERS_PER_REQUEST * workers;

    // 1. Pending rewards, for triplets and sequences that do not exist yet.
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<RestCall>>(4 * rest_workers);
    let pool = rest_pool(&shared, rx, rest_workers);
    {
        let (fill, deadline) = (Arc::clone(&fill), deadline);
        let feeder = tokio::task::spawn_blocking(move || {
            for n in 0..fill.cfg.sequences {
                if Instant::now() >= deadline {
                    break;
                }
                let calls = fill.pending_calls(n);
                if !calls.is_empty() && tx.blocking_send(calls).is_err() {
                    return;
                }
            }
        });
        feeder.await.context("the pending-reward generator failed")?;
    }
    for w in pool {
        w.await.context("a REST worker failed")?;
    }

    // 2. The spans, and the REST calls of each sequence once its spans are acknowledged.
    let pb = crate::progress(cfg.triplets, "fill");
    let (rest_tx, rest_rx) = tokio::sync::mpsc::channel::<Vec<RestCall>>(16 * rest_workers);
    let pool = rest_pool(&shared, rest_rx, rest_workers);
    let (batch_tx, batch_rx) = tokio::sync::mpsc::channel::<Batch>(workers);
    let generator = {
        let fill = Arc::clone(&fill);
        tokio::task::spawn_blocking(move || generate(&fill, &batch_tx, deadline))
    };
    let batch_rx = Arc::new(tokio::sync::Mutex::new(batch_rx));
    let senders: Vec<_> = (0..workers)
        .map(|_| tokio::spawn(send_batches(Arc::clone(&shared), Arc::clone(&batch_rx), rest_tx.clone(), pb.clone())))
        .collect();
    drop(rest_tx);
    generator.await.context("the span generator failed")?;
    for s in senders {
        s.await.context("a span sender failed")?;
    }
    for w in pool {
        w.await.context("a REST worker failed")?;
    }
    pb.finish_and_clear();

    let secs = started.elapsed().as_secs_f64();
    let c = shared.sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let ledger = c.terminal + c.judge + c.hitl + c.tests + c.defect + c.triplet + c.pending_triplet + c.pending_sequence;
    let retries = shared.retries.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    let summary = json!({
        "seed": cfg.seed,
        "triplets": c.triplets,
        "spans": c.spans,
        "sequences": c.sequences,
        "long_sequence": (cfg.long_sequence > 0).then(|| json!({"sequence_id": Fill::sequence_id(0), "triplets": cfg.long_sequence})),
        "rewards": {
            "immediate": c.immediate,
            "terminal": c.terminal,
            "judge": c.judge,
            "hitl": c.hitl,
            "tests": c.tests,
            "defect": c.defect,
            "triplet": c.triplet,
            "pending_triplet": c.pending_triplet,
            "pending_sequence": c.pending_sequence,
        },
        "ledger_events": ledger,
        "spans_rejected": shared.rejected.load(Ordering::Relaxed),
        "retried_requests": retries,
        "errors": errors,
        "seconds": secs,
        "triplets_per_s": c.triplets as f64 / secs.max(1e-9),
    });
    if cfg.json {
        println!("{summary}");
    } else {
        println!(
            "fill: {} triplets ({} spans) in {} sequences{} in {secs:.1} s = {:.0} triplets/s; reward events: {} immediate, {} terminal, {} judge, {} hitl, {} tests, {} defect, {} triplet, {} pending (triplet) + {} pending (sequence); {retries} requests retried after 503, {errors} errors",
            c.triplets,
            c.spans,
            c.sequences,
            if cfg.long_sequence > 0 { format!(" (task-0 has {})", cfg.long_sequence) } else { String::new() },
            c.triplets as f64 / secs.max(1e-9),
            c.immediate,
            c.terminal,
            c.judge,
            c.hitl,
            c.tests,
            c.defect,
            c.triplet,
            c.pending_triplet,
            c.pending_sequence,
        );
    }
    if errors > 0 {
        let first = shared.first_error.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default();
        bail!("{errors} requests failed; the first: {first}");
    }
    if c.triplets < cfg.triplets {
        bail!("stopped at the --max-seconds bound of {} s: {} of {} triplets sent", cfg.max_seconds, c.triplets, cfg.triplets);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(triplets: u64, sequences: u64, long: u64, seed: u64) -> Fill {
        Fill::new(FillConfig {
            target: "http://127.0.0.1:1".into(),
            triplets,
            sequences,
            seed,
            long_sequence: long,
            concurrency: 1,
            batch: 512,
            max_seconds: 1,
            json: false,
        })
    }

    #[test]
    fn lengths_add_up_exactly_and_vary() {
        for (t, m, long) in [(3000, 300, 0), (3001, 7, 0), (10, 10, 0), (25_000, 16, 10_000), (10_007, 2, 10_000), (5, 1, 5)] {
            let f = fill(t, m, long, 7);
            let lengths: Vec<u64> = (0..m).map(|n| f.length(n)).collect();
            assert_eq!(lengths.iter().sum::<u64>(), t, "{t} in {m}, long {long}");
            assert!(lengths.iter().all(|l| *l >= 1));
            if long > 0 {
                assert_eq!(lengths[0], long);
            }
            for n in 0..m {
                let plan = f.plan(n);
                let triplets: u64 = plan.steps.iter().map(|s| 1 + u64::from(s.llm)).sum();
                assert_eq!(triplets, lengths[n as usize], "plan of {n}");
                assert_eq!(plan.steps[0].role, 0, "a task starts with Planning");
            }
        }
        let f = fill(3000, 300, 0, 7);
        let distinct: BTreeSet<u64> = (0..300).map(|n| f.length(n)).collect();
        assert!(distinct.len() > 3, "lengths vary: {distinct:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_spans_and_calls() {
        let spans = |seed: u64| {
            let f = fill(200, 20, 0, seed);
            let mut q = Vec::new();
            let mut calls = Vec::new();
            for n in 0..20 {
                let plan = f.plan(n);
                f.spans(&plan, &mut q);
                calls.extend(f.rest_calls(&plan).into_iter().map(|c| c.body));
                calls.extend(f.pending_calls(n).into_iter().map(|c| c.body));
            }
            let spans: Vec<Span> = q.into_iter().map(|(s, _)| s).collect();
            (spans, calls)
        };
        let (a, calls_a) = spans(7);
        let (b, calls_b) = spans(7);
        let (c, _) = spans(8);
        assert_eq!(a, b);
        assert_eq!(calls_a, calls_b);
        assert_ne!(a, c);
        assert!(a.iter().all(|s| s.trace_id.len() == 16 && s.span_id.len() == 8));
        let ids: BTreeSet<(&[u8], &[u8])> = a.iter().map(|s| (s.trace_id.as_slice(), s.span_id.as_slice())).collect();
        assert_eq!(ids.len(), a.len(), "span identities are unique");
    }

    #[test]
    fn every_kind_appears_in_a_small_fill() {
        let f = fill(100, 10, 0, 3);
        let mut kinds = BTreeSet::new();
        let mut q = Vec::new();
        for n in 0..10 {
            let plan = f.plan(n);
            f.spans(&plan, &mut q);
            kinds.extend(f.rest_calls(&plan).into_iter().map(|c| format!("{:?}", c.kind)));
            kinds.extend(f.pending_calls(n).into_iter().map(|c| format!("{:?}", c.kind)));
        }
        let mut total = Counts::default();
        for (_, c) in &q {
            total.add(c);
        }
        assert_eq!(kinds.len(), 6, "{kinds:?}");
        assert_eq!(total.triplets, 100);
        assert!(total.terminal > 0 && total.judge > 0 && total.immediate > 0);
    }

    #[test]
    fn ids_look_like_uuids_and_differ() {
        let f = fill(10, 1, 0, 1);
        let a = f.triplet_id(0, 0);
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
        assert_ne!(a, f.triplet_id(0, 1));
        assert_ne!(a, f.triplet_id(1, 0));
    }

    #[test]
    fn batches_hold_whole_sequences_and_every_span_once() {
        let f = fill(5000, 400, 1200, 5);
        let (tx, mut rx) = tokio::sync::mpsc::channel(10_000);
        generate(&f, &tx, Instant::now() + Duration::from_secs(60));
        drop(tx);
        let mut seen = BTreeMap::new();
        let (mut triplets, mut sequences, mut batches) = (0, 0, 0);
        while let Ok(b) = rx.try_recv() {
            let req = ExportTraceServiceRequest::decode(b.body.as_ref()).expect("protobuf");
            let spans = &req.resource_spans[0].scope_spans[0].spans;
            assert_eq!(spans.len() as u64, b.counts.spans);
            let traces: BTreeSet<&[u8]> = spans.iter().map(|s| s.trace_id.as_slice()).collect();
            assert_eq!(traces.len() as u64, b.counts.sequences, "one trace per sequence");
            for t in traces {
                assert!(seen.insert(t.to_vec(), batches).is_none(), "a sequence is in one batch only");
            }
            // About 512 spans: whole sequences up to the size, the long one alone.
            assert!(spans.len() <= 512 + 40 || b.counts.sequences == 1, "{} spans in {} sequences", spans.len(), b.counts.sequences);
            triplets += b.counts.triplets;
            sequences += b.counts.sequences;
            batches += 1;
        }
        assert_eq!((triplets, sequences), (5000, 400));
        assert!(batches > 5);
    }

    #[test]
    fn shapes_that_cannot_be_sent_are_refused() {
        let cfg = |triplets, sequences, long| FillConfig { triplets, sequences, long_sequence: long, ..fill(1, 1, 0, 1).cfg };
        for (t, m, long) in [(10, 0, 0), (5, 10, 0), (10, 5, 8), (10, 1, 5), (5, 5, 6), (100_000, 2, 0), (20_000, 2, 17_000)] {
            assert!(run(cfg(t, m, long)).is_err(), "{t} triplets, {m} sequences, long {long}");
        }
    }
}
