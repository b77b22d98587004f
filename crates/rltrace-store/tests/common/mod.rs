//! Builders shared by the store's tests: spans as the OTLP edge hands them over, prepared the way
//! the collector prepares them, and reward requests as the API builds them.
#![allow(dead_code, missing_docs)]

use std::sync::Arc;

use rltrace_core::reward::{RewardTarget, Severity, Strategy, Valuation};
use rltrace_core::span::{AttrValue, Origin, SpanEvent, SpanRecord};
use rltrace_core::{Limits, Policy};

use rltrace_store::{NewReward, PgConfig, PreparedSpan, Store, StoreConfig, prepare_spans};

pub fn s(v: &str) -> AttrValue {
    AttrValue::Str(v.to_string())
}

pub fn f(v: f64) -> AttrValue {
    AttrValue::Double(v)
}

pub fn i(v: i64) -> AttrValue {
    AttrValue::Int(v)
}

/// A span of trace `trace` (a small number), span `span`, with `attrs`; start `span` ms.
pub fn span(trace: u32, span: u32, attrs: &[(&str, AttrValue)]) -> SpanRecord {
    let mut trace_id = [0u8; 16];
    trace_id[12..].copy_from_slice(&(trace + 1).to_be_bytes());
    let mut span_id = [0u8; 8];
    span_id[4..].copy_from_slice(&(span + 1).to_be_bytes());
    let start = 1_700_000_000_000_000_000u64 + u64::from(span) * 1_000_000;
    SpanRecord {
        trace_id,
        span_id,
        parent_span_id: None,
        name: format!("span-{span}"),
        kind: 1,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 500_000,
        status_code: 0,
        status_message: String::new(),
        attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        events: Vec::new(),
        origin: Arc::new(Origin { resource: vec![("service.name".into(), s("agents"))], ..Origin::default() }),
        extras: Default::default(),
    }
}

/// A triplet span in sequence `seq`.
pub fn triplet_span(trace: u32, n: u32, seq: &str, attrs: &[(&str, AttrValue)]) -> SpanRecord {
    let mut all: Vec<(&str, AttrValue)> = vec![("rl.sequence_id", s(seq)), ("rl.state", s("{\"k\":1}")), ("rl.action", s("{\"ok\":true}"))];
    all.extend(attrs.iter().cloned());
    span(trace, n, &all)
}

/// An `rl.reward` span event.
pub fn reward_event(value: f64, source: &str, target: &str, strategy: &str, at_ns: u64) -> SpanEvent {
    SpanEvent {
        name: "rl.reward".into(),
        time_unix_nano: at_ns,
        attributes: vec![
            ("rl.reward.value".into(), f(value)),
            ("rl.reward.source".into(), s(source)),
            ("rl.reward.target".into(), s(target)),
            ("rl.reward.strategy".into(), s(strategy)),
        ],
    }
}

/// Analyse and prepare spans as the collector does; panics on a span the mapping rejects.
pub fn prepare(spans: Vec<SpanRecord>) -> Vec<PreparedSpan> {
    let limits = Limits { max_attribute_value_bytes: 1 << 20 };
    prepare_spans(spans.into_iter().map(|sp| rltrace_core::triplet::analyze(sp, &limits).expect("valid span")).collect())
}

pub fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreConfig::new(dir.path().join("rltrace.db"))).expect("open");
    (dir, store)
}

/// The backends of the conformance suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where a test's store lives; dropped at the end of the test (a temporary directory, or a
/// database of its own on the test server, dropped).
pub enum Place {
    Sqlite(tempfile::TempDir),
    Postgres { admin: String, name: String, url: String },
}

impl Place {
    /// A new empty place on `backend`.
    pub fn new(backend: Backend) -> Place {
        match backend {
            Backend::Sqlite => Place::Sqlite(tempfile::tempdir().expect("tempdir")),
            Backend::Postgres => {
                let admin = postgres_url();
                let name = format!("t_{}", uuid::Uuid::new_v4().simple());
                let mut c = postgres::Client::connect(&admin, postgres::NoTls).expect("connect to the test server");
                c.batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
                let url = match admin.rsplit_once('/') {
                    Some((base, _)) => format!("{base}/{name}"),
                    None => panic!("RLTRACE_TEST_POSTGRES has no database name: {admin}"),
                };
                Place::Postgres { admin, name, url }
            }
        }
    }

    /// The store's configuration at this place.
    pub fn config(&self) -> StoreConfig {
        match self {
            Place::Sqlite(dir) => StoreConfig::new(dir.path().join("rltrace.db")),
            Place::Postgres { url, .. } => StoreConfig::postgres(PgConfig::new(url.clone())),
        }
    }

    /// Open the store here.
    pub fn open(&self) -> Store {
        Store::open(self.config()).expect("open")
    }

    /// Open the store here for reading only.
    pub fn open_read_only(&self) -> Result<Store, rltrace_store::StoreError> {
        match self {
            Place::Sqlite(dir) => Store::open_read_only(dir.path().join("rltrace.db")),
            Place::Postgres { url, .. } => Store::open_read_only_postgres(&PgConfig::new(url.clone())),
        }
    }

    /// One integer from `sql` run on the database directly, on PostgreSQL (tests of its own
    /// tables); `None` on SQLite.
    pub fn pg_int(&self, sql: &str) -> Option<i64> {
        match self {
            Place::Sqlite(_) => None,
            Place::Postgres { url, .. } => {
                let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connect");
                Some(c.query_one(sql, &[]).expect("query").get::<_, i64>(0))
            }
        }
    }

    /// Run SQL on the database directly (tests that set up an old or a newer database).
    pub fn raw(&self, sql: &str) {
        match self {
            Place::Sqlite(dir) => {
                let c = rusqlite::Connection::open(dir.path().join("rltrace.db")).expect("open");
                c.execute_batch(sql).expect("raw sql");
            }
            Place::Postgres { url, .. } => {
                let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connect");
                c.batch_execute(sql).expect("raw sql");
            }
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Place::Postgres { admin, name, .. } = self
            && let Ok(mut c) = postgres::Client::connect(admin, postgres::NoTls)
        {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// The test server's URL (`RLTRACE_TEST_POSTGRES`, set by scripts/test.sh, which starts the
/// server). Missing, the PostgreSQL half of the suite fails rather than pass unseen.
pub fn postgres_url() -> String {
    match std::env::var("RLTRACE_TEST_POSTGRES") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "RLTRACE_TEST_POSTGRES is not set: run the tests with scripts/test.sh, which starts a PostgreSQL server on loopback \
             (scripts/postgres.sh), or set it to postgres://USER:PASSWORD@127.0.0.1:PORT/DB"
        ),
    }
}

/// A store on `backend` in a new place.
pub fn temp_store_on(backend: Backend) -> (Place, Store) {
    let place = Place::new(backend);
    let store = place.open();
    (place, store)
}

/// One conformance test, run against both backends: `conformance!(fn name(b) { ... })` makes
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! conformance {
    ($(#[$m:meta])* fn $name:ident($b:ident) $body:block) => {
        $(#[$m])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn run($b: Backend) $body
            #[test]
            fn sqlite() {
                run(Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                run(Backend::Postgres)
            }
        }
    };
}

pub fn reward(target: RewardTarget, value: Option<f64>, source: &str) -> NewReward {
    NewReward {
        target,
        value,
        source: source.into(),
        reason: None,
        idempotency_key: None,
        metadata: None,
        allow_pending: false,
        body_hash: "h".into(),
        valuation: Valuation::Fixed,
    }
}

pub fn on_triplet(id: &str, value: f64, source: &str) -> NewReward {
    reward(RewardTarget::Triplet { triplet_id: id.into() }, Some(value), source)
}

pub fn on_sequence(seq: &str, strategy: Strategy, value: Option<f64>, source: &str) -> NewReward {
    reward(RewardTarget::Sequence { sequence_id: seq.into(), strategy }, value, source)
}

/// A High defect (value 0.5 under the default policy) by task id, injected in `phase`.
pub fn defect(task: &str, phase: &str) -> NewReward {
    NewReward {
        valuation: Valuation::Defect(Severity::High),
        ..reward(RewardTarget::Task { task_id: task.into(), phase: phase.into() }, Some(0.5), "defect")
    }
}

pub fn policy() -> Policy {
    Policy::default()
}
