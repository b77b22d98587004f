//! The web UI (DESIGN section 11) at `/ui/`: server-rendered pages (maud templates, which escape
//! every value), a small stylesheet and script embedded in the binary, charts as inline SVG.
//! Pages read the store with the same bounded, paged queries as the REST API; forms that change
//! state (a reward, a review decision) go through the API's own validation and ledger append and
//! carry a CSRF token. Filters, cursors and what-if edits live in the query string, so every view
//! is a link.
//!
//! - [`page`]: the shell, assets, headers, CSRF, formatting;
//! - [`views`]: overview, sequences, a sequence, a triplet, a trace;
//! - [`review`]: the review queue; [`whatif_page`]: the what-if; [`signin`]: signing in with a key;
//! - [`charts`]: SVG charts; [`json`]: foldable JSON.

pub mod charts;
pub mod json;
pub mod page;
pub mod review;
pub mod signin;
pub mod views;
pub mod whatif_page;

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use http_body_util::BodyExt;
use maud::html;
use rltrace_core::Policy;
use rltrace_store::{ReadTx, StoreError};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::error::ApiError;
use page::{Section, error_page, html_response, layout, notice, see_other, sequence_href};

/// Most parameters read from one query string or form.
pub const MAX_PARAMS: usize = 256;
/// Largest form body.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// The parameters of a query string or form: the first value of each name, empty values left
/// out, at most [`MAX_PARAMS`].
#[derive(Debug, Clone, Default)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Parse `a=1&b=x` (percent- and `+`-decoded).
    pub fn parse(raw: Option<&str>) -> Params {
        let mut m = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()).take(MAX_PARAMS) {
            let v = v.trim();
            if !v.is_empty() && !m.contains_key(k.as_ref()) {
                m.insert(k.into_owned(), v.to_string());
            }
        }
        Params(m)
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Every name.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Every pair.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Read the store on a blocking thread under the collector's policy.
pub(crate) async fn read<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&ReadTx<'_>, &Policy) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let st = st.clone();
    tokio::task::spawn_blocking(move || st.store.read(|tx| f(tx, &st.policy)).map_err(ApiError::from))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
}

/// A form body (`application/x-www-form-urlencoded`), bounded.
pub(crate) async fn form_body(body: Body) -> Result<Params, ApiError> {
    let bytes = http_body_util::Limited::new(body, MAX_FORM_BYTES)
        .collect()
        .await
        .map_err(|_| ApiError::TooLarge(format!("the form is over {MAX_FORM_BYTES} bytes")))?
        .to_bytes();
    let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::BadRequest("the form is not UTF-8".into()))?;
    Ok(Params::parse(Some(text)))
}

/// The answer to a form without this process's CSRF token.
pub(crate) fn forbidden() -> Response {
    html_response(
        StatusCode::FORBIDDEN,
        layout(
            "Forbidden",
            Section::Overview,
            html! { (notice("error", "This form's security token is missing or out of date (the collector restarted?): reload the page and send it again. Nothing was changed.")) },
        ),
    )
}

/// `GET /ui`: to `/ui/`.
pub async fn index_redirect() -> Response {
    see_other("/ui/")
}

/// Any other `GET /ui/...`: a page saying so (404).
pub async fn not_found() -> Response {
    error_page(&ApiError::NotFound("no such page".into()))
}

/// `GET /ui/assets/{name}`: an embedded asset.
pub async fn asset(name: Result<Path<String>, PathRejection>) -> Response {
    let found = name.ok().and_then(|Path(n)| page::asset(&n));
    found.unwrap_or_else(|| error_page(&ApiError::NotFound("no such asset".into())))
}

/// The reward request of the sequence page's form, as the REST API takes it.
fn reward_request(id: &str, form: &Params) -> Value {
    let mut target = Map::new();
    target.insert("sequence_id".into(), json!(id));
    let strategy = form.get("strategy").unwrap_or("uniform");
    target.insert("strategy".into(), json!(strategy));
    if strategy == "discounted" {
        // A value that is not a number is passed on as text, so the API's check names it.
        target.insert("gamma".into(), form.get("gamma").map_or(Value::Null, |g| g.parse::<f64>().map_or_else(|_| json!(g), |g| json!(g))));
    }
    if strategy == "role"
        && let Some(r) = form.get("role")
    {
        target.insert("role".into(), json!(r));
    }
    let mut body = Map::new();
    body.insert("target".into(), Value::Object(target));
    body.insert("value".into(), form.get("value").map_or(Value::Null, |v| v.parse::<f64>().map_or_else(|_| json!(v), |v| json!(v))));
    body.insert("source".into(), json!(form.get("source").unwrap_or("")));
    if let Some(r) = form.get("reason") {
        body.insert("reason".into(), json!(r));
    }
    Value::Object(body)
}

/// `POST /ui/sequences/{id}/rewards`: append a reward through the reward API's checks; 303 back
/// to the sequence, or its page again with the reason (nothing appended).
pub async fn add_reward(State(st): State<AppState>, id: Result<Path<String>, PathRejection>, body: Body) -> Response {
    let Ok(Path(id)) = id else { return error_page(&ApiError::BadRequest("the sequence id is not UTF-8".into())) };
    let form = match form_body(body).await {
        Ok(f) => f,
        Err(e) => return error_page(&e),
    };
    if !page::csrf_ok(form.get("csrf")) {
        return forbidden();
    }
    let request = reward_request(&id, &form);
    let result = match crate::api::parse_reward(&request, None) {
        Ok(req) => crate::api::append(&st, req).await,
        Err(e) => Err(e),
    };
    let failure = match result {
        Ok(resp) if resp.status().is_success() => {
            let reward_id = match resp.into_body().collect().await {
                Ok(b) => serde_json::from_slice::<Value>(&b.to_bytes()).ok().and_then(|v| v["reward_id"].as_str().map(str::to_string)),
                Err(_) => None,
            };
            return see_other(&format!("{}?added={}", sequence_href(&id), page::pct(reward_id.as_deref().unwrap_or("new"))));
        }
        Ok(resp) => return resp,
        Err(e) => e,
    };
    let name = id.clone();
    let detail = match read(&st, move |tx, pol| tx.sequence(&name, None, views::TRIPLETS_PER_PAGE, pol)).await {
        Ok(Some(d)) => d,
        Ok(None) => return error_page(&ApiError::NotFound(format!("sequence {id:?} not found"))),
        Err(e) => return error_page(&e),
    };
    let (status, _) = failure.status_and_code();
    let text = format!("The reward was not appended: {failure}");
    let body = views::sequence_page(&st, &detail, false, Some(("error", &text)), &form);
    html_response(status, layout(&format!("Sequence {}", page::short(&id)), Section::Sequences, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_bounded_and_keep_the_first_value() {
        let p = Params::parse(Some("a=1&a=2&b=&c=x+y&d=%3Cb%3E"));
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), None);
        assert_eq!(p.get("c"), Some("x y"));
        assert_eq!(p.get("d"), Some("<b>"));
        let many: String = (0..1000).map(|i| format!("k{i}=v&")).collect();
        assert_eq!(Params::parse(Some(&many)).keys().count(), MAX_PARAMS);
    }

    #[test]
    fn the_reward_form_is_an_api_request() {
        let p = Params::parse(Some("value=0.8&source=judge&strategy=discounted&gamma=0.9&reason=good"));
        let r = reward_request("s1", &p);
        assert_eq!(r, json!({"target": {"sequence_id": "s1", "strategy": "discounted", "gamma": 0.9}, "value": 0.8, "source": "judge", "reason": "good"}));
        assert!(crate::api::parse_reward(&r, None).is_ok());
        let bad = reward_request("s1", &Params::parse(Some("value=lots&source=judge")));
        assert!(crate::api::parse_reward(&bad, None).is_err());
    }
}
