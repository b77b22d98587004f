//! The REST API (DESIGN section 4): sequences, triplets, traces, the reward ledger, export, stats.
//! Store reads run on blocking threads; every error answers the JSON error shape.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use rltrace_core::export::{ManifestCounts, TripletView, manifest, triplet_value, write_triplet_json};
use rltrace_core::reward::{RewardEvent, RewardTarget, Strategy, validate_source, validate_value};
use rltrace_core::time::{format_micros, parse_rfc3339_micros};
use rltrace_store::{NewReward, Page, RewardAppend, SequenceFilter, SequenceSummary, SpanOut, StoreError, TripletFilter};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::error::ApiError;

/// Default page size of lists.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size of lists.
pub const MAX_LIMIT: usize = 1000;
/// Largest accepted JSON request body.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// Parsed query parameters, each used at most once.
struct Query {
    params: BTreeMap<String, String>,
}

impl Query {
    fn parse(raw: Option<String>, allowed: &[&str]) -> Result<Query, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
            .map_err(|e| ApiError::BadRequest(format!("malformed query string: {e}")))?;
        let mut params = BTreeMap::new();
        for (k, v) in pairs {
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::BadRequest(format!("unknown query parameter {k:?}; allowed: {}", allowed.join(", "))));
            }
            if params.insert(k.clone(), v).is_some() {
                return Err(ApiError::BadRequest(format!("query parameter {k:?} given twice")));
            }
        }
        Ok(Query { params })
    }

    fn str(&self, k: &str) -> Option<String> {
        self.params.get(k).cloned()
    }

    fn bool(&self, k: &str) -> Result<Option<bool>, ApiError> {
        match self.params.get(k).map(String::as_str) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(v) => Err(ApiError::BadRequest(format!("{k} must be true or false, got {v:?}"))),
        }
    }

    fn time(&self, k: &str) -> Result<Option<i64>, ApiError> {
        match self.params.get(k) {
            None => Ok(None),
            Some(v) => parse_rfc3339_micros(v)
                .map(Some)
                .ok_or_else(|| ApiError::BadRequest(format!("{k} must be an RFC 3339 timestamp, got {v:?}"))),
        }
    }

    fn limit(&self) -> Result<usize, ApiError> {
        match self.params.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(_) => self.limit_up_to(MAX_LIMIT),
        }
    }

    fn limit_up_to(&self, max: usize) -> Result<usize, ApiError> {
        match self.params.get("limit") {
            None => Ok(max.min(DEFAULT_LIMIT)),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::BadRequest(format!("limit must be an integer in [1, {max}], got {v:?}"))),
            },
        }
    }

    fn cursor(&self, tag: &str) -> Result<Option<i64>, ApiError> {
        match self.params.get("cursor") {
            None => Ok(None),
            Some(c) => decode_cursor(tag, c).map(Some).ok_or_else(|| ApiError::BadRequest(format!("invalid cursor {c:?}"))),
        }
    }
}

/// Cursors are opaque to clients: a tag and a position, hex-encoded.
fn encode_cursor(tag: &str, pos: i64) -> String {
    rltrace_core::ids::to_hex(format!("{tag}:{pos}").as_bytes())
}

fn decode_cursor(tag: &str, c: &str) -> Option<i64> {
    if c.len() % 2 != 0 || c.len() > 64 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..c.len()).step_by(2).map(|i| u8::from_str_radix(c.get(i..i + 2)?, 16).ok()).collect();
    let s = String::from_utf8(bytes?).ok()?;
    let (t, n) = s.split_once(':')?;
    (t == tag).then(|| n.parse().ok()).flatten()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::Internal(e.to_string()))?
}

fn page_json<T>(page: Page<T>, tag: &str, item: impl Fn(&T) -> Value) -> Value {
    json!({
        "items": page.items.iter().map(item).collect::<Vec<_>>(),
        "next_cursor": page.next.map(|n| encode_cursor(tag, n)),
    })
}

fn opt_time(t: Option<i64>) -> Value {
    t.map_or(Value::Null, |t| Value::String(format_micros(t)))
}

fn sequence_json(s: &SequenceSummary) -> Value {
    json!({
        "sequence_id": s.sequence_id,
        "triplet_count": s.triplet_count,
        "first_at": opt_time(s.first_at),
        "last_at": opt_time(s.last_at),
        "rewarded": s.rewarded,
        "complete": s.complete,
        "reward_mean": s.reward_mean,
        "roles": s.roles,
    })
}

/// A ledger event as JSON.
pub fn event_json(e: &RewardEvent) -> Value {
    let target = match &e.target {
        RewardTarget::Triplet { triplet_id } => json!({"triplet_id": triplet_id}),
        RewardTarget::Sequence { sequence_id, strategy } => {
            let mut t = json!({"sequence_id": sequence_id, "strategy": strategy.name()});
            if let Some(g) = strategy.gamma() {
                t["gamma"] = json!(g);
            }
            match strategy {
                Strategy::Role { role } => t["role"] = json!(role),
                Strategy::Phase { phase } => t["phase"] = json!(phase),
                _ => {}
            }
            t
        }
        RewardTarget::Task { task_id, phase } => json!({"task_id": task_id, "phase": phase}),
    };
    let mut v = json!({
        "reward_id": e.reward_id,
        "target": target,
        "value": e.value,
        "source": e.source,
        "reason": e.reason,
        "created_at": format_micros(e.created_at),
        "pending": e.pending,
    });
    if let Some(k) = &e.idempotency_key {
        v["idempotency_key"] = json!(k);
    }
    if let Some(m) = &e.metadata {
        v["metadata"] = m.clone();
    }
    v
}

fn span_kind(k: i32) -> &'static str {
    match k {
        1 => "SPAN_KIND_INTERNAL",
        2 => "SPAN_KIND_SERVER",
        3 => "SPAN_KIND_CLIENT",
        4 => "SPAN_KIND_PRODUCER",
        5 => "SPAN_KIND_CONSUMER",
        _ => "SPAN_KIND_UNSPECIFIED",
    }
}

fn status_code(c: i32) -> &'static str {
    match c {
        1 => "STATUS_CODE_OK",
        2 => "STATUS_CODE_ERROR",
        _ => "STATUS_CODE_UNSET",
    }
}

fn span_json(s: &SpanOut) -> Value {
    let parse = |t: &str| serde_json::from_str::<Value>(t).unwrap_or(Value::Null);
    json!({
        "trace_id": s.trace_id,
        "span_id": s.span_id,
        "parent_span_id": s.parent_span_id,
        "name": s.name,
        "kind": span_kind(s.kind),
        "start_time": format_micros(s.start_ns / 1000),
        "end_time": format_micros(s.end_ns / 1000),
        "status": {"code": status_code(s.status_code), "message": s.status_message},
        "attributes": parse(&s.attributes),
        "events": parse(&s.events),
        "resource": parse(&s.resource),
        "depth": s.depth,
        "triplet_id": s.triplet_id,
    })
}

const SEQUENCE_PARAMS: &[&str] = &["role", "since", "until", "rewarded", "complete", "review", "limit", "cursor"];
const TRIPLET_PARAMS: &[&str] = &["sequence_id", "role", "rewarded", "since", "until", "complete", "limit", "cursor"];
const EXPORT_PARAMS: &[&str] = &["format", "sequence_id", "role", "rewarded", "since", "until", "complete", "manifest"];

fn triplet_filter(q: &Query) -> Result<TripletFilter, ApiError> {
    Ok(TripletFilter {
        sequence_id: q.str("sequence_id"),
        role: q.str("role"),
        rewarded: q.bool("rewarded")?,
        since: q.time("since")?,
        until: q.time("until")?,
        complete: q.bool("complete")?,
    })
}

/// The filters of an export as recorded in its manifest.
pub fn filter_json(f: &TripletFilter) -> Value {
    json!({
        "sequence_id": f.sequence_id,
        "role": f.role,
        "rewarded": f.rewarded,
        "since": opt_time(f.since),
        "until": opt_time(f.until),
        "complete": f.complete,
    })
}

/// `GET /api/v1/sequences`.
pub async fn list_sequences(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(raw, SEQUENCE_PARAMS)?;
    let review_pending = match q.str("review").as_deref() {
        None => false,
        Some("pending") => true,
        Some(other) => return Err(ApiError::BadRequest(format!("review must be pending, got {other:?}"))),
    };
    let f = SequenceFilter {
        role: q.str("role"),
        since: q.time("since")?,
        until: q.time("until")?,
        rewarded: q.bool("rewarded")?,
        complete: q.bool("complete")?,
        review_pending,
    };
    let (limit, cursor) = (q.limit()?, q.cursor("s")?);
    let page = blocking(move || Ok(st.store.read(|tx| tx.sequences(&f, cursor, limit, &st.policy))?)).await?;
    Ok(Json(page_json(page, "s", sequence_json)))
}

/// The percent-decoded id of a path; a rejection (not UTF-8) answers the REST error shape.
fn path_id(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(id)| id).map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// `GET /api/v1/sequences/{sequence_id}`.
pub async fn get_sequence(State(st): State<AppState>, id: Result<Path<String>, PathRejection>, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let id = path_id(id)?;
    let q = Query::parse(raw, &["limit", "cursor"])?;
    let limit = match q.str("limit") {
        None => DEFAULT_SEQUENCE_TRIPLETS,
        Some(_) => q.limit_up_to(MAX_SEQUENCE_TRIPLETS)?,
    };
    let cursor = q.cursor("q")?;
    let detail = blocking(move || {
        st.store.read(|tx| tx.sequence(&id, cursor, limit, &st.policy))?.ok_or_else(|| ApiError::NotFound(format!("sequence {id:?} not found")))
    })
    .await?;
    let mut v = sequence_json(&detail.summary);
    v["triplets"] = Value::Array(detail.triplets.iter().map(triplet_json).collect::<Result<_, _>>()?);
    v["ledger"] = Value::Array(detail.ledger.iter().map(event_json).collect());
    v["next_cursor"] = match detail.next {
        Some(n) => Value::String(format!("q{n}")),
        None => Value::Null,
    };
    Ok(Json(v))
}

/// Triplets of one sequence returned by default in `GET /api/v1/sequences/{id}`.
pub const DEFAULT_SEQUENCE_TRIPLETS: usize = 1000;
/// Most triplets of one sequence returned in one page.
pub const MAX_SEQUENCE_TRIPLETS: usize = 10_000;

fn triplet_json(t: &TripletView) -> Result<Value, ApiError> {
    triplet_value(t).map_err(|e| ApiError::Internal(format!("triplet {}: {e}", t.triplet_id)))
}

/// `GET /api/v1/triplets`.
pub async fn list_triplets(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(raw, TRIPLET_PARAMS)?;
    let f = triplet_filter(&q)?;
    let (limit, cursor) = (q.limit()?, q.cursor("t")?);
    let page = blocking(move || Ok(st.store.read(|tx| tx.triplets(&f, cursor, limit, &st.policy))?)).await?;
    Ok(Json(page_json(page, "t", |t| triplet_json(t).unwrap_or_else(|e| json!({"triplet_id": t.triplet_id, "error": e.to_string()})))))
}

/// `GET /api/v1/triplets/{triplet_id}`.
pub async fn get_triplet(State(st): State<AppState>, id: Result<Path<String>, PathRejection>) -> Result<Json<Value>, ApiError> {
    let id = path_id(id)?;
    let d = blocking(move || st.store.read(|tx| tx.triplet(&id, &st.policy))?.ok_or_else(|| ApiError::NotFound(format!("triplet {id:?} not found")))).await?;
    let mut v = triplet_json(&d.triplet)?;
    v["ledger"] = Value::Array(d.ledger.iter().map(event_json).collect());
    Ok(Json(v))
}

/// `GET /api/v1/traces/{trace_id}`.
pub async fn get_trace(State(st): State<AppState>, id: Result<Path<String>, PathRejection>) -> Result<Json<Value>, ApiError> {
    let id = path_id(id)?;
    let trace_id = rltrace_core::ids::from_hex::<16>(&id).ok_or_else(|| ApiError::BadRequest(format!("trace id must be 32 hex digits, got {id:?}")))?;
    let spans = blocking(move || st.store.read(|tx| tx.trace(&trace_id))?.ok_or_else(|| ApiError::NotFound(format!("trace {id} not found")))).await?;
    Ok(Json(json!({"trace_id": rltrace_core::ids::to_hex(&trace_id), "spans": spans.iter().map(span_json).collect::<Vec<_>>()})))
}

/// `GET /api/v1/stats`.
pub async fn stats(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rate = st.metrics.ingest_rate();
    let s = blocking(move || Ok(st.store.read(|tx| tx.stats(&st.policy))?)).await?;
    Ok(Json(json!({
        "spans": s.spans,
        "triplets": s.triplets,
        "sequences": s.sequences,
        "rewarded_triplets": s.rewarded_triplets,
        "reward_events": s.reward_events,
        "ingest_spans_per_s": rate,
    })))
}

/// Read a JSON body with the size bound; 400 when it is not JSON (NaN and infinities, which JSON
/// cannot carry, are a 422 on the value instead).
pub(crate) async fn json_body(body: Body) -> Result<Value, ApiError> {
    let bytes = http_body_util::Limited::new(body, MAX_JSON_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                ApiError::TooLarge(format!("request body exceeds the limit of {MAX_JSON_BODY} bytes"))
            } else {
                ApiError::BadRequest(format!("cannot read request body: {e}"))
            }
        })?
        .to_bytes();
    serde_json::from_slice::<Value>(&bytes).map_err(|e| {
        let text = String::from_utf8_lossy(&bytes);
        if e.to_string().contains("number out of range") || has_bare_non_finite(&text) {
            ApiError::Validation("value must be a finite number in [0, 1]".into())
        } else {
            ApiError::BadRequest(format!("request body is not valid JSON: {e}"))
        }
    })
}

fn has_bare_non_finite(text: &str) -> bool {
    let mut in_str = false;
    let mut escaped = false;
    let b = text.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        if c == b'"' {
            in_str = true;
        } else if b[i..].starts_with(b"NaN") || b[i..].starts_with(b"Infinity") {
            return true;
        }
    }
    false
}

fn parse_reward(body: &Value, header_key: Option<String>) -> Result<NewReward, ApiError> {
    let v = |m: String| ApiError::Validation(m);
    let obj = body.as_object().ok_or_else(|| v("body must be a JSON object".into()))?;
    const FIELDS: &[&str] = &["target", "value", "source", "reason", "idempotency_key", "metadata", "pending"];
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(v(format!("unknown field {k:?}; allowed: {}", FIELDS.join(", "))));
    }
    let target = obj.get("target").and_then(Value::as_object).ok_or_else(|| v("target must be an object with triplet_id or sequence_id".into()))?;
    let get_str = |o: &Map<String, Value>, k: &str| -> Result<Option<String>, ApiError> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::Validation(format!("{k} must be a non-empty string"))),
        }
    };
    let target = match (get_str(target, "triplet_id")?, get_str(target, "sequence_id")?) {
        (Some(triplet_id), None) => {
            if let Some(k) = target.keys().find(|k| *k != "triplet_id") {
                return Err(v(format!("target field {k:?} is not allowed with triplet_id")));
            }
            RewardTarget::Triplet { triplet_id }
        }
        (None, Some(sequence_id)) => {
            if let Some(k) = target.keys().find(|k| !["sequence_id", "strategy", "gamma", "role"].contains(&k.as_str())) {
                return Err(v(format!("unknown target field {k:?}")));
            }
            let name = get_str(target, "strategy")?.unwrap_or_else(|| "uniform".into());
            let gamma = match target.get("gamma") {
                None | Some(Value::Null) => None,
                Some(g) => Some(g.as_f64().ok_or_else(|| v("gamma must be a number in (0, 1]".into()))?),
            };
            let role = get_str(target, "role")?;
            let strategy = Strategy::parse(&name, gamma, role.as_deref()).map_err(|e| v(e.to_string()))?;
            RewardTarget::Sequence { sequence_id, strategy }
        }
        (Some(_), Some(_)) => return Err(v("target must have either triplet_id or sequence_id, not both".into())),
        (None, None) => return Err(v("target must have triplet_id or sequence_id".into())),
    };
    let value = match obj.get("value") {
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| v("value must be a finite number in [0, 1]".into()))?,
        Some(other) => return Err(v(format!("value must be a finite number in [0, 1], got {other}"))),
        None => return Err(v("value is required: a finite number in [0, 1]".into())),
    };
    let value = validate_value(value).map_err(|e| v(e.to_string()))?;
    let source = get_str(obj, "source")?.ok_or_else(|| v("source is required: a name matching [a-z0-9_.-]{1,64}".into()))?;
    validate_source(&source).map_err(|e| v(e.to_string()))?;
    let reason = get_str(obj, "reason")?;
    let key = get_str(obj, "idempotency_key")?;
    let idempotency_key = match (key, header_key) {
        (Some(a), Some(b)) if a != b => return Err(v("idempotency_key and the Idempotency-Key header differ".into())),
        (a, b) => a.or(b),
    };
    if idempotency_key.as_ref().is_some_and(|k| k.len() > 256) {
        return Err(v("idempotency_key must be at most 256 characters".into()));
    }
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => None,
        Some(m @ Value::Object(_)) => Some(m.to_string()),
        Some(_) => return Err(v("metadata must be a JSON object".into())),
    };
    let allow_pending = match obj.get("pending") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(v("pending must be a boolean".into())),
    };
    let mut canonical = body.clone();
    if let Some(o) = canonical.as_object_mut() {
        o.remove("idempotency_key");
    }
    Ok(NewReward {
        target,
        value: Some(value),
        source,
        reason,
        idempotency_key,
        metadata,
        allow_pending,
        body_hash: rltrace_core::ids::sha256_hex(canonical.to_string().as_bytes()),
        valuation: rltrace_core::reward::Valuation::Fixed,
    })
}

/// Append a validated reward and answer as the reward API does: 201 new, 200 replay, 409 key
/// conflict, 404 unknown target.
async fn append(st: &AppState, req: NewReward) -> Result<Response, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    st.store.submit_reward(req, move |r| {
        let _ = tx.send(r);
    })?;
    let result = rx.await.map_err(|_| ApiError::Internal("store writer stopped".into()))??;
    Ok(match result {
        RewardAppend::Created(e) => (StatusCode::CREATED, Json(event_json(&e))).into_response(),
        RewardAppend::Existing(e) => (StatusCode::OK, Json(event_json(&e))).into_response(),
        RewardAppend::Conflict(e) => {
            return Err(ApiError::Conflict(format!(
                "idempotency key {:?} was already used with another body (reward {})",
                e.idempotency_key.unwrap_or_default(),
                e.reward_id
            )));
        }
        RewardAppend::NotFound(m) => return Err(ApiError::NotFound(format!("{m}; send \"pending\": true to record it until the target arrives"))),
        RewardAppend::PendingLimit(n) => {
            return Err(ApiError::Conflict(format!(
                "{n} triplet ids already wait for pending rewards (the bound, --max-pending): this reward is refused until some of them arrive"
            )));
        }
    })
}

fn idempotency_header(headers: &HeaderMap) -> Option<String> {
    headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// `POST /api/v1/rewards`.
pub async fn post_reward(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = json_body(body).await?;
    let req = parse_reward(&body, idempotency_header(&headers))?;
    append(&st, req).await
}

/// `POST /api/v1/callbacks/hitl`.
pub async fn callback_hitl(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = json_body(body).await?;
    let req = crate::callbacks::parse_hitl(&body, idempotency_header(&headers), &st.policy)?;
    append(&st, req).await
}

/// `POST /api/v1/callbacks/tests`.
pub async fn callback_tests(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = json_body(body).await?;
    let req = crate::callbacks::parse_tests(&body, idempotency_header(&headers))?;
    append(&st, req).await
}

/// `POST /api/v1/callbacks/defects`.
pub async fn callback_defects(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = json_body(body).await?;
    let req = crate::callbacks::parse_defect(&body, idempotency_header(&headers), &st.policy)?;
    append(&st, req).await
}

/// `GET /api/v1/export`: streamed triplet lines, and the manifest last on `manifest=true`.
pub async fn export(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let q = Query::parse(raw, EXPORT_PARAMS)?;
    match q.str("format").as_deref() {
        None | Some("jsonl") => {}
        Some(other) => return Err(ApiError::BadRequest(format!("format {other:?} is not supported; use jsonl"))),
    }
    let f = triplet_filter(&q)?;
    let with_manifest = q.bool("manifest")?.unwrap_or(false);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(8);
    tokio::task::spawn_blocking(move || {
        let policy = st.policy.clone();
        let mut buf: Vec<u8> = Vec::with_capacity(128 * 1024);
        let result = {
            st.store.export(&f, &policy, None, &mut |t: &TripletView| {
                write_triplet_json(&mut buf, t).map_err(|e| StoreError::Corrupt(format!("triplet {}: {e}", t.triplet_id)))?;
                buf.push(b'\n');
                if buf.len() >= 64 * 1024 {
                    let chunk = bytes::Bytes::from(std::mem::replace(&mut buf, Vec::with_capacity(128 * 1024)));
                    if tx.blocking_send(Ok(chunk)).is_err() {
                        return Ok(false);
                    }
                }
                Ok(true)
            })
        };
        match result {
            Ok(counts) => {
                if with_manifest {
                    let m = manifest(
                        filter_json(&f),
                        &policy,
                        ManifestCounts { triplets: counts.triplets, sequences: counts.sequences, rewarded_triplets: counts.rewarded },
                        now_micros(),
                    );
                    buf.extend_from_slice(json!({"manifest": m}).to_string().as_bytes());
                    buf.push(b'\n');
                }
                if !buf.is_empty() {
                    let _ = tx.blocking_send(Ok(bytes::Bytes::from(buf)));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "export failed");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(resp)
}

fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// `GET /healthz`.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: ready when the store answers.
pub async fn readyz(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        st.store.health().map_err(|why| ApiError::NotReady(format!("store is failing: {why}")))?;
        st.store.ping().map_err(|e: StoreError| ApiError::NotReady(format!("store is not reachable: {e}")))
    })
    .await?;
    Ok(Json(json!({"status": "ready"})))
}

/// `GET /metrics`.
pub async fn metrics(State(st): State<AppState>) -> Response {
    let text = st.metrics.render(st.store.queue_depth(), st.store.queued_bytes());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::OPENAPI).into_response()
}

/// Any other path.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_tags() {
        let c = encode_cursor("t", 42);
        assert_eq!(decode_cursor("t", &c), Some(42));
        assert_eq!(decode_cursor("s", &c), None);
        assert_eq!(decode_cursor("t", "zz"), None);
        assert_eq!(decode_cursor("t", "abc"), None);
    }

    #[test]
    fn non_finite_detection_ignores_strings() {
        assert!(has_bare_non_finite(r#"{"value": NaN}"#));
        assert!(has_bare_non_finite(r#"{"value": -Infinity}"#));
        assert!(!has_bare_non_finite(r#"{"reason": "NaN is bad", "value": 0.5}"#));
        // Multi-byte characters outside strings (not JSON) must not panic on a char boundary.
        assert!(!has_bare_non_finite("{é}"));
        assert!(has_bare_non_finite("{\"v\": é NaN}"));
    }
}
