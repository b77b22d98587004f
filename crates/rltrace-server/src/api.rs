//! The REST API (DESIGN section 4): sequences, triplets, traces, the reward ledger, export, stats.
//! Store reads run on blocking threads; every error answers the JSON error shape. Each handler
//! carries its OpenAPI description (`#[utoipa::path]`); its request and response types are in
//! [`crate::dto`], its query parameters below.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use rltrace_core::dataset::{Format, Options, Pointer, Shape, parse_unit_option};
use rltrace_dataset::{DatasetError, Request};
use rltrace_core::reward::{RewardTarget, Strategy, validate_source, validate_value};
use rltrace_core::time::{Micros, parse_rfc3339_micros};
use rltrace_store::{AsOf, NewReward, Page, RewardAppend, SequenceFilter, StoreError, TripletFilter, Watermarks};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use utoipa::IntoParams;

use crate::AppState;
use crate::dto::{
    Settled, Forwarders, ForwarderOut,
    DefectCallback, ErrorBody, Health, HitlCallback, RewardEvent, RewardRequest, RewardRequestTarget, SequenceDetail, SequencePage, Stats,
    TestsCallback, Trace, TripletDetail, TripletPage, WhatIfRequest, WhatIfResponse,
};
use crate::error::ApiError;

/// Default page size of lists.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size of lists.
pub const MAX_LIMIT: usize = 1000;
/// Largest accepted JSON request body.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Query parameters
// ---------------------------------------------------------------------------------------------

/// Query parameters of `GET /api/v1/sequences`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SequenceQuery {
    /// Some triplet's `state.agent_role` equals it.
    pub role: Option<String>,
    /// The last triplet is at or after it (RFC 3339).
    #[serde(default, deserialize_with = "de_time")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<Micros>,
    /// The first triplet is at or before it (RFC 3339).
    #[serde(default, deserialize_with = "de_time")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<Micros>,
    /// Some triplet has an effective reward (or none has).
    #[serde(default, deserialize_with = "de_bool")]
    pub rewarded: Option<bool>,
    /// The sequence is complete (or not).
    #[serde(default, deserialize_with = "de_bool")]
    pub complete: Option<bool>,
    /// `pending`: complete sequences with no human (`hitl`) decision yet, the review queue.
    #[param(inline)]
    pub review: Option<Review>,
    /// Page size, 1 to 1000 (default 100).
    #[serde(default, deserialize_with = "de_limit")]
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Opaque cursor from `next_cursor`.
    pub cursor: Option<String>,
}

/// The `review` filter of the sequence list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Review {
    /// Complete, no `hitl` event yet.
    Pending,
}

/// Query parameters of `GET /api/v1/sequences/{sequence_id}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SequenceTripletsQuery {
    /// Triplets per page, 1 to 10,000 (default 1,000).
    #[serde(default, deserialize_with = "de_sequence_limit")]
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
    /// Opaque cursor from `next_cursor`.
    pub cursor: Option<String>,
}

/// Triplets of one sequence returned by default in `GET /api/v1/sequences/{id}`.
pub const DEFAULT_SEQUENCE_TRIPLETS: usize = 1000;
/// Most triplets of one sequence returned in one page.
pub const MAX_SEQUENCE_TRIPLETS: usize = 10_000;

fn de_sequence_limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else { return Ok(None) };
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_SEQUENCE_TRIPLETS).contains(&n) => Ok(Some(n)),
        _ => Err(serde::de::Error::custom(format!("must be an integer in [1, {MAX_SEQUENCE_TRIPLETS}], got {text:?}"))),
    }
}

/// Query parameters of `GET /api/v1/triplets`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TripletQuery {
    /// Only this sequence (then in sequence order; otherwise in arrival order).
    pub sequence_id: Option<String>,
    /// `state.agent_role` equals it.
    pub role: Option<String>,
    /// Has an effective reward (or not).
    #[serde(default, deserialize_with = "de_bool")]
    pub rewarded: Option<bool>,
    /// Timestamp at or after it (RFC 3339).
    #[serde(default, deserialize_with = "de_time")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<Micros>,
    /// Timestamp at or before it (RFC 3339).
    #[serde(default, deserialize_with = "de_time")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<Micros>,
    /// Its sequence is complete (or not).
    #[serde(default, deserialize_with = "de_bool")]
    pub complete: Option<bool>,
    /// Page size, 1 to 1000 (default 100).
    #[serde(default, deserialize_with = "de_limit")]
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Opaque cursor from `next_cursor`.
    pub cursor: Option<String>,
}

/// Query parameters of `GET /api/v1/export`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// The rows: `triplets` (default), `agentlightning`, `trl-sft`, `trl-prompt-completion`,
    /// `trl-kto`, `trl-dpo` or `trl-stepwise`.
    #[serde(default, deserialize_with = "de_shape")]
    #[param(value_type = Option<String>)]
    pub shape: Option<Shape>,
    /// The file format: `jsonl` (default) or `parquet`.
    #[serde(default, deserialize_with = "de_format")]
    #[param(value_type = Option<String>)]
    pub format: Option<Format>,
    /// Reward at or above which a triplet is good (`trl-sft`, `trl-kto`, `trl-stepwise`), in
    /// [0, 1] (default 0.5).
    #[serde(default, deserialize_with = "de_threshold")]
    #[param(value_type = Option<f64>, minimum = 0, maximum = 1)]
    pub threshold: Option<f64>,
    /// Least reward difference of a `trl-dpo` pair, in [0, 1] (default 0.1).
    #[serde(default, deserialize_with = "de_margin")]
    #[param(value_type = Option<f64>, minimum = 0, maximum = 1)]
    pub margin: Option<f64>,
    /// JSON pointer into the Triplet choosing the prompt (e.g. `/state/task_description`).
    #[serde(default, deserialize_with = "de_prompt_field")]
    #[param(value_type = Option<String>)]
    pub prompt_field: Option<Pointer>,
    /// JSON pointer into the Triplet choosing the completion (e.g. `/action/output`).
    #[serde(default, deserialize_with = "de_completion_field")]
    #[param(value_type = Option<String>)]
    pub completion_field: Option<Pointer>,
    /// Plain strings (TRL's standard form) instead of message lists.
    #[serde(default, deserialize_with = "de_bool")]
    pub text: Option<bool>,
    /// Only this sequence.
    pub sequence_id: Option<String>,
    /// `state.agent_role` equals it.
    pub role: Option<String>,
    /// Has an effective reward (or not).
    #[serde(default, deserialize_with = "de_bool")]
    pub rewarded: Option<bool>,
    /// Timestamp at or after it (RFC 3339).
    #[serde(default, deserialize_with = "de_time")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<Micros>,
    /// Timestamp at or before it (RFC 3339).
    #[serde(default, deserialize_with = "de_time")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<Micros>,
    /// Its sequence is complete (or not).
    #[serde(default, deserialize_with = "de_bool")]
    pub complete: Option<bool>,
    /// Add the manifest: a last JSONL line `{"manifest": {...}}`, or the Parquet file's
    /// key-value metadata `rltrace.manifest`.
    #[serde(default, deserialize_with = "de_bool")]
    pub manifest: Option<bool>,
    /// Rebuild: read span rows up to this watermark (a manifest's `watermarks.span`); with
    /// `as_of_event` and `as_of_time`.
    #[serde(default, deserialize_with = "de_watermark")]
    #[param(value_type = Option<i64>, minimum = 0)]
    pub as_of_span: Option<i64>,
    /// Rebuild: read ledger events up to this watermark (a manifest's `watermarks.event`).
    #[serde(default, deserialize_with = "de_watermark")]
    #[param(value_type = Option<i64>, minimum = 0)]
    pub as_of_event: Option<i64>,
    /// Rebuild: the time that stands in for "now" (a manifest's `exported_at`, RFC 3339).
    #[serde(default, deserialize_with = "de_time")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub as_of_time: Option<Micros>,
}

fn option_error<E: serde::de::Error>(e: rltrace_core::dataset::OptionError) -> E {
    E::custom(e.message)
}

fn de_shape<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Shape>, D::Error> {
    Shape::parse(&String::deserialize(d)?).map(Some).map_err(option_error)
}

fn de_format<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Format>, D::Error> {
    Format::parse(&String::deserialize(d)?).map(Some).map_err(option_error)
}

fn de_threshold<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    parse_unit_option("threshold", &String::deserialize(d)?).map(Some).map_err(option_error)
}

fn de_margin<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    parse_unit_option("margin", &String::deserialize(d)?).map(Some).map_err(option_error)
}

fn de_prompt_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Pointer>, D::Error> {
    Pointer::parse("prompt_field", &String::deserialize(d)?).map(Some).map_err(option_error)
}

fn de_completion_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Pointer>, D::Error> {
    Pointer::parse("completion_field", &String::deserialize(d)?).map(Some).map_err(option_error)
}

fn de_watermark<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = String::deserialize(d)?;
    match v.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(Some(n)),
        _ => Err(D::Error::custom(format!("must be a non-negative integer (a manifest's watermark), got {v:?}"))),
    }
}

fn de_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let v = String::deserialize(d)?;
    match v.as_str() {
        "true" => Ok(Some(true)),
        "false" => Ok(Some(false)),
        _ => Err(D::Error::custom(format!("must be true or false, got {v:?}"))),
    }
}

fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Micros>, D::Error> {
    let v = String::deserialize(d)?;
    parse_rfc3339_micros(&v).map(Some).ok_or_else(|| D::Error::custom(format!("must be an RFC 3339 timestamp, got {v:?}")))
}

fn de_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let v = String::deserialize(d)?;
    match v.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(Some(n)),
        _ => Err(D::Error::custom(format!("must be an integer in [1, {MAX_LIMIT}], got {v:?}"))),
    }
}

/// Parse a query string into its typed parameters: an unknown or repeated parameter, or a bad
/// value, is 400 with the parameter's name.
fn query<T: DeserializeOwned>(raw: Option<String>) -> Result<T, ApiError> {
    let raw = raw.unwrap_or_default();
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(raw.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| ApiError::BadRequest(format!("query parameter {e}")))
}

fn cursor(c: Option<&str>, tag: &str) -> Result<Option<i64>, ApiError> {
    match c {
        None => Ok(None),
        Some(c) => decode_cursor(tag, c).map(Some).ok_or_else(|| ApiError::BadRequest(format!("invalid cursor {c:?}"))),
    }
}

impl TripletQuery {
    fn filter(&self) -> TripletFilter {
        TripletFilter {
            sequence_id: self.sequence_id.clone(),
            role: self.role.clone(),
            rewarded: self.rewarded,
            since: self.since,
            until: self.until,
            complete: self.complete,
        }
    }
}

impl ExportQuery {
    fn request(&self) -> Result<Request, ApiError> {
        let d = Options::default();
        let req = Request {
            shape: self.shape.unwrap_or_default(),
            format: self.format.unwrap_or_default(),
            options: Options {
                threshold: self.threshold.unwrap_or(d.threshold),
                margin: self.margin.unwrap_or(d.margin),
                prompt_field: self.prompt_field.clone(),
                completion_field: self.completion_field.clone(),
                text: self.text.unwrap_or(false),
            },
            redaction_rules_hash: None,
            filter: TripletFilter {
                sequence_id: self.sequence_id.clone(),
                role: self.role.clone(),
                rewarded: self.rewarded,
                since: self.since,
                until: self.until,
                complete: self.complete,
            },
        };
        rltrace_dataset::check(&req).map_err(|e| ApiError::BadRequest(format!("query parameter {e}")))?;
        Ok(req)
    }

    /// The rebuild point: all three `as_of_*` parameters, or none.
    fn as_of(&self) -> Result<Option<AsOf>, ApiError> {
        match (self.as_of_span, self.as_of_event, self.as_of_time) {
            (None, None, None) => Ok(None),
            (Some(span), Some(event), Some(now)) => Ok(Some(AsOf { watermarks: Watermarks { span, event }, now })),
            _ => {
                let missing = [("as_of_span", self.as_of_span.is_none()), ("as_of_event", self.as_of_event.is_none()), ("as_of_time", self.as_of_time.is_none())]
                    .into_iter()
                    .find(|(_, m)| *m)
                    .map_or("as_of_span", |(n, _)| n);
                Err(ApiError::BadRequest(format!("query parameter {missing}: as_of_span, as_of_event and as_of_time go together (from a manifest)")))
            }
        }
    }
}

/// Cursors are opaque to clients: a tag and a position, hex-encoded.
pub(crate) fn encode_cursor(tag: &str, pos: i64) -> String {
    rltrace_core::ids::to_hex(format!("{tag}:{pos}").as_bytes())
}

pub(crate) fn decode_cursor(tag: &str, c: &str) -> Option<i64> {
    if c.len() % 2 != 0 || c.len() > 64 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..c.len()).step_by(2).map(|i| u8::from_str_radix(c.get(i..i + 2)?, 16).ok()).collect();
    let s = String::from_utf8(bytes?).ok()?;
    let (t, n) = s.split_once(':')?;
    (t == tag).then(|| n.parse().ok()).flatten()
}

/// The items of a store page as response items, and the cursor of the next page.
fn page_parts<T, U: From<T>>(page: Page<T>, tag: &str) -> (Vec<U>, Option<String>) {
    (page.items.into_iter().map(U::from).collect(), page.next.map(|n| encode_cursor(tag, n)))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::Internal(e.to_string()))?
}

pub use rltrace_dataset::filter_json;

/// The percent-decoded id of a path; a rejection (not UTF-8) answers the REST error shape.
fn path_id(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(id)| id).map_err(|e| ApiError::BadRequest(e.body_text()))
}

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

/// List sequences.
///
/// A page of sequences with their counts, times and whether they are rewarded and complete.
#[utoipa::path(
    get,
    path = "/api/v1/sequences",
    operation_id = "listSequences",
    tag = "sequences",
    params(SequenceQuery),
    responses(
        (status = 200, description = "A page of sequences.", body = SequencePage),
        (status = 400, description = "An unknown or malformed query parameter, or a bad cursor.", body = ErrorBody),
        (status = 500, description = "The store failed.", body = ErrorBody),
    )
)]
pub async fn list_sequences(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Result<Json<SequencePage>, ApiError> {
    let q: SequenceQuery = query(raw)?;
    let f = SequenceFilter {
        role: q.role,
        since: q.since,
        until: q.until,
        rewarded: q.rewarded,
        complete: q.complete,
        review_pending: q.review == Some(Review::Pending),
    };
    let (limit, cursor) = (q.limit.unwrap_or(DEFAULT_LIMIT), cursor(q.cursor.as_deref(), "s")?);
    let page = blocking(move || Ok(st.store.read(|tx| tx.sequences(&f, cursor, limit, &st.policy))?)).await?;
    let (items, next_cursor) = page_parts(page, "s");
    Ok(Json(SequencePage { items, next_cursor }))
}

/// A sequence with its triplets in order and its ledger.
#[utoipa::path(
    get,
    path = "/api/v1/sequences/{sequence_id}",
    operation_id = "getSequence",
    tag = "sequences",
    params(("sequence_id" = String, Path, description = "Sequence id (percent-encoded)."), SequenceTripletsQuery),
    responses(
        (status = 200, description = "The sequence.", body = SequenceDetail),
        (status = 400, description = "The id is not UTF-8 once percent-decoded.", body = ErrorBody),
        (status = 404, description = "No such sequence.", body = ErrorBody),
        (status = 500, description = "The store failed.", body = ErrorBody),
    )
)]
pub async fn get_sequence(
    State(st): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Json<SequenceDetail>, ApiError> {
    let id = path_id(id)?;
    let q: SequenceTripletsQuery = query(raw)?;
    let (limit, cursor) = (q.limit.unwrap_or(DEFAULT_SEQUENCE_TRIPLETS), cursor(q.cursor.as_deref(), "q")?);
    let detail = blocking(move || {
        st.store.read(|tx| tx.sequence(&id, cursor, limit, &st.policy))?.ok_or_else(|| ApiError::NotFound(format!("sequence {id:?} not found")))
    })
    .await?;
    Ok(Json(detail.into()))
}

/// List triplets.
///
/// In arrival order, or in sequence order with `sequence_id`.
#[utoipa::path(
    get,
    path = "/api/v1/triplets",
    operation_id = "listTriplets",
    tag = "triplets",
    params(TripletQuery),
    responses(
        (status = 200, description = "A page of triplets.", body = TripletPage),
        (status = 400, description = "An unknown or malformed query parameter, or a bad cursor.", body = ErrorBody),
        (status = 500, description = "The store failed.", body = ErrorBody),
    )
)]
pub async fn list_triplets(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Result<Json<TripletPage>, ApiError> {
    let q: TripletQuery = query(raw)?;
    let f = q.filter();
    let (limit, cursor) = (q.limit.unwrap_or(DEFAULT_LIMIT), cursor(q.cursor.as_deref(), "t")?);
    let page = blocking(move || Ok(st.store.read(|tx| tx.triplets(&f, cursor, limit, &st.policy))?)).await?;
    let (items, next_cursor) = page_parts(page, "t");
    Ok(Json(TripletPage { items, next_cursor }))
}

/// A triplet and the ledger events reaching it.
#[utoipa::path(
    get,
    path = "/api/v1/triplets/{triplet_id}",
    operation_id = "getTriplet",
    tag = "triplets",
    params(("triplet_id" = String, Path, description = "Triplet id (percent-encoded).")),
    responses(
        (status = 200, description = "The triplet.", body = TripletDetail),
        (status = 400, description = "The id is not UTF-8 once percent-decoded.", body = ErrorBody),
        (status = 404, description = "No such triplet.", body = ErrorBody),
        (status = 500, description = "The store failed.", body = ErrorBody),
    )
)]
pub async fn get_triplet(State(st): State<AppState>, id: Result<Path<String>, PathRejection>) -> Result<Json<TripletDetail>, ApiError> {
    let id = path_id(id)?;
    let d = blocking(move || st.store.read(|tx| tx.triplet(&id, &st.policy))?.ok_or_else(|| ApiError::NotFound(format!("triplet {id:?} not found")))).await?;
    Ok(Json(d.into()))
}

/// The spans of a trace in tree order.
///
/// Parents before children, siblings by start time.
#[utoipa::path(
    get,
    path = "/api/v1/traces/{trace_id}",
    operation_id = "getTrace",
    tag = "traces",
    params(("trace_id" = String, Path, description = "32 hex digits.")),
    responses(
        (status = 200, description = "The trace.", body = Trace),
        (status = 400, description = "Not a trace id.", body = ErrorBody),
        (status = 404, description = "No such trace.", body = ErrorBody),
        (status = 500, description = "The store failed.", body = ErrorBody),
    )
)]
pub async fn get_trace(State(st): State<AppState>, id: Result<Path<String>, PathRejection>) -> Result<Json<Trace>, ApiError> {
    let id = path_id(id)?;
    let trace_id = rltrace_core::ids::from_hex::<16>(&id).ok_or_else(|| ApiError::BadRequest(format!("trace id must be 32 hex digits, got {id:?}")))?;
    let spans = blocking(move || st.store.read(|tx| tx.trace(&trace_id))?.ok_or_else(|| ApiError::NotFound(format!("trace {id} not found")))).await?;
    Ok(Json(Trace { spans: spans.into_iter().map(Into::into).collect(), trace_id: rltrace_core::ids::to_hex(&trace_id) }))
}

/// Store counts and the ingest rate.
#[utoipa::path(
    get,
    path = "/api/v1/stats",
    operation_id = "stats",
    tag = "stats",
    responses(
        (status = 200, description = "Counts under the current policy.", body = Stats),
        (status = 500, description = "The store failed.", body = ErrorBody),
    )
)]
pub async fn stats(State(st): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let rate = st.metrics.ingest_rate();
    let s = blocking(move || Ok(st.store.read(|tx| tx.stats(&st.policy))?)).await?;
    Ok(Json(Stats::new(s, rate)))
}

/// `GET /api/v1/forwarders`: every forwarding target, its cursor, lag and counts.
#[utoipa::path(
    get,
    path = "/api/v1/forwarders",
    operation_id = "forwarders",
    tag = "stats",
    responses(
        (status = 200, description = "The forwarding targets of this collector (none without [[forward]] in its config file).", body = Forwarders),
        (status = 500, description = "The store failed.", body = ErrorBody),
    )
)]
pub async fn forwarders(State(st): State<AppState>) -> Result<Json<Forwarders>, ApiError> {
    let forwarders = st.forwarders.clone();
    let (cursors, last) = if forwarders.is_empty() {
        (Vec::new(), 0)
    } else {
        blocking(move || Ok(st.store.read(|tx| Ok((tx.forward_cursors()?, tx.last_span_id()?)))?)).await?
    };
    Ok(Json(Forwarders {
        forwarders: forwarders
            .iter()
            .map(|f| {
                let stored = cursors.iter().find(|(n, _)| *n == f.target.name).map(|(_, c)| c);
                ForwarderOut::new(&f.target, &f.status(), stored, last)
            })
            .collect(),
    }))
}

/// `POST /api/v1/settle`: apply the fallback reward now to every sequence that is due.
#[utoipa::path(
    post,
    path = "/api/v1/settle",
    operation_id = "settle",
    tag = "rewards",
    responses(
        (status = 200, description = "The sequences the fallback reward was applied to (0 when the policy has no fallback).", body = Settled),
        (status = 500, description = "The store failed.", body = ErrorBody),
        (status = 503, description = "The writer queue is full; retry later.", body = ErrorBody),
    )
)]
pub async fn settle(State(st): State<AppState>) -> Result<Json<Settled>, ApiError> {
    let n = crate::settle_due(&st.store, &st.policy).await?;
    Ok(Json(Settled { settled: n as u64 }))
}

// ---------------------------------------------------------------------------------------------
// Request bodies and the reward ledger
// ---------------------------------------------------------------------------------------------

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

/// The typed request of a JSON body: 422 when the body is not an object or not of the shape of
/// `T` (unknown field, wrong type, missing field), with the path of the bad field first in the
/// message (`target.gamma: invalid type: string "x", expected f64`).
pub(crate) fn typed<T: DeserializeOwned>(body: &Value) -> Result<T, ApiError> {
    if !body.is_object() {
        return Err(ApiError::Validation("body must be a JSON object".into()));
    }
    if let Some(path) = nul_at(body, "") {
        return Err(ApiError::Validation(format!("{path}: a string must not contain a NUL character")));
    }
    serde_path_to_error::deserialize(body).map_err(|e| ApiError::Validation(e.to_string()))
}

/// The path of the first string (key or value) holding a NUL character, which no store keeps
/// as text.
fn nul_at(v: &Value, path: &str) -> Option<String> {
    match v {
        Value::String(s) if s.contains('\0') => Some(if path.is_empty() { "body".into() } else { path.to_string() }),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, x)| nul_at(x, &format!("{path}[{i}]"))),
        Value::Object(m) => m.iter().find_map(|(k, x)| {
            let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            if k.contains('\0') { Some(p) } else { nul_at(x, &p) }
        }),
        _ => None,
    }
}

/// The hash that tells a replay (same idempotency key, same body) from a conflict: the body as
/// sorted-key JSON without its `idempotency_key`.
pub(crate) fn body_hash(body: &Value) -> String {
    let mut canonical = body.clone();
    if let Some(o) = canonical.as_object_mut() {
        o.remove("idempotency_key");
    }
    rltrace_core::ids::sha256_hex(canonical.to_string().as_bytes())
}

/// The idempotency key of the body or of the `Idempotency-Key` header (both given: equal).
pub(crate) fn merge_idempotency_key(body_key: Option<String>, header_key: Option<String>) -> Result<Option<String>, ApiError> {
    let key = match (body_key, header_key) {
        (Some(a), Some(b)) if a != b => return Err(ApiError::Validation("idempotency_key and the Idempotency-Key header differ".into())),
        (a, b) => a.or(b),
    };
    if key.as_ref().is_some_and(|k| k.chars().count() > 256) {
        return Err(ApiError::Validation("idempotency_key must be at most 256 characters".into()));
    }
    Ok(key)
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

/// A string that must not be empty.
fn non_empty(field: &str, v: String) -> Result<String, ApiError> {
    if v.is_empty() { Err(ApiError::Validation(format!("{field} must be a non-empty string"))) } else { Ok(v) }
}

/// A string that, when given, must not be empty.
fn opt_non_empty(field: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    v.map(|v| non_empty(field, v)).transpose()
}

/// Validate a `POST /api/v1/rewards` body (and the `Idempotency-Key` header) into a ledger append.
pub fn parse_reward(body: &Value, header_key: Option<String>) -> Result<NewReward, ApiError> {
    let v = |m: String| ApiError::Validation(m);
    let RewardRequest { target, value, source, reason, idempotency_key, metadata, pending } = typed(body)?;
    let target = match target {
        RewardRequestTarget::Triplet { triplet_id } => RewardTarget::Triplet { triplet_id: non_empty("target.triplet_id", triplet_id)? },
        RewardRequestTarget::Sequence { sequence_id, strategy, gamma, role } => {
            let sequence_id = non_empty("target.sequence_id", sequence_id)?;
            let name = opt_non_empty("target.strategy", strategy)?.unwrap_or_else(|| "uniform".into());
            let role = opt_non_empty("target.role", role)?;
            let strategy = Strategy::parse(&name, gamma, role.as_deref()).map_err(|e| v(e.to_string()))?;
            RewardTarget::Sequence { sequence_id, strategy }
        }
    };
    let value = validate_value(value).map_err(|e| v(e.to_string()))?;
    validate_source(&source).map_err(|e| v(e.to_string()))?;
    let reason = opt_non_empty("reason", reason)?;
    let idempotency_key = merge_idempotency_key(opt_non_empty("idempotency_key", idempotency_key)?, header_key)?;
    Ok(NewReward {
        target,
        value: Some(value),
        source,
        reason,
        idempotency_key,
        metadata: metadata.map(|m| Value::Object(m).to_string()),
        allow_pending: pending.unwrap_or(false),
        body_hash: body_hash(body),
        valuation: rltrace_core::reward::Valuation::Fixed,
    })
}

/// Append a validated reward and answer as the reward API does: 201 new, 200 replay, 409 key
/// conflict, 404 unknown target.
pub(crate) async fn append(st: &AppState, req: NewReward) -> Result<Response, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    st.store.submit_reward(req, move |r| {
        let _ = tx.send(r);
    })?;
    let result = rx.await.map_err(|_| ApiError::Internal("store writer stopped".into()))??;
    Ok(match result {
        RewardAppend::Created(e) => (StatusCode::CREATED, Json(RewardEvent::from(e))).into_response(),
        RewardAppend::Existing(e) => (StatusCode::OK, Json(RewardEvent::from(e))).into_response(),
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

/// Append a reward event to the ledger.
///
/// 201 with the new event; the same idempotency key and body again: 200 with the stored event.
#[utoipa::path(
    post,
    path = "/api/v1/rewards",
    operation_id = "postReward",
    tag = "rewards",
    params(("Idempotency-Key" = Option<String>, Header, description = "Idempotency key (instead of or equal to the body's).")),
    request_body = RewardRequest,
    responses(
        (status = 201, description = "Appended.", body = RewardEvent),
        (status = 200, description = "The same key and body again: the stored event.", body = RewardEvent),
        (status = 400, description = "The body is not JSON.", body = ErrorBody),
        (status = 404, description = "Unknown target (send `\"pending\": true` to record it until it arrives).", body = ErrorBody),
        (status = 409, description = "The idempotency key was used with another body.", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB.", body = ErrorBody),
        (status = 422, description = "The body is of the wrong shape (unknown field, wrong type, missing field) or a value is out of range.", body = ErrorBody),
        (status = 503, description = "Overloaded: retry after `Retry-After` seconds.", body = ErrorBody),
        (status = 500, description = "The store failed.", body = ErrorBody),
    )
)]
pub async fn post_reward(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = json_body(body).await?;
    let req = parse_reward(&body, idempotency_header(&headers))?;
    append(&st, req).await
}

/// A human decision on a sequence.
///
/// Source `hitl`, strategy `uniform`; the value comes from the policy's decision values
/// (default 1.0 / 0.7 / 0.0, `deferred` none).
#[utoipa::path(
    post,
    path = "/api/v1/callbacks/hitl",
    operation_id = "callbackHitl",
    tag = "rewards",
    params(("Idempotency-Key" = Option<String>, Header, description = "Idempotency key (instead of or equal to the body's).")),
    request_body = HitlCallback,
    responses(
        (status = 201, description = "Appended.", body = RewardEvent),
        (status = 200, description = "The same key and body again: the stored event.", body = RewardEvent),
        (status = 400, description = "The body is not JSON.", body = ErrorBody),
        (status = 404, description = "Unknown sequence.", body = ErrorBody),
        (status = 409, description = "The idempotency key was used with another body.", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB.", body = ErrorBody),
        (status = 422, description = "Wrong shape, unknown decision or empty justification.", body = ErrorBody),
        (status = 503, description = "Overloaded: retry after `Retry-After` seconds.", body = ErrorBody),
        (status = 500, description = "The store failed.", body = ErrorBody),
    )
)]
pub async fn callback_hitl(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = json_body(body).await?;
    let req = crate::callbacks::parse_hitl(&body, idempotency_header(&headers), &st.policy)?;
    append(&st, req).await
}

/// Test results for a sequence.
///
/// Source `tests`, strategy `uniform`, value `passed / (passed + failed)`.
#[utoipa::path(
    post,
    path = "/api/v1/callbacks/tests",
    operation_id = "callbackTests",
    tag = "rewards",
    params(("Idempotency-Key" = Option<String>, Header, description = "Idempotency key (instead of or equal to the body's).")),
    request_body = TestsCallback,
    responses(
        (status = 201, description = "Appended.", body = RewardEvent),
        (status = 200, description = "The same key and body again: the stored event.", body = RewardEvent),
        (status = 400, description = "The body is not JSON.", body = ErrorBody),
        (status = 404, description = "Unknown sequence.", body = ErrorBody),
        (status = 409, description = "The idempotency key was used with another body.", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB.", body = ErrorBody),
        (status = 422, description = "Wrong shape, or passed and failed both 0.", body = ErrorBody),
        (status = 503, description = "Overloaded: retry after `Retry-After` seconds.", body = ErrorBody),
        (status = 500, description = "The store failed.", body = ErrorBody),
    )
)]
pub async fn callback_tests(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = json_body(body).await?;
    let req = crate::callbacks::parse_tests(&body, idempotency_header(&headers))?;
    append(&st, req).await
}

/// A defect found later.
///
/// Source `defect`, value `1 - penalty(severity)` (multiplied over defects) for the triplets of
/// the task or sequence whose `agent_role` or `phase` is `phase_injected`.
#[utoipa::path(
    post,
    path = "/api/v1/callbacks/defects",
    operation_id = "callbackDefects",
    tag = "rewards",
    params(("Idempotency-Key" = Option<String>, Header, description = "Idempotency key (instead of or equal to the body's).")),
    request_body = DefectCallback,
    responses(
        (status = 201, description = "Appended.", body = RewardEvent),
        (status = 200, description = "The same key and body again: the stored event.", body = RewardEvent),
        (status = 400, description = "The body is not JSON.", body = ErrorBody),
        (status = 404, description = "Unknown task or sequence.", body = ErrorBody),
        (status = 409, description = "The idempotency key was used with another body.", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB.", body = ErrorBody),
        (status = 422, description = "Wrong shape, unknown defect type or severity, or the same phase injected and removed.", body = ErrorBody),
        (status = 503, description = "Overloaded: retry after `Retry-After` seconds.", body = ErrorBody),
        (status = 500, description = "The store failed.", body = ErrorBody),
    )
)]
pub async fn callback_defects(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = json_body(body).await?;
    let req = crate::callbacks::parse_defect(&body, idempotency_header(&headers), &st.policy)?;
    append(&st, req).await
}

/// Try a reward policy: the distribution of effective rewards under the current and the
/// proposed policy, and the sequences that change most. Nothing is stored.
///
/// Evaluates the most recent sequences matching the filters (at most `sequences`, default 1,000,
/// at most 10,000; at most 100,000 triplets) and says how many it evaluated and whether older
/// ones were left out (`bounded`).
#[utoipa::path(
    post,
    path = "/api/v1/whatif",
    operation_id = "whatIf",
    tag = "rewards",
    request_body = WhatIfRequest,
    responses(
        (status = 200, description = "Both distributions and the most-changed sequences.", body = WhatIfResponse),
        (status = 400, description = "The body is not JSON.", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB.", body = ErrorBody),
        (status = 422, description = "Wrong shape, or an invalid policy: the message starts with the bad field's path (`policy.sources.hitl.weight: ...`).", body = ErrorBody),
        (status = 500, description = "The store failed.", body = ErrorBody),
    )
)]
pub async fn what_if(State(st): State<AppState>, body: Body) -> Result<Json<WhatIfResponse>, ApiError> {
    let body = json_body(body).await?;
    let params = crate::whatif::parse_request(&body)?;
    Ok(Json(crate::whatif::run(&st, params).await?))
}

// ---------------------------------------------------------------------------------------------
// Export, health, metrics, the document itself
// ---------------------------------------------------------------------------------------------

/// Stream a dataset: triplets or a trainer's rows, as JSONL or Parquet.
///
/// The rows of `shape` (DESIGN section 7) for the triplets that pass the filters, read up to the
/// store's watermarks when it starts (or the `as_of_*` parameters of a manifest, which rebuild
/// the same file). With `manifest=true` the manifest is a last JSONL line `{"manifest": {...}}`
/// or the Parquet file's key-value metadata `rltrace.manifest`.
#[utoipa::path(
    get,
    path = "/api/v1/export",
    operation_id = "export",
    tag = "export",
    params(ExportQuery),
    responses(
        (status = 200, description = "The dataset, streamed: `application/x-ndjson` (JSONL) or `application/vnd.apache.parquet`.", content_type = "application/x-ndjson", body = String),
        (status = 400, description = "An unknown or malformed query parameter (shape, format, option, filter, as_of).", body = ErrorBody),
        (status = 422, description = "The export needs more memory than its bounds allow (DPO prompts, a stepwise sequence); narrow the filters.", body = ErrorBody),
        (status = 500, description = "The store failed.", body = ErrorBody),
    )
)]
pub async fn export(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let q: ExportQuery = query(raw)?;
    let mut req = q.request()?;
    req.redaction_rules_hash = (!st.redactor.is_empty()).then(|| st.redactor.hash().to_string());
    let as_of = q.as_of()?;
    let with_manifest = q.manifest.unwrap_or(false);
    let content_type = match req.format {
        Format::Jsonl => "application/x-ndjson",
        Format::Parquet => "application/vnd.apache.parquet",
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, DatasetError>>(8);
    tokio::task::spawn_blocking(move || {
        let policy = st.policy.clone();
        let limits = st.dataset_limits;
        let result = rltrace_dataset::resolve_as_of(&st.store, as_of).map_err(DatasetError::from).and_then(|as_of| {
            let out = ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(CHANNEL_CHUNK) };
            rltrace_dataset::export(
                &rltrace_dataset::Run { store: &st.store, policy: &policy, req: &req, as_of, limits: &limits, embed_manifest: with_manifest },
                out,
                &mut || {},
            )
        });
        if let Err(e) = result {
            match &e {
                // The client went away, or asked for more than the bounds allow: its business.
                DatasetError::Io(_) => {}
                DatasetError::Bound(_) | DatasetError::Option(_) => tracing::warn!(error = %e, "export refused"),
                _ => tracing::error!(error = %e, "export failed"),
            }
            let _ = tx.blocking_send(Err(e));
        }
    });
    // Wait for the first bytes: an export that fails before writing anything (a bound reached in
    // DPO pairing, the store failing) still answers the REST error shape.
    let first = match rx.recv().await {
        Some(Ok(b)) => Some(b),
        Some(Err(DatasetError::Bound(e))) => return Err(ApiError::Validation(e.to_string())),
        Some(Err(DatasetError::Option(e))) => return Err(ApiError::BadRequest(format!("query parameter {e}"))),
        Some(Err(e)) => return Err(ApiError::Internal(e.to_string())),
        None => None,
    };
    let rest = tokio_stream::wrappers::ReceiverStream::new(rx);
    use futures_util::StreamExt;
    let stream = futures_util::stream::iter(first.map(Ok)).chain(rest.map(|r| r.map_err(|e| std::io::Error::other(e.to_string()))));
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(resp)
}

/// Bytes handed to the response at once.
const CHANNEL_CHUNK: usize = 64 * 1024;

/// The export's output: chunks sent to the response body; a client gone away stops the export.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, DatasetError>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHANNEL_CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHANNEL_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Liveness.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Health))
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// Readiness: the store answers.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    responses(
        (status = 200, description = "`{\"status\": \"ready\"}`", body = Health),
        (status = 503, description = "The store does not answer.", body = ErrorBody),
    )
)]
pub async fn readyz(State(st): State<AppState>) -> Result<Json<Health>, ApiError> {
    blocking(move || {
        st.store.health().map_err(|why| ApiError::NotReady(format!("store is failing: {why}")))?;
        st.store.ping().map_err(|e: StoreError| ApiError::NotReady(format!("store is not reachable: {e}")))
    })
    .await?;
    Ok(Json(Health { status: "ready".into() }))
}

/// Prometheus / OpenMetrics text metrics.
///
/// OpenMetrics text; the content type is `application/openmetrics-text` when the scraper's
/// `Accept` asks for it, `text/plain; version=0.0.4` otherwise (the text parses as both).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "health",
    responses(
        (status = 200, description = "The metrics.", content_type = "text/plain", body = String),
    )
)]
pub async fn metrics(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let text = st.metrics.render(st.store.queue_depth(), st.store.queued_bytes());
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let content_type = if accept.contains("application/openmetrics-text") {
        crate::metrics::OPENMETRICS_CONTENT_TYPE
    } else {
        crate::metrics::TEXT_CONTENT_TYPE
    };
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "health",
    responses((status = 200, description = "The OpenAPI document of the REST API.", body = Object))
)]
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::json()).into_response()
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
