//! The what-if page: a form holding the current policy (source weights and aggregations,
//! component weights, HITL values, defect penalties, the fallback), whose edits are sent as the
//! query string (so a what-if is a link a colleague can open), the two reward distributions side
//! by side with the sequences that change most (`crate::whatif`, the same computation as
//! `POST /api/v1/whatif`), and the edited policy as TOML to download for `--policy`. Nothing is
//! stored, so the form carries no CSRF token.

use std::collections::BTreeSet;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use rltrace_core::Policy;
use rltrace_core::policy::Aggregation;
use serde_json::{Map, Value, json};

use super::Params;
use super::page::{Section, count, html_response, layout, notice, pct, reward, sequence_href};
use crate::AppState;
use crate::dto::WhatIfResponse;
use crate::error::ApiError;
use crate::whatif::{WhatIfParams, run};

/// Sources always offered in the form.
const KNOWN_SOURCES: [&str; 8] = ["local", "terminal", "hitl", "tests", "defect", "judge", "fallback", "agentlightning"];
/// Components always offered in the form.
const KNOWN_COMPONENTS: [&str; 4] = ["success", "latency", "cost", "validation"];
/// Sequences evaluated by the page by default.
pub const PAGE_SEQUENCES: usize = 1000;
/// Most sources or components one form may name.
const MAX_NAMES: usize = 64;
const AGGREGATIONS: [Aggregation; 7] =
    [Aggregation::Latest, Aggregation::Earliest, Aggregation::Mean, Aggregation::Min, Aggregation::Max, Aggregation::Sum, Aggregation::Product];

/// A number when the text is one (so a bad value reaches the policy's own check with its path).
fn number(text: &str) -> Value {
    if let Ok(n) = text.trim().parse::<u64>() {
        return json!(n);
    }
    match text.trim().parse::<f64>() {
        Ok(f) if f.is_finite() => json!(f),
        _ => json!(text),
    }
}

/// Whether a weight's text is 1, the default.
fn is_one(text: &str) -> bool {
    text.trim().parse::<f64>().is_ok_and(|w| w == 1.0)
}

fn names(p: &Params, prefix: &str, known: &[&str], current: impl Iterator<Item = String>) -> Vec<String> {
    let mut all: BTreeSet<String> = known.iter().map(|s| s.to_string()).collect();
    all.extend(current);
    all.extend(p.keys().filter_map(|k| k.strip_prefix(prefix)).filter(|n| !n.starts_with("new")).map(str::to_string));
    all.into_iter().take(MAX_NAMES).collect()
}

/// The policy the form describes, as JSON of the TOML file's structure; `None` when the form
/// was not submitted (then the current policy stands).
fn form_policy(p: &Params) -> Option<Value> {
    p.get("edit")?;
    let mut out = Map::new();
    let mut sources = Map::new();
    let source_names: BTreeSet<&str> =
        p.keys().filter_map(|k| k.strip_prefix("w.").or_else(|| k.strip_prefix("a."))).filter(|n| !n.starts_with("new")).collect();
    for name in source_names.into_iter().take(MAX_NAMES) {
        let mut entry = Map::new();
        if let Some(w) = p.get(&format!("w.{name}")).filter(|w| !is_one(w)) {
            entry.insert("weight".into(), number(w));
        }
        if let Some(a) = p.get(&format!("a.{name}")) {
            entry.insert("aggregation".into(), json!(a));
        }
        if !entry.is_empty() {
            sources.insert(name.to_string(), Value::Object(entry));
        }
    }
    if let (Some(name), Some(w)) = (p.get("w.new"), p.get("w.new.weight")) {
        sources.insert(name.to_string(), json!({"weight": number(w)}));
    }
    if !sources.is_empty() {
        out.insert("sources".into(), Value::Object(sources));
    }
    let mut components = Map::new();
    for (k, v) in p.iter() {
        if let Some(name) = k.strip_prefix("c.")
            && !name.starts_with("new")
            && !is_one(v)
        {
            components.insert(name.to_string(), number(v));
        }
    }
    if let (Some(name), Some(w)) = (p.get("c.new"), p.get("c.new.weight")) {
        components.insert(name.to_string(), number(w));
    }
    if !components.is_empty() {
        out.insert("components".into(), Value::Object(components));
    }
    for (table, keys) in [("hitl", &["approved", "approved_with_changes", "rejected"][..]), ("defects", &["Low", "Medium", "High", "Critical"][..])] {
        let m: Map<String, Value> = keys.iter().filter_map(|k| p.get(&format!("{table}.{k}")).map(|v| (k.to_string(), number(v)))).collect();
        if !m.is_empty() {
            out.insert(table.into(), Value::Object(m));
        }
    }
    for k in ["default_reward", "reward_wait", "sequence_idle"] {
        if let Some(v) = p.get(k) {
            out.insert(k.into(), number(v));
        }
    }
    Some(Value::Object(out))
}

/// The proposed policy of the form (or the current one), with a 422 naming the bad field.
fn proposed(p: &Params, current: &Policy) -> Result<Policy, ApiError> {
    match form_policy(p) {
        None => Ok(current.clone()),
        Some(v) => crate::whatif::parse_policy(&v),
    }
}

fn params(p: &Params, policy: Policy) -> Result<WhatIfParams, ApiError> {
    let time = |k: &str| {
        p.get(k)
            .map(|v| rltrace_core::time::parse_rfc3339_micros(v).ok_or_else(|| ApiError::Validation(format!("{k}: must be an RFC 3339 time, got {v:?}"))))
            .transpose()
    };
    let complete = match p.get("complete") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(v) => return Err(ApiError::Validation(format!("complete: must be true or false, got {v:?}"))),
    };
    let sequences = match p.get("sequences") {
        None => PAGE_SEQUENCES,
        Some(v) => v.parse::<usize>().ok().filter(|n| (1..=crate::whatif::MAX_SEQUENCES).contains(n)).ok_or_else(|| {
            ApiError::Validation(format!("sequences: must be an integer in [1, {}], got {v:?}", crate::whatif::MAX_SEQUENCES))
        })?,
    };
    Ok(WhatIfParams {
        policy,
        sequence_id: p.get("sequence_id").map(str::to_string),
        role: p.get("role").map(str::to_string),
        since: time("since")?,
        until: time("until")?,
        complete,
        sequences,
        bins: crate::whatif::DEFAULT_BINS,
        top: crate::whatif::DEFAULT_TOP,
    })
}

fn num_input(id: &str, name: &str, value: String, label: &str) -> Markup {
    html! { label for=(id) { (label) } input id=(id) name=(name) inputmode="decimal" size="6" value=(value); }
}

/// The form; `current` is the policy its fields show where the query sends nothing (the
/// proposed policy once read, else the collector's).
fn form(p: &Params, current: &Policy) -> Markup {
    // A field shows what was sent, or the policy's value.
    let val = |key: &str, cur: String| p.get(key).map_or(cur, str::to_string);
    let sources = names(p, "w.", &KNOWN_SOURCES, current.sources.keys().cloned());
    let components = names(p, "c.", &KNOWN_COMPONENTS, current.components.keys().cloned());
    let h = &current.hitl;
    let d = &current.defects;
    let opt = |v: Option<u64>| v.map(|s| s.to_string()).unwrap_or_default();
    html! {
        form method="get" action="/ui/whatif" class="whatif" {
            input type="hidden" name="edit" value="1";
            fieldset {
                legend { "Sources: weight and aggregation" }
                table {
                    thead { tr { th scope="col" { "Source" } th scope="col" { "Weight" } th scope="col" { "Aggregation" } } }
                    tbody {
                        @for s in &sources {
                            @let agg = p.get(&format!("a.{s}")).map(str::to_string).unwrap_or_else(|| current.sources.get(s).and_then(|x| x.aggregation).map(|a| a.name().to_string()).unwrap_or_default());
                            tr {
                                th scope="row" { label for={ "w-" (s) } { (s) } }
                                td { input id={ "w-" (s) } name={ "w." (s) } inputmode="decimal" size="6" value=(val(&format!("w.{s}"), current.source_weight(s).to_string())); }
                                td {
                                    select name={ "a." (s) } aria-label={ "Aggregation of " (s) } {
                                        option value="" selected[agg.is_empty()] { "default (" (Aggregation::default_for(s).name()) ")" }
                                        @for a in AGGREGATIONS { option value=(a.name()) selected[agg == a.name()] { (a.name()) } }
                                    }
                                }
                            }
                        }
                        tr {
                            td { input name="w.new" aria-label="Another source" placeholder="another source" size="12" value=(p.get("w.new").unwrap_or("")); }
                            td { input name="w.new.weight" aria-label="Its weight" inputmode="decimal" size="6" value=(p.get("w.new.weight").unwrap_or("")); }
                            td {}
                        }
                    }
                }
            }
            fieldset {
                legend { "Immediate reward components: weights" }
                div class="row" {
                    @for c in &components { (num_input(&format!("c-{c}"), &format!("c.{c}"), val(&format!("c.{c}"), current.component_weight(c).to_string()), c)) }
                }
            }
            fieldset {
                legend { "HITL decision values" }
                div class="row" {
                    (num_input("h-approved", "hitl.approved", val("hitl.approved", h.approved.to_string()), "approved"))
                    (num_input("h-awc", "hitl.approved_with_changes", val("hitl.approved_with_changes", h.approved_with_changes.to_string()), "approved with changes"))
                    (num_input("h-rejected", "hitl.rejected", val("hitl.rejected", h.rejected.to_string()), "rejected"))
                }
            }
            fieldset {
                legend { "Defect penalties by severity" }
                div class="row" {
                    (num_input("d-low", "defects.Low", val("defects.Low", d.low.to_string()), "Low"))
                    (num_input("d-medium", "defects.Medium", val("defects.Medium", d.medium.to_string()), "Medium"))
                    (num_input("d-high", "defects.High", val("defects.High", d.high.to_string()), "High"))
                    (num_input("d-critical", "defects.Critical", val("defects.Critical", d.critical.to_string()), "Critical"))
                }
            }
            fieldset {
                legend { "Fallback and completeness" }
                div class="row" {
                    (num_input("p-default", "default_reward", val("default_reward", current.default_reward.map(|v| v.to_string()).unwrap_or_default()), "fallback reward"))
                    (num_input("p-wait", "reward_wait", val("reward_wait", opt(current.reward_wait)), "after (s or 24h)"))
                    (num_input("p-idle", "sequence_idle", val("sequence_idle", opt(current.sequence_idle)), "complete when idle (s or 1h)"))
                }
            }
            fieldset {
                legend { "Triplets to try it on" }
                div class="row" {
                    label for="q-role" { "Role" } input id="q-role" name="role" size="10" value=(p.get("role").unwrap_or(""));
                    label for="q-seq" { "Sequence" } input id="q-seq" name="sequence_id" size="14" value=(p.get("sequence_id").unwrap_or(""));
                    label for="q-since" { "Since" } input id="q-since" name="since" size="20" value=(p.get("since").unwrap_or("")) placeholder="RFC 3339";
                    label for="q-until" { "Until" } input id="q-until" name="until" size="20" value=(p.get("until").unwrap_or("")) placeholder="RFC 3339";
                    label for="q-n" { "Newest sequences" } input id="q-n" name="sequences" size="6" inputmode="numeric" value=(p.get("sequences").unwrap_or("")) placeholder=(PAGE_SEQUENCES);
                }
            }
            button type="submit" id="whatif-run" { "Compare" }
            " " a href="/ui/whatif" { "Reset to the current policy" }
        }
    }
}

fn results(w: &WhatIfResponse, download: &str) -> Markup {
    let max = w.current.bins.iter().chain(&w.proposed.bins).copied().max().unwrap_or(0);
    let share = |d: &crate::dto::RewardDistribution| {
        let n = d.rewarded + d.unrewarded;
        if n == 0 { "—".to_string() } else { format!("{:.1} %", 100.0 * d.rewarded as f64 / n as f64) }
    };
    html! {
        section id="results" {
            h2 { "Current and proposed, side by side" }
            p class="muted" id="whatif-summary" {
                (count(w.evaluated_triplets)) " triplets of the " (count(w.evaluated_sequences)) " newest matching sequences (at most " (count(w.max_sequences)) ")"
                @if w.bounded { ", older ones left out" }
                @if w.skipped_long_sequences > 0 { ", " (w.skipped_long_sequences) " very long sequences passed over" }
                "; " strong id="changed-triplets" { (count(w.changed_triplets)) } " triplets change."
            }
            div class="pair" {
                section {
                    h3 { "Current policy" }
                    (super::charts::histogram("Effective rewards, current policy", &w.current.bins, max, "cur"))
                    p { "Mean " strong id="mean-current" { (reward(w.current.mean)) } ", rewarded " (share(&w.current)) }
                }
                section {
                    h3 { "Proposed policy" }
                    (super::charts::histogram("Effective rewards, proposed policy", &w.proposed.bins, max, "new"))
                    p { "Mean " strong id="mean-proposed" { (reward(w.proposed.mean)) } ", rewarded " (share(&w.proposed)) }
                }
            }
            h3 { "Sequences that change most" }
            @if w.most_changed.is_empty() {
                p class="muted" id="no-change" { "No sequence changes." }
            } @else {
                div class="scroll" {
                    table id="most-changed" class="rows" {
                        thead { tr { th scope="col" { "Sequence" } th scope="col" class="num" { "Triplets" } th scope="col" class="num" { "Changed" } th scope="col" class="num" { "Mean now" } th scope="col" class="num" { "Mean proposed" } th scope="col" class="num" { "Mean |change|" } } }
                        tbody {
                            @for c in &w.most_changed {
                                tr {
                                    td { a class="row-link" href=(sequence_href(&c.sequence_id)) { (c.sequence_id) } }
                                    td class="num" { (c.triplets) }
                                    td class="num" { (c.changed_triplets) }
                                    td class="num" { (reward(c.current_mean)) }
                                    td class="num" { (reward(c.proposed_mean)) }
                                    td class="num" { (format!("{:.3}", c.change)) }
                                }
                            }
                        }
                    }
                }
            }
            h3 { "The proposed policy" }
            p { a id="download" href=(download) download="rewards.toml" { "Download rewards.toml" } " for " code { "rltrace serve --policy rewards.toml" } " (" code { (w.policy_hash) } ")." }
            pre id="policy-toml" class="raw" { (w.policy_toml) }
        }
    }
}

fn canonical_query(p: &Params) -> String {
    p.iter().map(|(k, v)| format!("{}={}", pct(k), pct(v))).collect::<Vec<_>>().join("&")
}

/// `GET /ui/whatif`.
pub async fn page(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let p = Params::parse(raw.as_deref());
    let policy = proposed(&p, &st.policy);
    let shown_policy = policy.as_ref().map_or_else(|_| (*st.policy).clone(), Clone::clone);
    let outcome = match policy.and_then(|policy| params(&p, policy)) {
        Ok(params) => run(&st, params).await,
        Err(e) => Err(e),
    };
    let download = format!("/ui/whatif/policy.toml?{}", canonical_query(&p));
    let (status, shown) = match &outcome {
        Ok(w) => (StatusCode::OK, results(w, &download)),
        Err(e) => {
            let (status, _) = e.status_and_code();
            (status, html! { (notice("error", &format!("The policy cannot be used: {e}"))) })
        }
    };
    let body = html! {
        p class="muted" {
            "Edit the reward policy and compare the effective rewards it gives with the current policy's, on the newest sequences. Nothing is stored; the same is "
            code { "POST /api/v1/whatif" } "."
        }
        div class="whatif-layout" {
            (form(&p, &shown_policy))
            div { (shown) }
        }
    };
    html_response(status, layout("Reward what-if", Section::WhatIf, body))
}

/// `GET /ui/whatif/policy.toml`: the form's policy as a `--policy` file.
pub async fn download(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let p = Params::parse(raw.as_deref());
    let text = proposed(&p, &st.policy).and_then(|policy| policy.to_toml().map_err(|e| ApiError::Internal(e.to_string())));
    match text {
        Ok(t) => {
            let mut resp = t.into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/toml; charset=utf-8"));
            h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"rewards.toml\""));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) => {
            let (status, _) = e.status_and_code();
            (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{e}\n")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Params {
        Params::parse(Some(q))
    }

    #[test]
    fn the_form_becomes_a_policy() {
        let cur = Policy::default();
        assert_eq!(proposed(&params(""), &cur).expect("current"), cur);
        let p = proposed(&params("edit=1&w.hitl=3&a.hitl=mean&w.tests=1&c.success=0.4&hitl.approved_with_changes=0.6&defects.High=0.4&reward_wait=24h&default_reward=0.3"), &cur).expect("valid");
        assert_eq!(p.source_weight("hitl"), 3.0);
        assert_eq!(p.aggregation("hitl"), Aggregation::Mean);
        assert!(!p.sources.contains_key("tests"), "a weight of 1 is the default");
        assert_eq!(p.component_weight("success"), 0.4);
        assert_eq!(p.hitl.approved_with_changes, 0.6);
        assert_eq!(p.defects.high, 0.4);
        assert_eq!(p.reward_wait, Some(86_400));
        assert_eq!(p.default_reward, Some(0.3));
        let p = proposed(&params("edit=1&w.new=review_bot&w.new.weight=2"), &cur).expect("valid");
        assert_eq!(p.source_weight("review_bot"), 2.0);
        match proposed(&params("edit=1&w.hitl=heavy"), &cur) {
            Err(ApiError::Validation(m)) => assert!(m.starts_with("policy.sources.hitl.weight"), "{m}"),
            other => panic!("{other:?}"),
        }
        match proposed(&params("edit=1&hitl.approved=2"), &cur) {
            Err(ApiError::Validation(m)) => assert!(m.starts_with("policy.hitl.approved"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
