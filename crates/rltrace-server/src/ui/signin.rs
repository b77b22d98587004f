//! Signing in to the web UI with a key (`/ui/signin`), and out (`/ui/signout`).
//!
//! A key with the `read` scope starts a session ([`crate::auth`]): its token goes into an
//! HttpOnly, SameSite=Strict cookie scoped to the collector (`Secure` when the request came
//! through an HTTPS proxy, `X-Forwarded-Proto: https`). Pages of a signed-in session carry that
//! session's CSRF token. Without keys configured the UI is open and this page says so.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use maud::{Markup, html};

use super::page::{Section, csrf_field, html_response, layout, notice, pct, see_other};
use crate::AppState;
use crate::auth::{SESSION_COOKIE, Scope, session_cookie};

/// Where to go after signing in: a UI path of this collector, else the overview.
fn next_of(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("//") && !n.contains('\\') && !n.starts_with("/ui/signin") => n.to_string(),
        _ => "/ui/".into(),
    }
}

fn form(next: &str) -> Markup {
    html! {
        form class="box signin" method="post" action="/ui/signin" {
            (csrf_field())
            input type="hidden" name="next" value=(next);
            fieldset {
                legend { "Sign in with an API key" }
                div class="row" {
                    label for="key" { "Key" }
                    input id="key" name="key" type="password" autocomplete="off" required;
                    button type="submit" id="signin" { "Sign in" }
                }
                p class="muted small" { "A key with the read scope opens the pages; the write scope also lets you add rewards and review." }
            }
        }
    }
}

fn signin_page(status: StatusCode, next: &str, message: Option<&str>) -> Response {
    html_response(
        status,
        layout(
            "Sign in",
            Section::Overview,
            html! {
                @if let Some(m) = message { (notice("error", m)) }
                (form(next))
            },
        ),
    )
}

/// Whether a form came from this collector's own pages: its `Origin` (when the browser sends
/// one) names the `Host` it was sent to, and `Sec-Fetch-Site` (when sent) is not cross-site.
fn same_origin(headers: &HeaderMap) -> bool {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    if get("sec-fetch-site").is_some_and(|v| v.eq_ignore_ascii_case("cross-site")) {
        return false;
    }
    match (get("origin"), get("host")) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin.split_once("://").is_some_and(|(_, h)| h.trim_end_matches('/').eq_ignore_ascii_case(host)),
        (Some(_), None) => false,
    }
}

/// `GET /ui/signin?next=...`.
pub async fn page(State(st): State<AppState>, req: Request) -> Response {
    let params = super::Params::parse(req.uri().query());
    if !st.auth.enabled() {
        return html_response(
            StatusCode::OK,
            layout("Sign in", Section::Overview, html! { (notice("ok", "This collector has no keys configured: its pages are open.")) p { a href="/ui/" { "To the overview" } } }),
        );
    }
    signin_page(StatusCode::OK, &next_of(params.get("next")), None)
}

/// `POST /ui/signin`: a form with `key` and `next`; 303 to `next` with the session cookie, or
/// the form again with the reason (401 for a key that is not valid, 403 without `read`).
pub async fn sign_in(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let form = match super::form_body(body).await {
        Ok(f) => f,
        Err(e) => return super::page::error_page(&e),
    };
    // The form's token is public (the sign-in page needs no session): a form posted from another
    // site is refused by its Origin, so nobody can sign a browser in with their own key.
    if !super::page::csrf_ok(form.get("csrf")) || !same_origin(&headers) {
        return super::forbidden();
    }
    let next = next_of(form.get("next"));
    if !st.auth.enabled() {
        return see_other(&next);
    }
    let Some(principal) = form.get("key").map(str::trim).filter(|k| !k.is_empty()).and_then(|k| st.auth.check_key(k)) else {
        st.metrics.auth_refused(401);
        return signin_page(StatusCode::UNAUTHORIZED, &next, Some("That key is not valid."));
    };
    if !principal.may(Scope::Read) {
        st.metrics.auth_refused(403);
        return signin_page(StatusCode::FORBIDDEN, &next, Some("That key lacks the read scope, which the pages need."));
    }
    tracing::info!(key = %principal.name, "signed in to the web UI");
    let token = st.auth.start_session(principal);
    let secure = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        st.auth.session_seconds(),
        if secure { "; Secure" } else { "" }
    );
    let mut resp = see_other(&next);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /ui/signout`: end the session (its CSRF token required) and clear the cookie.
pub async fn sign_out(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let form = match super::form_body(body).await {
        Ok(f) => f,
        Err(e) => return super::page::error_page(&e),
    };
    if let Some(token) = session_cookie(&headers) {
        // The form's token must be this session's: another site cannot sign a user out.
        let ok = st.auth.session(token).is_some_and(|(_, csrf)| {
            let sent = form.get("csrf").unwrap_or("");
            sent.len() == csrf.len() && sent.bytes().zip(csrf.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        });
        if !ok {
            return super::forbidden();
        }
        st.auth.end_session(token);
    }
    let mut resp = see_other("/ui/signin");
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_static("rltrace_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"));
    resp
}

/// A UI request refused for its key or session: a GET without one goes to the sign-in page
/// (303, coming back after); anything else gets a page with the reason.
pub fn refused(req: &Request, status: StatusCode, why: &str) -> Response {
    if status == StatusCode::UNAUTHORIZED && req.method() == Method::GET {
        let back = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/ui/");
        return see_other(&format!("/ui/signin?next={}", pct(&next_of(Some(back)))));
    }
    let body = html! {
        (notice("error", why))
        p { a href="/ui/signin" { "Sign in with another key" } }
    };
    html_response(status, layout(if status == StatusCode::FORBIDDEN { "Forbidden" } else { "Sign in" }, Section::Overview, body))
}

#[cfg(test)]
mod tests {
    use super::next_of;

    #[test]
    fn a_form_from_another_site_is_not_signed_in() {
        use axum::http::{HeaderMap, HeaderValue};
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(super::same_origin(&h(&[("host", "127.0.0.1:4318"), ("origin", "http://127.0.0.1:4318")])));
        assert!(super::same_origin(&h(&[("host", "127.0.0.1:4318")])), "no Origin: a same-origin GET-less client");
        assert!(!super::same_origin(&h(&[("host", "127.0.0.1:4318"), ("origin", "https://evil.example")])));
        assert!(!super::same_origin(&h(&[("host", "127.0.0.1:4318"), ("sec-fetch-site", "cross-site")])));
        assert!(!super::same_origin(&h(&[("origin", "http://127.0.0.1:4318")])));
    }

    #[test]
    fn only_this_collectors_ui_paths_are_followed_after_sign_in() {
        assert_eq!(next_of(Some("/ui/sequences?role=Code")), "/ui/sequences?role=Code");
        assert_eq!(next_of(Some("//evil.example/ui/")), "/ui/");
        assert_eq!(next_of(Some("https://evil.example/ui/")), "/ui/");
        assert_eq!(next_of(Some("/api/v1/stats")), "/ui/");
        assert_eq!(next_of(Some("/ui/\\evil")), "/ui/");
        assert_eq!(next_of(Some("/ui/signin?next=/ui/")), "/ui/");
        assert_eq!(next_of(None), "/ui/");
    }
}
