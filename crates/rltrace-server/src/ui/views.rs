//! The read views: overview, the sequence list, one sequence (a page of its triplets, its
//! ledger, the reward form), one triplet and one trace. Each page reads one bounded page from
//! the store (the API's own queries and paging) and renders it; nothing here decides a domain
//! rule.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use rltrace_core::export::TripletView;
use rltrace_core::reward::{RewardEvent, RewardTarget, Strategy};
use rltrace_store::{SequenceDetail, SequenceFilter, SequenceSummary, SpanOut, TripletDetail};
use serde_json::Value;

use super::page::{Section, count, error_page, html_response, layout, notice, pct, query, reward, sequence_href, short, trace_href, triplet_href, when};
use super::{Params, charts, json, read};
use crate::AppState;
use crate::api::{decode_cursor, encode_cursor};
use crate::error::ApiError;

/// Sequences of the overview's charts: the most recent ones.
pub const OVERVIEW_SAMPLE: usize = 500;
/// Triplets of the overview's sample at most.
pub const OVERVIEW_TRIPLETS: usize = 20_000;
/// Sequences per page of the list (default).
pub const SEQUENCES_PER_PAGE: usize = 50;
/// Most sequences per page of the list.
pub const MAX_SEQUENCES_PER_PAGE: usize = 200;
/// Triplets per page of a sequence.
pub const TRIPLETS_PER_PAGE: usize = 50;
/// Ledger events shown on a sequence's page (the newest).
pub const LEDGER_SHOWN: usize = 100;
/// Spans per page of a trace.
pub const SPANS_PER_PAGE: usize = 200;

fn bool_param(p: &Params, name: &str) -> Result<Option<bool>, ApiError> {
    match p.get(name) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(v) => Err(ApiError::BadRequest(format!("{name} must be true or false, got {v:?}"))),
    }
}

fn time_param(p: &Params, name: &str) -> Result<Option<i64>, ApiError> {
    p.get(name)
        .map(|v| rltrace_core::time::parse_rfc3339_micros(v).ok_or_else(|| ApiError::BadRequest(format!("{name} must be an RFC 3339 time such as 2026-01-01T00:00:00Z, got {v:?}"))))
        .transpose()
}

fn cursor_param(p: &Params, tag: &str) -> Result<Option<i64>, ApiError> {
    p.get("cursor").map(|c| decode_cursor(tag, c).ok_or_else(|| ApiError::BadRequest(format!("invalid cursor {c:?}")))).transpose()
}

/// The whole-number field of a state or action object, or a short text.
fn field<'a>(v: &'a Option<Value>, keys: &[&str]) -> Option<&'a Value> {
    let o = v.as_ref()?.as_object()?;
    keys.iter().find_map(|k| o.get(*k))
}

/// A state or action parsed for the table, when it is not large.
fn small_json(text: &str) -> Option<Value> {
    if text.len() > 64 * 1024 { None } else { serde_json::from_str(text).ok() }
}

fn value_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "—".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Source shares of a triplet's reward, for [`charts::shares`].
fn share_parts(t: &TripletView) -> Vec<(String, f64, f64)> {
    t.effective.sources.iter().map(|(s, v)| (s.clone(), v.value, v.weight)).collect()
}

fn sources_text(t: &TripletView) -> Markup {
    html! {
        @for (i, (s, v)) in t.effective.sources.iter().enumerate() {
            @if i > 0 { ", " }
            span class="src" { (s) } " " (format!("{:.2}", v.value)) @if v.weight != 1.0 { " ×" (v.weight) }
        }
    }
}

fn target_text(t: &RewardTarget) -> String {
    match t {
        RewardTarget::Triplet { triplet_id } => format!("triplet {}", short(triplet_id)),
        RewardTarget::Sequence { strategy, .. } => match strategy {
            Strategy::Uniform => "sequence, uniform".into(),
            Strategy::Discounted { gamma } => format!("sequence, discounted γ={gamma}"),
            Strategy::Last => "sequence, last triplet".into(),
            Strategy::Role { role } => format!("sequence, role {role}"),
            Strategy::Phase { phase } => format!("sequence, phase {phase}"),
        },
        RewardTarget::Task { task_id, phase } => format!("task {task_id}, phase {phase}"),
    }
}

/// A ledger table (newest first).
pub fn ledger_table(events: &[RewardEvent], policy: &rltrace_core::Policy) -> Markup {
    html! {
        @if events.is_empty() {
            p class="muted" { "No reward event reaches it yet." }
        } @else {
            div class="scroll" {
                table {
                    thead { tr { th scope="col" { "Appended" } th scope="col" { "Source" } th scope="col" class="num" { "Value" } th scope="col" { "Target" } th scope="col" { "Reason" } th scope="col" { "Reward id" } } }
                    tbody {
                        @for e in events.iter().rev() {
                            tr {
                                td { (when(Some(e.created_at))) }
                                td { span class="src" { (e.source) } @if e.pending { " (pending)" } }
                                td class="num" { (reward(e.value_under(policy))) }
                                td { (target_text(&e.target)) }
                                td class="reason" { (e.reason.as_deref().unwrap_or("")) }
                                td class="id" { (short(&e.reward_id)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Overview
// ---------------------------------------------------------------------------------------------

/// `GET /ui/`: counts, ingest rate, rewarded share and the charts over the newest sequences.
pub async fn overview(State(st): State<AppState>) -> Response {
    let rate = st.metrics.ingest_rate();
    let policy = st.policy.clone();
    let r = read(&st, move |tx, p| {
        let stats = tx.stats(p)?;
        let sample = tx.recent_sequences(&SequenceFilter::default(), None, OVERVIEW_SAMPLE, OVERVIEW_TRIPLETS)?;
        Ok((stats, sample, tx.now()))
    })
    .await;
    let (stats, sample, now) = match r {
        Ok(x) => x,
        Err(e) => return error_page(&e),
    };
    let o = rltrace_core::whatif::overview(&sample.sequences, &policy, now, 10, 24);
    let share = if stats.triplets > 0 { 100.0 * stats.rewarded_triplets as f64 / stats.triplets as f64 } else { 0.0 };
    let max = o.histogram.bins.iter().copied().max().unwrap_or(0);
    let series: Vec<charts::Series<'_>> = o.roles.iter().map(|r| charts::Series { label: &r.role, values: &r.means }).collect();
    let body = html! {
        dl class="cards" {
            div { dt { "Triplets" } dd id="stat-triplets" { (count(stats.triplets)) } }
            div { dt { "Sequences" } dd id="stat-sequences" { (count(stats.sequences)) } }
            div { dt { "Spans" } dd { (count(stats.spans)) } }
            div { dt { "Reward events" } dd id="stat-events" { (count(stats.reward_events)) } }
            div { dt { "Rewarded" } dd id="stat-rewarded" { (format!("{share:.1} %")) } }
            div { dt { "Ingest" } dd { (format!("{rate:.0}")) " spans/s" } }
        }
        p class="muted" {
            "Charts over the " (count(o.sequences as u64)) " most recent sequences (" (count(o.triplets as u64)) " triplets"
            @if sample.bounded { ", bounded at " (OVERVIEW_SAMPLE) " sequences or " (count(OVERVIEW_TRIPLETS as u64)) " triplets" }
            "), under the current policy."
        }
        div class="grid2" {
            section {
                h2 { "Effective rewards" }
                (charts::histogram("Effective rewards of the recent triplets", &o.histogram.bins, max, "cur"))
                p class="muted" { (count(o.histogram.unrewarded)) " of them have no reward yet; mean " (reward(o.histogram.mean())) "." }
            }
            section {
                h2 { "Mean reward per role over time" }
                @if series.is_empty() { p class="muted" { "No rewarded triplet with a role yet." } }
                @else { (charts::lines("Mean effective reward per agent role", &o.bucket_starts, o.end, &series)) }
            }
        }
        p { a href="/ui/sequences" { "All sequences" } " · " a href="/ui/review" { "Review queue" } " · " a href="/ui/whatif" { "Try a reward policy" } }
    };
    html_response(StatusCode::OK, layout("Overview", Section::Overview, body))
}

// ---------------------------------------------------------------------------------------------
// The sequence list
// ---------------------------------------------------------------------------------------------

fn sequence_rows(items: &[SequenceSummary]) -> Markup {
    html! {
        div class="scroll" {
            table class="rows" {
                thead { tr {
                    th scope="col" { "Sequence" } th scope="col" class="num" { "Triplets" } th scope="col" { "First" } th scope="col" { "Last" }
                    th scope="col" { "Roles" } th scope="col" { "Complete" } th scope="col" class="num" { "Mean reward" }
                } }
                tbody {
                    @for s in items {
                        tr {
                            td { a class="row-link" href=(sequence_href(&s.sequence_id)) { (s.sequence_id) } }
                            td class="num" { (count(s.triplet_count.max(0) as u64)) }
                            td { (when(s.first_at)) }
                            td { (when(s.last_at)) }
                            td { (s.roles.join(", ")) }
                            td { (if s.complete { "yes" } else { "no" }) }
                            td class="num" { (reward(s.reward_mean)) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /ui/sequences`: the list with the API's filters and paging.
pub async fn sequences(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let p = Params::parse(raw.as_deref());
    let parsed = (|| -> Result<(SequenceFilter, Option<i64>, usize), ApiError> {
        let review_pending = match p.get("review") {
            None => false,
            Some("pending") => true,
            Some(v) => return Err(ApiError::BadRequest(format!("review must be pending, got {v:?}"))),
        };
        let f = SequenceFilter {
            role: p.get("role").map(str::to_string),
            since: time_param(&p, "since")?,
            until: time_param(&p, "until")?,
            rewarded: bool_param(&p, "rewarded")?,
            complete: bool_param(&p, "complete")?,
            review_pending,
        };
        let limit = match p.get("limit") {
            None => SEQUENCES_PER_PAGE,
            Some(v) => v.parse::<usize>().ok().filter(|n| (1..=MAX_SEQUENCES_PER_PAGE).contains(n)).ok_or_else(|| {
                ApiError::BadRequest(format!("limit must be an integer in [1, {MAX_SEQUENCES_PER_PAGE}], got {v:?}"))
            })?,
        };
        Ok((f, cursor_param(&p, "s")?, limit))
    })();
    let (result, status) = match parsed {
        Err(e) => (Err(e.to_string()), StatusCode::BAD_REQUEST),
        Ok((f, cursor, limit)) => match read(&st, move |tx, pol| tx.sequences(&f, cursor, limit, pol)).await {
            Ok(page) => (Ok(page), StatusCode::OK),
            Err(e) => return error_page(&e),
        },
    };
    let keep = ["role", "since", "until", "rewarded", "complete", "review", "limit"];
    let base: Vec<(&str, Option<&str>)> = keep.iter().map(|k| (*k, p.get(k))).collect();
    let next_href = result.as_ref().ok().and_then(|page| page.next).map(|n| {
        let c = encode_cursor("s", n);
        let mut q = base.clone();
        q.push(("cursor", Some(c.as_str())));
        format!("/ui/sequences{}", query(&q))
    });
    let select = |name: &str, options: &[(&str, &str)]| {
        html! {
            select id={ "f-" (name) } name=(name) {
                @for (v, label) in options { option value=(v) selected[p.get(name).unwrap_or("") == *v] { (label) } }
            }
        }
    };
    let body = html! {
        form class="filters" method="get" action="/ui/sequences" role="search" {
            label for="f-role" { "Role" } input id="f-role" name="role" data-search value=(p.get("role").unwrap_or("")) placeholder="Code";
            label for="f-since" { "Since" } input id="f-since" name="since" value=(p.get("since").unwrap_or("")) placeholder="2026-01-01T00:00:00Z";
            label for="f-until" { "Until" } input id="f-until" name="until" value=(p.get("until").unwrap_or("")) placeholder="RFC 3339";
            label for="f-rewarded" { "Rewarded" } (select("rewarded", &[("", "any"), ("true", "yes"), ("false", "no")]))
            label for="f-complete" { "Complete" } (select("complete", &[("", "any"), ("true", "yes"), ("false", "no")]))
            label for="f-review" { "Review" } (select("review", &[("", "any"), ("pending", "pending")]))
            label for="f-limit" { "Per page" } (select("limit", &[("", "50"), ("20", "20"), ("100", "100"), ("200", "200")]))
            button type="submit" { "Filter" }
            a href="/ui/sequences" { "Clear" }
        }
        @match &result {
            Err(m) => (notice("error", m)),
            Ok(page) => {
                @if page.items.is_empty() { p class="muted" { "No sequence on this page matches." } }
                @else { (sequence_rows(&page.items)) }
                nav class="pager" aria-label="Pages" {
                    @if p.get("cursor").is_some() { a href={ "/ui/sequences" (query(&base)) } { "← First page" } }
                    @if let Some(href) = &next_href { a rel="next" href=(href) { "Next page →" } }
                }
            }
        }
    };
    html_response(status, layout("Sequences", Section::Sequences, body))
}

// ---------------------------------------------------------------------------------------------
// One sequence
// ---------------------------------------------------------------------------------------------

fn triplet_rows(triplets: &[TripletView]) -> Markup {
    html! {
        div class="scroll" {
            table class="rows" {
                thead { tr {
                    th scope="col" class="num" { "#" } th scope="col" { "Triplet" } th scope="col" { "Role" } th scope="col" { "Function" }
                    th scope="col" class="num" { "Duration" } th scope="col" { "Success" } th scope="col" class="num" { "Reward" } th scope="col" { "Sources (share of the reward)" }
                } }
                tbody {
                    @for t in triplets {
                        @let state = small_json(&t.state);
                        @let action = small_json(&t.action);
                        @let function = field(&state, &["function", "tool_name", "llm_model"]);
                        @let duration = field(&action, &["duration_ms"]);
                        @let success = field(&action, &["success"]);
                        tr {
                            td class="num" { (t.sequence_index) }
                            td class="id" { a class="row-link" href=(triplet_href(&t.triplet_id)) { (short(&t.triplet_id)) } }
                            td { (t.role.as_deref().unwrap_or("—")) }
                            td { (value_text(function)) }
                            td class="num" { @if let Some(d) = duration.and_then(Value::as_f64) { (format!("{d:.0} ms")) } @else { "—" } }
                            td { @match success.and_then(Value::as_bool) { Some(true) => span class="ok" { "yes" }, Some(false) => span class="bad" { "no" }, None => "—" } }
                            td class="num" { (reward(t.effective.reward)) }
                            td class="shares-cell" { (charts::shares(&share_parts(t))) span class="muted small" { (sources_text(t)) } }
                        }
                    }
                }
            }
        }
    }
}

/// The form that appends a reward to the sequence (through the reward API's own checks).
fn reward_form(id: &str, values: &Params) -> Markup {
    let v = |k: &str| values.get(k).unwrap_or("").to_string();
    let strategy = values.get("strategy").unwrap_or("uniform");
    html! {
        form class="box" method="post" action={ (sequence_href(id)) "/rewards" } {
            (super::page::csrf_field())
            fieldset {
                legend { "Add a reward" }
                div class="row" {
                    label for="r-value" { "Value (0 to 1)" } input id="r-value" name="value" inputmode="decimal" value=(v("value")) placeholder="0.8";
                    label for="r-source" { "Source" } input id="r-source" name="source" value=(values.get("source").unwrap_or("judge")) pattern="[a-z0-9_.\\-]{1,64}";
                    label for="r-strategy" { "Strategy" }
                    select id="r-strategy" name="strategy" {
                        @for s in ["uniform", "discounted", "last", "role"] { option value=(s) selected[strategy == s] { (s) } }
                    }
                    label for="r-gamma" { "γ (discounted)" } input id="r-gamma" name="gamma" inputmode="decimal" value=(v("gamma")) placeholder="0.9";
                    label for="r-role" { "Role (role)" } input id="r-role" name="role" value=(v("role"));
                }
                div class="row" {
                    label for="r-reason" { "Reason" } input id="r-reason" class="wide" name="reason" value=(v("reason"));
                    button type="submit" { "Append to the ledger" }
                }
            }
        }
    }
}

/// Render a sequence's page.
pub fn sequence_page(st: &AppState, d: &SequenceDetail, cursor_given: bool, message: Option<(&str, &str)>, form: &Params) -> Markup {
    let s = &d.summary;
    let id = &s.sequence_id;
    let trace = d.triplets.first().map(|t| t.trace_id.clone());
    let hidden = d.ledger.len().saturating_sub(LEDGER_SHOWN);
    html! {
        @if let Some((kind, text)) = message { (notice(kind, text)) }
        dl class="facts" {
            div { dt { "Sequence" } dd id="seq-id" { (id) } }
            div { dt { "Triplets" } dd { (count(s.triplet_count.max(0) as u64)) } }
            div { dt { "First" } dd { (when(s.first_at)) } }
            div { dt { "Last" } dd { (when(s.last_at)) } }
            div { dt { "Complete" } dd { (if s.complete { "yes" } else { "no" }) } }
            div { dt { "Mean reward" } dd id="seq-mean" { (reward(s.reward_mean)) } }
            div { dt { "Roles" } dd { (s.roles.join(", ")) } }
            div { dt { "Rollout" } dd id="seq-rollout" {
                @if let Some(l) = &s.rollout {
                    "Agent Lightning rollout " code { (l.rollout_id) } ", attempt " code { (l.attempt_id) }
                    ", episode reward " span id="seq-episode" { (reward(s.episode.last)) } " (last; mean " (reward(s.episode.mean)) ", min " (reward(s.episode.min)) ")"
                } @else {
                    span class="muted" { "not linked to an Agent Lightning rollout" }
                }
            } }
        }
        p {
            @if let Some(t) = &trace { a href=(trace_href(t)) { "Trace of the first triplet on this page" } " · " }
            a href={ "/api/v1/sequences/" (pct(id)) } { "JSON" } " · "
            a href={ "/api/v1/export?format=jsonl&sequence_id=" (pct(id)) } { "Export (JSONL)" }
        }
        h2 { "Triplets" }
        (triplet_rows(&d.triplets))
        nav class="pager" aria-label="Pages" {
            @if cursor_given { a href=(sequence_href(id)) { "← First triplets" } }
            @if let Some(n) = d.next { a rel="next" href={ (sequence_href(id)) "?cursor=" (encode_cursor("q", n)) } { "Next triplets →" } }
        }
        h2 { "Ledger" }
        @if hidden > 0 { p class="muted" { "The newest " (LEDGER_SHOWN) " of " (count(d.ledger.len() as u64)) " events; all of them in the JSON." } }
        (ledger_table(&d.ledger[hidden..], &st.policy))
        (reward_form(id, form))
    }
}

/// `GET /ui/sequences/{id}`: a page of triplets, the ledger, the reward form.
pub async fn sequence(State(st): State<AppState>, id: Result<Path<String>, PathRejection>, RawQuery(raw): RawQuery) -> Response {
    let Ok(Path(id)) = id else { return error_page(&ApiError::BadRequest("the sequence id is not UTF-8".into())) };
    let p = Params::parse(raw.as_deref());
    let cursor = match cursor_param(&p, "q") {
        Ok(c) => c,
        Err(e) => return error_page(&e),
    };
    let name = id.clone();
    let d = match read(&st, move |tx, pol| tx.sequence(&name, cursor, TRIPLETS_PER_PAGE, pol)).await {
        Ok(Some(d)) => d,
        Ok(None) => return error_page(&ApiError::NotFound(format!("sequence {id:?} not found"))),
        Err(e) => return error_page(&e),
    };
    let added = p.get("added").map(|r| format!("Reward {r} appended; the rewards below include it."));
    let message = added.as_deref().map(|m| ("ok", m));
    let page = sequence_page(&st, &d, cursor.is_some(), message, &Params::default());
    html_response(StatusCode::OK, layout(&format!("Sequence {}", short(&id)), Section::Sequences, page))
}

// ---------------------------------------------------------------------------------------------
// One triplet
// ---------------------------------------------------------------------------------------------

fn explain_table(d: &TripletDetail) -> Markup {
    html! {
        @if d.explain.is_empty() {
            p class="muted" { "No reward reaches this triplet: its effective reward is null." }
        } @else {
            div class="scroll" {
                table {
                    thead { tr { th scope="col" { "Source" } th scope="col" { "Aggregation" } th scope="col" class="num" { "Weight" } th scope="col" class="num" { "Value used" } th scope="col" { "Events considered (✓ used)" } } }
                    tbody {
                        @for x in &d.explain {
                            tr {
                                td { span class="src" { (x.source) } }
                                td { (x.aggregation.name()) }
                                td class="num" { (x.weight) }
                                td class="num" { (reward(Some(x.value))) }
                                td {
                                    ul class="plain" {
                                        @for e in &x.events {
                                            li {
                                                (if e.used { "✓ " } else { "· " })
                                                (e.reward_id.as_deref().map_or_else(|| "the span's immediate reward".to_string(), short))
                                                ": " (format!("{:.3}", e.value)) " at " (when(Some(e.at)))
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            p class="muted" {
                "Effective reward = Σ weight × value / Σ weight over the sources = " strong { (reward(d.triplet.effective.reward)) } "."
            }
        }
    }
}

/// `GET /ui/triplets/{id}`.
pub async fn triplet(State(st): State<AppState>, id: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(id)) = id else { return error_page(&ApiError::BadRequest("the triplet id is not UTF-8".into())) };
    let name = id.clone();
    let d = match read(&st, move |tx, pol| tx.triplet(&name, pol)).await {
        Ok(Some(d)) => d,
        Ok(None) => return error_page(&ApiError::NotFound(format!("triplet {id:?} not found"))),
        Err(e) => return error_page(&e),
    };
    let t = &d.triplet;
    let body = html! {
        dl class="facts" {
            div { dt { "Triplet" } dd class="id" { (t.triplet_id) } }
            div { dt { "Sequence" } dd { a href=(sequence_href(&t.sequence_id)) { (t.sequence_id) } " #" (t.sequence_index) } }
            div { dt { "Role" } dd { (t.role.as_deref().unwrap_or("—")) } }
            div { dt { "Time" } dd { (when(Some(t.timestamp))) } }
            div { dt { "Reward" } dd id="triplet-reward" { (reward(t.effective.reward)) } }
            div { dt { "Span" } dd { a href={ (trace_href(&t.trace_id)) "?span=" (pct(&t.span_id)) } { "trace " (short(&t.trace_id)) } } }
        }
        div class="grid2" {
            section { h2 { "State" } (json::render(&t.state)) }
            section { h2 { "Action" } (json::render(&t.action)) }
        }
        h2 { "How the reward is formed" }
        (charts::shares(&share_parts(t)))
        (explain_table(&d))
        h2 { "Ledger events reaching it" }
        (ledger_table(&d.ledger, &st.policy))
        p { a href={ "/api/v1/triplets/" (pct(&t.triplet_id)) } { "JSON" } }
    };
    html_response(StatusCode::OK, layout(&format!("Triplet {}", short(&id)), Section::Sequences, body))
}

// ---------------------------------------------------------------------------------------------
// One trace
// ---------------------------------------------------------------------------------------------

fn kind_name(k: i32) -> &'static str {
    match k {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

fn span_detail(s: &SpanOut) -> Markup {
    html! {
        section id="detail" class="box" {
            h2 { "Span " (s.name) }
            dl class="facts" {
                div { dt { "Span id" } dd class="id" { (s.span_id) } }
                div { dt { "Kind" } dd { (kind_name(s.kind)) } }
                div { dt { "Duration" } dd { (format!("{:.3} ms", (s.end_ns - s.start_ns) as f64 / 1e6)) } }
                div { dt { "Status" } dd { (s.status_code) @if !s.status_message.is_empty() { ": " (s.status_message) } } }
                @if let Some(t) = &s.triplet_id { div { dt { "Triplet" } dd { a href=(triplet_href(t)) { (short(t)) } } } }
            }
            div class="grid2" {
                section { h3 { "Attributes" } (json::render(&s.attributes)) }
                section { h3 { "Resource" } (json::render(&s.resource)) h3 { "Events" } (json::render(&s.events)) }
            }
        }
    }
}

/// `GET /ui/traces/{id}`: the span tree as a waterfall, paged, triplets marked.
pub async fn trace(State(st): State<AppState>, id: Result<Path<String>, PathRejection>, RawQuery(raw): RawQuery) -> Response {
    let Ok(Path(id)) = id else { return error_page(&ApiError::BadRequest("the trace id is not UTF-8".into())) };
    let Some(trace_id) = rltrace_core::ids::from_hex::<16>(&id) else {
        return error_page(&ApiError::BadRequest(format!("trace id must be 32 hex digits, got {id:?}")));
    };
    let p = Params::parse(raw.as_deref());
    let offset = match p.get("offset").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return error_page(&ApiError::BadRequest("offset must be a whole number".into())),
    };
    let spans = match read(&st, move |tx, _| tx.trace(&trace_id)).await {
        Ok(Some(s)) => s,
        Ok(None) => return error_page(&ApiError::NotFound(format!("trace {id} not found"))),
        Err(e) => return error_page(&e),
    };
    let t0 = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let t1 = spans.iter().map(|s| s.end_ns).max().unwrap_or(t0);
    let selected = p.get("span").and_then(|sid| spans.iter().find(|s| s.span_id == sid));
    let shown: Vec<&SpanOut> = spans.iter().skip(offset).take(SPANS_PER_PAGE).collect();
    let triplets = spans.iter().filter(|s| s.triplet_id.is_some()).count();
    let here = rltrace_core::ids::to_hex(&trace_id);
    let body = html! {
        p class="muted" {
            (count(spans.len() as u64)) " spans, " (count(triplets as u64)) " of them triplets (◆), "
            (format!("{:.1} ms", (t1 - t0) as f64 / 1e6)) " from " (when(Some(t0 / 1000))) "."
        }
        div class="scroll" {
            table class="rows waterfall" {
                thead { tr { th scope="col" { "Span" } th scope="col" class="num" { "Duration" } th scope="col" class="timeline" { "Timeline" } } }
                tbody {
                    @for s in &shown {
                        tr.trip[s.triplet_id.is_some()] {
                            td class={ "name d" (s.depth.min(12)) } {
                                @if s.triplet_id.is_some() { span class="mark" title="triplet" { "◆ " } }
                                a class="row-link" href={ (trace_href(&here)) "?span=" (pct(&s.span_id)) @if offset > 0 { "&offset=" (offset) } "#detail" } { (s.name) }
                                @if s.status_code == 2 { " " span class="bad" { "error" } }
                            }
                            td class="num" { (format!("{:.1} ms", (s.end_ns - s.start_ns) as f64 / 1e6)) }
                            td class="timeline" { (charts::span_bar(t0, t1, s.start_ns, s.end_ns, s.triplet_id.is_some(), s.status_code == 2)) }
                        }
                    }
                }
            }
        }
        nav class="pager" aria-label="Pages" {
            @if offset > 0 { a href={ (trace_href(&here)) "?offset=" (offset.saturating_sub(SPANS_PER_PAGE)) } { "← Earlier spans" } }
            @if offset + SPANS_PER_PAGE < spans.len() { a rel="next" href={ (trace_href(&here)) "?offset=" (offset + SPANS_PER_PAGE) } { "More spans →" } }
        }
        @if let Some(s) = selected { (span_detail(s)) }
        p { a href={ "/api/v1/traces/" (here) } { "JSON" } }
    };
    html_response(StatusCode::OK, layout(&format!("Trace {}", short(&here)), Section::Sequences, body))
}
