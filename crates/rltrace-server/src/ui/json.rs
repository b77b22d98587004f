//! A triplet's state and action as readable, foldable JSON: objects and arrays are `<details>`
//! elements (open near the top, folded deeper down), strings keep their line breaks. Bounded: a
//! text over [`MAX_TEXT`] bytes is shown raw and cut, at most [`MAX_NODES`] values are drawn and
//! nesting stops at [`MAX_DEPTH`]; the page says what was left out and links to the full JSON.

use maud::{Markup, html};
use serde_json::Value;

/// Largest JSON text parsed for display.
pub const MAX_TEXT: usize = 512 * 1024;
/// Most values drawn.
pub const MAX_NODES: usize = 4000;
/// Deepest nesting drawn.
pub const MAX_DEPTH: usize = 24;
/// Longest string drawn whole.
pub const MAX_STRING: usize = 20_000;

/// Render JSON text.
pub fn render(text: &str) -> Markup {
    if text.len() > MAX_TEXT {
        let cut = text.char_indices().take_while(|(i, _)| *i < MAX_TEXT).last().map_or(0, |(i, c)| i + c.len_utf8());
        return html! {
            p class="muted" { "Too large to fold (" (text.len()) " bytes); the first " (cut) " bytes:" }
            pre class="raw" { (&text[..cut]) }
        };
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => {
            let mut budget = MAX_NODES;
            let body = node(&v, 0, &mut budget);
            html! {
                div class="json" { (body) }
                @if budget == 0 { p class="muted" { "Only the first " (MAX_NODES) " values are shown." } }
            }
        }
        Err(_) => html! { pre class="raw" { (text) } },
    }
}

fn node(v: &Value, depth: usize, budget: &mut usize) -> Markup {
    if *budget == 0 {
        return html! { span class="muted" { "…" } };
    }
    *budget -= 1;
    match v {
        Value::Null => html! { span class="j-null" { "null" } },
        Value::Bool(b) => html! { span class="j-bool" { (b) } },
        Value::Number(n) => html! { span class="j-num" { (n) } },
        Value::String(s) => {
            if s.len() > MAX_STRING {
                let cut = s.char_indices().take_while(|(i, _)| *i < MAX_STRING).last().map_or(0, |(i, c)| i + c.len_utf8());
                html! { span class="j-str" { "\"" (&s[..cut]) "…\"" } span class="muted" { " (" (s.len()) " bytes)" } }
            } else {
                html! { span class="j-str" { "\"" (s) "\"" } }
            }
        }
        Value::Array(a) if a.is_empty() => html! { span class="j-punct" { "[]" } },
        Value::Object(o) if o.is_empty() => html! { span class="j-punct" { "{}" } },
        _ if depth >= MAX_DEPTH => html! { span class="muted" { "… nested deeper than " (MAX_DEPTH) } },
        Value::Array(a) => {
            let items: Vec<Markup> = a.iter().map(|x| node(x, depth + 1, budget)).collect();
            html! {
                details open[depth < 2] {
                    summary { span class="j-punct" { "[" } span class="muted" { (a.len()) (if a.len() == 1 { " item" } else { " items" }) } span class="j-punct" { "]" } }
                    ol start="0" { @for m in items { li { (m) } } }
                }
            }
        }
        Value::Object(o) => {
            let items: Vec<(&String, Markup)> = o.iter().map(|(k, x)| (k, node(x, depth + 1, budget))).collect();
            html! {
                details open[depth < 2] {
                    summary { span class="j-punct" { "{" } span class="muted" { (o.len()) (if o.len() == 1 { " key" } else { " keys" }) } span class="j-punct" { "}" } }
                    ul { @for (k, m) in items { li { span class="j-key" { (k) } ": " (m) } } }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_and_escapes() {
        let m = render(r#"{"prompt": [{"role": "user", "content": "<script>alert(1)</script>"}], "n": 3, "ok": true, "x": null, "e": {}}"#).into_string();
        assert!(m.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !m.contains("<script>"), "{m}");
        assert!(m.contains("<details open"));
        assert!(m.contains("j-num") && m.contains("j-bool") && m.contains("j-null"));
        let raw = render("not json <b>").into_string();
        assert!(raw.contains("not json &lt;b&gt;"));
    }

    #[test]
    fn bounded() {
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert!(render(&deep).into_string().contains("nested deeper"));
        let many = serde_json::to_string(&(0..10_000).collect::<Vec<_>>()).expect("json");
        assert!(render(&many).into_string().contains("Only the first"));
        let big = format!("\"{}\"", "é".repeat(MAX_TEXT));
        assert!(render(&big).into_string().contains("Too large"));
    }
}
