//! The page shell shared by every view (navigation, theme switch, skip link), the embedded
//! assets, the response headers of pages and assets, the CSRF token of forms that change state,
//! and small formatting helpers. Every value is written through maud, which escapes it.

use std::sync::OnceLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use rltrace_core::time::{Micros, format_micros};

/// The stylesheet.
pub const CSS: &str = include_str!("../../assets/ui.css");
/// The script: theme switch and keyboard shortcuts; every page works without it.
pub const JS: &str = include_str!("../../assets/ui.js");
/// The icon.
pub const FAVICON: &str = include_str!("../../assets/favicon.svg");

/// Content security policy of every page: nothing but this collector's own assets, no inline
/// script or style, forms post only here, never framed.
pub const CSP: &str =
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The sections of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Counts and charts.
    Overview,
    /// The sequence list, a sequence, a triplet, a trace.
    Sequences,
    /// The review queue.
    Review,
    /// The what-if.
    WhatIf,
}

/// A short content hash of an asset, for cache-busting URLs.
fn digest(text: &str) -> String {
    // FNV-1a, 64 bits: enough to tell versions of three files apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The versioned URL of an asset (`/ui/assets/ui.css?v=...`).
pub fn asset_url(name: &str) -> String {
    static V: OnceLock<String> = OnceLock::new();
    let v = V.get_or_init(|| digest(&format!("{CSS}{JS}{FAVICON}")));
    format!("/ui/assets/{name}?v={v}")
}

/// The CSRF token carried by every form that changes state and checked on POST: the signed-in
/// session's own ([`crate::auth`]), or without keys a per-process token.
pub fn csrf_token() -> String {
    static T: OnceLock<String> = OnceLock::new();
    crate::auth::SESSION_CSRF.try_with(String::clone).unwrap_or_else(|_| T.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()).clone())
}

/// Whether a form's token is the expected one, compared in constant time.
pub fn csrf_ok(sent: Option<&str>) -> bool {
    let Some(sent) = sent else { return false };
    let want = csrf_token();
    let want = want.as_bytes();
    sent.len() == want.len() && sent.bytes().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Whether this page is served to a signed-in session.
pub fn signed_in() -> bool {
    crate::auth::SESSION_CSRF.try_with(|_| ()).is_ok()
}

/// The hidden CSRF field of a form.
pub fn csrf_field() -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf_token()); }
}

/// Everything but the unreserved characters of RFC 3986.
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encode a path segment or query value (everything but unreserved characters).
pub fn pct(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

/// A query string from pairs, leaving out empty values (`?a=1&b=x`), or "" for none.
pub fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs.iter().filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| format!("{k}={}", pct(v)))).collect();
    if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
}

/// Link of a sequence's page.
pub fn sequence_href(id: &str) -> String {
    format!("/ui/sequences/{}", pct(id))
}

/// Link of a triplet's page.
pub fn triplet_href(id: &str) -> String {
    format!("/ui/triplets/{}", pct(id))
}

/// Link of a trace's page.
pub fn trace_href(id: &str) -> String {
    format!("/ui/traces/{}", pct(id))
}

/// A time as `2023-11-14 22:13:20.123456Z`-style text (UTC).
pub fn when(t: Option<Micros>) -> String {
    t.map_or_else(|| "—".into(), |t| format_micros(t).replacen('T', " ", 1))
}

/// A reward with three decimals, or a dash.
pub fn reward(r: Option<f64>) -> String {
    r.map_or_else(|| "—".into(), |r| format!("{r:.3}"))
}

/// A count with thousands separators.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A short, whole id for tables: the start of a long id, the rest in the title.
pub fn short(id: &str) -> String {
    if id.chars().count() > 24 { format!("{}…", id.chars().take(22).collect::<String>()) } else { id.to_string() }
}

/// A message box: `kind` is `ok` or `error`.
pub fn notice(kind: &str, text: &str) -> Markup {
    html! {
        div class={ "notice " (kind) } role=(if kind == "error" { "alert" } else { "status" }) { (text) }
    }
}

/// A whole page.
pub fn layout(title: &str, section: Section, body: Markup) -> Markup {
    let nav = [
        (Section::Overview, "/ui/", "Overview"),
        (Section::Sequences, "/ui/sequences", "Sequences"),
        (Section::Review, "/ui/review", "Review queue"),
        (Section::WhatIf, "/ui/whatif", "What-if"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · rltrace" }
                link rel="icon" type="image/svg+xml" href=(asset_url("favicon.svg"));
                link rel="stylesheet" href=(asset_url("ui.css"));
                script src=(asset_url("ui.js")) {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    nav aria-label="Main" {
                        a class="brand" href="/ui/" { "rltrace" }
                        ul {
                            @for (s, href, label) in nav {
                                li {
                                    @if s == section {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    button type="button" id="theme" class="theme" title="Switch theme (t)" aria-label="Switch theme" { "Theme" }
                    @if signed_in() {
                        form method="post" action="/ui/signout" class="signout" {
                            (csrf_field())
                            button type="submit" id="signout" { "Sign out" }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
                footer {
                    "Keys: " kbd { "/" } " filter · " kbd { "j" } " " kbd { "k" } " rows · " kbd { "t" } " theme. "
                    a href="/openapi.json" { "REST API" } " · "
                    a href="/api/v1/stats" { "stats" }
                }
            }
        }
    }
}

/// A page response: HTML, not cached (it shows live data), with the security headers.
pub fn html_response(status: StatusCode, page: Markup) -> Response {
    let mut resp = (status, page.into_string()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// An error page with the status and message of `e`.
pub fn error_page(e: &crate::error::ApiError) -> Response {
    let (status, _) = e.status_and_code();
    let title = match status.as_u16() {
        404 => "Not found",
        400 | 422 => "Bad request",
        403 => "Forbidden",
        503 => "Busy",
        _ => "Error",
    };
    html_response(status, layout(title, Section::Overview, html! { (notice("error", &e.to_string())) p { a href="/ui/" { "Back to the overview" } } }))
}

/// A 303 to `to` (after a form that changed state).
pub fn see_other(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// An embedded asset with its content type, cached for a year (its URL carries its hash).
pub fn asset(name: &str) -> Option<Response> {
    let (body, kind) = match name {
        "ui.css" => (CSS, "text/css; charset=utf-8"),
        "ui.js" => (JS, "text/javascript; charset=utf-8"),
        "favicon.svg" => (FAVICON, "image/svg+xml"),
        _ => return None,
    };
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_in_pages() {
        let name = "<script>alert(1)</script>";
        let page = layout(name, Section::Sequences, html! { p { (name) } a href=(sequence_href(name)) { "x" } }).into_string();
        assert!(!page.contains("<script>alert(1)</script>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("/ui/sequences/%3Cscript%3Ealert%281%29%3C%2Fscript%3E"));
    }

    #[test]
    fn helpers() {
        assert_eq!(pct("task 1/ü"), "task%201%2F%C3%BC");
        assert_eq!(query(&[("a", Some("1")), ("b", None), ("c", Some("")), ("d", Some("x y"))]), "?a=1&d=x%20y");
        assert_eq!(query(&[]), "");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(12), "12");
        assert_eq!(reward(Some(0.5)), "0.500");
        assert!(csrf_ok(Some(&csrf_token())));
        assert!(!csrf_ok(Some("x")));
        assert!(!csrf_ok(None));
        assert!(asset("ui.css").is_some() && asset("../secret").is_none());
        assert!(asset_url("ui.js").starts_with("/ui/assets/ui.js?v="));
    }
}
