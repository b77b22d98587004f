//! The human review queue: complete sequences with no human (`hitl`) decision yet, oldest first
//! (the API's `review=pending` filter), each with a decision form. A decision goes through the
//! HITL callback's own code path (`callbacks::parse_hitl`, then the ledger append of every reward),
//! so the ledger and the effective rewards change at once and the sequence leaves the queue. A
//! refused decision (no justification, an unknown decision) is shown on the page and changes
//! nothing.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use rltrace_store::{Page, SequenceFilter, SequenceSummary};
use serde_json::json;

use super::page::{Section, count, csrf_field, error_page, html_response, layout, notice, query, reward, see_other, sequence_href, when};
use super::{Params, form_body, read};
use crate::AppState;
use crate::api::{decode_cursor, encode_cursor};
use crate::error::ApiError;

/// Sequences per page of the queue.
pub const PER_PAGE: usize = 20;

/// The decisions, their button labels and values.
const DECISIONS: [(&str, &str); 4] =
    [("approved", "Approve"), ("approved_with_changes", "Approve with changes"), ("rejected", "Reject"), ("deferred", "Defer")];

fn row(s: &SequenceSummary, reviewer: &str, cursor: Option<&str>, failed: Option<(&str, &str)>) -> Markup {
    let id = &s.sequence_id;
    let justification = failed.filter(|(sid, _)| *sid == id).map(|(_, j)| j).unwrap_or("");
    html! {
        li class="review" data-sequence=(id) {
            div class="review-head" {
                a href=(sequence_href(id)) { strong { (id) } }
                span class="muted" {
                    " · " (count(s.triplet_count.max(0) as u64)) " triplets · " (s.roles.join(", ")) " · last " (when(s.last_at)) " · mean reward " (reward(s.reward_mean))
                }
            }
            form method="post" action="/ui/review" class="decide" {
                (csrf_field())
                input type="hidden" name="sequence_id" value=(id);
                @if let Some(c) = cursor { input type="hidden" name="cursor" value=(c); }
                label { "Reviewer " input name="reviewer" value=(reviewer) autocomplete="name"; }
                label class="grow" { "Justification (required) " textarea name="justification" rows="2" { (justification) } }
                div class="buttons" {
                    @for (value, label) in DECISIONS {
                        button type="submit" name="decision" value=(value) class=(value) { (label) }
                    }
                }
            }
        }
    }
}

async fn page_of(st: &AppState, cursor: Option<i64>) -> Result<Page<SequenceSummary>, ApiError> {
    let f = SequenceFilter { review_pending: true, ..SequenceFilter::default() };
    read(st, move |tx, pol| tx.sequences(&f, cursor, PER_PAGE, pol)).await
}

fn render(page: &Page<SequenceSummary>, p: &Params, message: Option<(&str, String)>, failed: Option<(&str, &str)>) -> Markup {
    let reviewer = p.get("reviewer").unwrap_or("");
    let cursor = p.get("cursor");
    html! {
        p class="muted" {
            "Complete sequences with no human decision yet, oldest first. A decision is appended to the ledger as source "
            code { "hitl" } " (approved 1.0, approved with changes 0.7, rejected 0.0 under the default policy; deferred records the decision without a reward) and the sequence leaves the queue."
        }
        @if let Some((kind, text)) = &message { (notice(kind, text)) }
        @if page.items.is_empty() {
            p id="queue-empty" { "Nothing waits for a review." }
        } @else {
            ol class="queue" { @for s in &page.items { (row(s, reviewer, cursor, failed)) } }
        }
        nav class="pager" aria-label="Pages" {
            @if cursor.is_some() { a href={ "/ui/review" (query(&[("reviewer", Some(reviewer))])) } { "← Oldest" } }
            @if let Some(n) = page.next {
                a rel="next" href={ "/ui/review" (query(&[("reviewer", Some(reviewer)), ("cursor", Some(&encode_cursor("s", n)))])) } { "Next page →" }
            }
        }
    }
}

fn cursor_of(p: &Params) -> Result<Option<i64>, ApiError> {
    p.get("cursor").map(|c| decode_cursor("s", c).ok_or_else(|| ApiError::BadRequest(format!("invalid cursor {c:?}")))).transpose()
}

/// `GET /ui/review`.
pub async fn queue(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let p = Params::parse(raw.as_deref());
    let cursor = match cursor_of(&p) {
        Ok(c) => c,
        Err(e) => return error_page(&e),
    };
    let page = match page_of(&st, cursor).await {
        Ok(page) => page,
        Err(e) => return error_page(&e),
    };
    let message = match (p.get("done"), p.get("decision")) {
        (Some(seq), Some(d)) => Some(("ok", format!("Recorded {d} for {seq}; it has left the queue."))),
        _ => None,
    };
    html_response(StatusCode::OK, layout("Review queue", Section::Review, render(&page, &p, message, None)))
}

/// `POST /ui/review`: one decision, through the HITL callback; 303 back to the queue, or the
/// queue again with the reason when the decision is refused (nothing is appended then).
pub async fn decide(State(st): State<AppState>, body: Body) -> Response {
    let form = match form_body(body).await {
        Ok(f) => f,
        Err(e) => return error_page(&e),
    };
    if !super::page::csrf_ok(form.get("csrf")) {
        return super::forbidden();
    }
    let cursor = match cursor_of(&form) {
        Ok(c) => c,
        Err(e) => return error_page(&e),
    };
    let sequence_id = form.get("sequence_id").unwrap_or("").to_string();
    let body = json!({
        "sequence_id": sequence_id,
        "decision": form.get("decision").unwrap_or(""),
        "reviewer": form.get("reviewer").unwrap_or(""),
        "justification": form.get("justification").unwrap_or(""),
    });
    let appended = match crate::callbacks::parse_hitl(&body, None, &st.policy) {
        Ok(req) => crate::api::append(&st, req).await,
        Err(e) => Err(e),
    };
    match appended {
        Ok(resp) if resp.status().is_success() => {
            let reviewer = form.get("reviewer");
            let c = cursor.map(|c| encode_cursor("s", c));
            see_other(&format!(
                "/ui/review{}",
                query(&[("reviewer", reviewer), ("cursor", c.as_deref()), ("done", Some(&sequence_id)), ("decision", form.get("decision"))])
            ))
        }
        Ok(resp) => resp.into_response(),
        Err(e) => {
            let (status, _) = e.status_and_code();
            let page = match page_of(&st, cursor).await {
                Ok(page) => page,
                Err(e) => return error_page(&e),
            };
            let message = Some(("error", format!("Not recorded for {sequence_id}: {e}")));
            let failed = form.get("justification").map(|j| (sequence_id.as_str(), j));
            html_response(status, layout("Review queue", Section::Review, render(&page, &form, message, failed)))
        }
    }
}
