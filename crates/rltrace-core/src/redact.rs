//! Redaction before storage (`[redaction]` of the config file): rules by attribute key pattern
//! with an action, applied to every span before anything is written or forwarded.
//!
//! - A key pattern is a glob on the attribute key: `*` matches any run of characters (dots
//!   included), nothing else is special. `rl.state.*` matches `rl.state.prompt`, not `rl.state`.
//!   The first rule (in the file's order) whose pattern matches a key decides that attribute.
//! - Actions: `drop` removes the attribute; `hash` replaces a value by `sha256:<hex>`;
//!   `truncate:N` keeps at most N bytes of a string (cut at a character boundary); `mask`
//!   replaces what the detectors find by `[REDACTED:<name>]`.
//! - A string holding a JSON object or array (`rl.state`, `gen_ai.input.messages`) has `hash`,
//!   `truncate` and `mask` applied to each string inside it (object keys untouched) and stays
//!   valid JSON, so the span is not rejected downstream. Arrays and maps of values are walked.
//! - Detectors of `mask`: `email`, `phone` (at least 9 digits in the usual groupings), `card`
//!   (13 to 19 digits that pass the Luhn check), `ip` (IPv4, IPv6), `api_key` (OpenAI and
//!   Anthropic `sk-`, GitHub `ghp_` and kin, AWS `AKIA`, Slack `xox?-`, Google `AIza`, JWTs) and
//!   `bearer` (`Bearer <token>`), all by default, plus the configured regular expressions.
//!
//! Span attributes and event attributes are redacted by [`Redactor::apply`], resource
//! attributes by [`Redactor::apply_origin`] (a resource is shared by the spans of a request).
//! Span names and status messages are not attributes and are kept.

use std::borrow::Cow;

use regex::{Captures, Regex, RegexBuilder};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::span::{AttrValue, Origin, SpanRecord};

/// Rules and patterns at most.
pub const MAX_RULES: usize = 1000;
/// Compiled size of one configured regular expression at most.
pub const MAX_REGEX_BYTES: usize = 1 << 20;
/// The built-in detectors, in the order they run.
pub const DETECTORS: [&str; 6] = ["api_key", "bearer", "email", "card", "ip", "phone"];

/// `[redaction]` as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedactionConfig {
    /// Rules, in order.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Extra regular expressions for `mask`, each with the name of its replacement.
    #[serde(default)]
    pub patterns: Vec<PatternConfig>,
    /// Built-in detectors `mask` uses (default: all of [`DETECTORS`]).
    #[serde(default)]
    pub detectors: Option<Vec<String>>,
}

/// One `[[redaction.rules]]`: key patterns and an action.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Key patterns (globs with `*`).
    pub keys: Vec<String>,
    /// `drop`, `hash`, `truncate:N` or `mask`.
    pub action: String,
}

/// One `[[redaction.patterns]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    /// Name used in the replacement (`[REDACTED:<name>]`).
    pub name: String,
    /// The regular expression (Rust `regex` syntax).
    pub regex: String,
}

/// A redaction section that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("[redaction] {0}")]
pub struct RedactError(String);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    Drop,
    Hash,
    Truncate(usize),
    Mask,
}

/// A glob: the literal parts between `*`s.
#[derive(Debug, Clone)]
struct Glob {
    parts: Vec<String>,
    starts_open: bool,
    ends_open: bool,
}

impl Glob {
    fn new(p: &str) -> Glob {
        Glob { parts: p.split('*').filter(|s| !s.is_empty()).map(str::to_string).collect(), starts_open: p.starts_with('*'), ends_open: p.ends_with('*') }
    }

    fn matches(&self, key: &str) -> bool {
        if self.parts.is_empty() {
            return self.starts_open || key.is_empty();
        }
        let mut rest = key;
        let last = self.parts.len() - 1;
        for (i, part) in self.parts.iter().enumerate() {
            if i == 0 && !self.starts_open {
                let Some(r) = rest.strip_prefix(part.as_str()) else { return false };
                rest = r;
                if i == last && !self.ends_open {
                    return rest.is_empty();
                }
                continue;
            }
            if i == last && !self.ends_open {
                return rest.len() >= part.len() && rest.ends_with(part.as_str());
            }
            match rest.find(part.as_str()) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Check {
    None,
    Luhn,
    Ipv6,
    Phone,
    Bearer,
}

#[derive(Debug, Clone)]
struct Detector {
    name: String,
    re: Regex,
    check: Check,
}

/// Compiled redaction rules.
#[derive(Debug, Clone)]
pub struct Redactor {
    rules: Vec<(Vec<Glob>, Action)>,
    detectors: Vec<Detector>,
    hash: String,
}

fn builtin(name: &str) -> Option<(&'static str, Check)> {
    Some(match name {
        "email" => (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", Check::None),
        "card" => (r"\b\d(?:[ -]?\d){12,18}\b", Check::Luhn),
        "ip" => (r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b|(?:[0-9A-Fa-f]{1,4}:|:){2,7}(?:[0-9A-Fa-f]{1,4}|:)", Check::Ipv6),
        "phone" => (r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?\d{3,4}[ .-]\d{3,4}|\d{2,4}[ .-]\d{3,4}[ .-]\d{3,4})\b|\+\d{9,15}\b", Check::Phone),
        "api_key" => (
            r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|AKIA[0-9A-Z]{16}|xox[abposr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})",
            Check::None,
        ),
        "bearer" => (r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}", Check::Bearer),
        _ => return None,
    })
}

fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_text(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

impl Redactor {
    /// Compile `config`.
    pub fn new(config: &RedactionConfig) -> Result<Redactor, RedactError> {
        if config.rules.len() > MAX_RULES || config.patterns.len() > MAX_RULES {
            return Err(RedactError(format!("at most {MAX_RULES} rules and {MAX_RULES} patterns")));
        }
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, r) in config.rules.iter().enumerate() {
            if r.keys.is_empty() || r.keys.iter().any(|k| k.trim().is_empty()) {
                return Err(RedactError(format!("rule {}: keys must be non-empty patterns", i + 1)));
            }
            let action = match r.action.as_str() {
                "drop" => Action::Drop,
                "hash" => Action::Hash,
                "mask" => Action::Mask,
                a => match a.strip_prefix("truncate:").map(|n| n.parse::<usize>()) {
                    Some(Ok(n)) if n > 0 => Action::Truncate(n),
                    Some(_) => return Err(RedactError(format!("rule {}: {a:?}: truncate:N takes a whole number of bytes above 0", i + 1))),
                    None => return Err(RedactError(format!("rule {}: unknown action {a:?}: use drop, hash, truncate:N or mask", i + 1))),
                },
            };
            rules.push((r.keys.iter().map(|k| Glob::new(k.trim())).collect(), action));
        }
        let names: Vec<String> = config.detectors.clone().unwrap_or_else(|| DETECTORS.iter().map(|s| s.to_string()).collect());
        let mut detectors = Vec::new();
        for n in &names {
            let (re, check) = builtin(n).ok_or_else(|| RedactError(format!("unknown detector {n:?}: use {}", DETECTORS.join(", "))))?;
            let re = Regex::new(re).map_err(|e| RedactError(format!("detector {n}: {e}")))?;
            detectors.push(Detector { name: n.clone(), re, check });
        }
        for p in &config.patterns {
            if p.name.is_empty() || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(RedactError(format!("pattern name {:?}: use letters, digits, _ and -", p.name)));
            }
            let re = RegexBuilder::new(&p.regex).size_limit(MAX_REGEX_BYTES).build().map_err(|e| RedactError(format!("pattern {}: {e}", p.name)))?;
            detectors.push(Detector { name: p.name.clone(), re, check: Check::None });
        }
        let canonical = serde_json::json!({
            "rules": config.rules.iter().map(|r| serde_json::json!({"keys": r.keys, "action": r.action})).collect::<Vec<_>>(),
            "patterns": config.patterns.iter().map(|p| serde_json::json!({"name": p.name, "regex": p.regex})).collect::<Vec<_>>(),
            "detectors": names,
        });
        let hash = sha256_text(canonical.to_string().as_bytes());
        Ok(Redactor { rules, detectors, hash })
    }

    /// No rules: nothing is changed.
    pub fn none() -> Redactor {
        Redactor::new(&RedactionConfig::default()).unwrap_or_else(|_| Redactor { rules: Vec::new(), detectors: Vec::new(), hash: String::new() })
    }

    /// Whether there are no rules (nothing is ever changed).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// `sha256:<hex>` of the rules, patterns and detectors in effect (for export manifests).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    fn action_for(&self, key: &str) -> Option<Action> {
        self.rules.iter().find(|(globs, _)| globs.iter().any(|g| g.matches(key))).map(|(_, a)| *a)
    }

    /// The detectors and patterns on one plain string.
    pub fn mask_text<'a>(&self, s: &'a str) -> Cow<'a, str> {
        let mut out: Cow<'a, str> = Cow::Borrowed(s);
        for d in &self.detectors {
            if !d.re.is_match(&out) {
                continue;
            }
            let hay: &str = &out;
            let replaced = d.re.replace_all(hay, |c: &Captures<'_>| {
                let m = &c[0];
                let whole = c.get(0).map_or(0..0, |x| x.range());
                let hit = match d.check {
                    Check::None => true,
                    Check::Luhn => {
                        let digits: Vec<u8> = m.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect();
                        (13..=19).contains(&digits.len()) && luhn(&digits)
                    }
                    Check::Ipv6 => m.contains('.') || m.parse::<std::net::Ipv6Addr>().is_ok(),
                    // A run of digit groups that goes on (a longer number) is not a phone number.
                    Check::Phone => {
                        let continues = |t: &[u8]| t.len() >= 2 && b" .-".contains(&t[0]) && t[1].is_ascii_digit();
                        let after = &hay.as_bytes()[whole.end..];
                        let before: Vec<u8> = hay.as_bytes()[..whole.start].iter().rev().copied().collect();
                        m.bytes().filter(u8::is_ascii_digit).count() >= 9 && !continues(after) && !continues(&before)
                    }
                    Check::Bearer => true,
                };
                match (hit, d.check) {
                    (false, _) => m.to_string(),
                    (true, Check::Bearer) => format!("{} [REDACTED:{}]", &c[1], d.name),
                    (true, _) => format!("[REDACTED:{}]", d.name),
                }
            });
            if let Cow::Owned(o) = replaced {
                out = Cow::Owned(o);
            }
        }
        out
    }

    fn on_string(&self, s: &str, action: Action) -> Option<String> {
        match action {
            Action::Drop => None,
            Action::Hash => Some(sha256_text(s.as_bytes())),
            Action::Truncate(n) => {
                if s.len() <= n {
                    return Some(s.to_string());
                }
                let mut end = n;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                Some(s[..end].to_string())
            }
            Action::Mask => Some(self.mask_text(s).into_owned()),
        }
    }

    fn on_json(&self, v: &mut Value, action: Action) {
        match v {
            Value::String(s) => {
                if let Some(n) = self.on_string(s, action) {
                    *s = n;
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.on_json(x, action)),
            Value::Object(o) => o.values_mut().for_each(|x| self.on_json(x, action)),
            Value::Number(n) if action == Action::Hash => *v = Value::String(sha256_text(n.to_string().as_bytes())),
            _ => {}
        }
    }

    /// A string attribute: JSON inside is redacted leaf by leaf.
    fn on_attr_string(&self, s: &str, action: Action) -> String {
        let t = s.trim_start();
        if (t.starts_with('{') || t.starts_with('['))
            && let Ok(mut v) = serde_json::from_str::<Value>(s)
        {
            self.on_json(&mut v, action);
            return v.to_string();
        }
        self.on_string(s, action).unwrap_or_default()
    }

    fn on_value(&self, v: &mut AttrValue, action: Action) {
        match v {
            AttrValue::Str(s) => *s = self.on_attr_string(s, action),
            AttrValue::Array(a) => a.iter_mut().for_each(|x| self.on_value(x, action)),
            AttrValue::Map(m) => m.iter_mut().for_each(|(_, x)| self.on_value(x, action)),
            AttrValue::Bytes(b) if action == Action::Hash => *v = AttrValue::Str(sha256_text(b)),
            AttrValue::Int(_) | AttrValue::Double(_) | AttrValue::Bool(_) if action == Action::Hash => {
                *v = AttrValue::Str(sha256_text(v.to_json().to_string().as_bytes()))
            }
            _ => {}
        }
    }

    /// Redact a list of attributes in place; whether anything matched.
    fn on_attrs(&self, attrs: &mut Vec<(String, AttrValue)>) -> bool {
        let mut any = false;
        attrs.retain_mut(|(k, v)| match self.action_for(k) {
            None => true,
            Some(Action::Drop) => {
                any = true;
                false
            }
            Some(a) => {
                any = true;
                self.on_value(v, a);
                true
            }
        });
        any
    }

    /// Redact a span's attributes and its events' attributes.
    pub fn apply(&self, span: &mut SpanRecord) {
        if self.rules.is_empty() {
            return;
        }
        self.on_attrs(&mut span.attributes);
        for e in &mut span.events {
            self.on_attrs(&mut e.attributes);
        }
    }

    /// Redact a batch of spans: their attributes, events and resources (each shared resource
    /// redacted once).
    pub fn apply_all(&self, spans: &mut [SpanRecord]) {
        if self.rules.is_empty() {
            return;
        }
        let mut last: Option<(*const Origin, std::sync::Arc<Origin>)> = None;
        for span in spans {
            self.apply(span);
            let ptr = std::sync::Arc::as_ptr(&span.origin);
            match &last {
                Some((p, redacted)) if *p == ptr => span.origin = std::sync::Arc::clone(redacted),
                _ => {
                    let redacted = match self.apply_origin(&span.origin) {
                        Some(o) => std::sync::Arc::new(o),
                        None => std::sync::Arc::clone(&span.origin),
                    };
                    last = Some((ptr, std::sync::Arc::clone(&redacted)));
                    span.origin = redacted;
                }
            }
        }
    }

    /// A redacted copy of a resource, `None` when no rule matched any of its keys.
    pub fn apply_origin(&self, origin: &Origin) -> Option<Origin> {
        if self.rules.is_empty() || !origin.resource.iter().any(|(k, _)| self.action_for(k).is_some()) {
            return None;
        }
        let mut o = origin.clone();
        self.on_attrs(&mut o.resource);
        Some(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(toml_text: &str) -> Redactor {
        Redactor::new(&toml::from_str::<RedactionConfig>(toml_text).expect("toml")).expect("redactor")
    }

    fn masker() -> Redactor {
        r("[[rules]]\nkeys = [\"*\"]\naction = \"mask\"")
    }

    #[test]
    fn detectors_find_their_shapes_and_leave_look_alikes() {
        let m = masker();
        let cases = [
            ("mail alice.smith+x@example.co.uk now", "mail [REDACTED:email] now"),
            ("card 4111 1111 1111 1111 ok", "card [REDACTED:card] ok"),
            ("card 4111-1111-1111-1112 kept", "card 4111-1111-1111-1112 kept"),
            ("from 192.168.10.254 and 2001:db8::8a2e:370:7334", "from [REDACTED:ip] and [REDACTED:ip]"),
            ("call +1 415 555 2671 or (030) 1234 5678", "call [REDACTED:phone] or [REDACTED:phone]"),
            ("key sk-proj-abcdefghijklmnop1234 and AKIAABCDEFGHIJKLMNOP", "key [REDACTED:api_key] and [REDACTED:api_key]"),
            ("gh ghp_abcdefghijklmnopqrstuvwxyz0123", "gh [REDACTED:api_key]"),
            ("Authorization: Bearer abc.def-ghi_jkl", "Authorization: Bearer [REDACTED:bearer]"),
            ("on 2026-12-02 at 12:30:45, id 5e0c1d2a-7b3f-4a6e-9c1d-2a7b3f4a6e9c, n=12345, v1.2.3", "on 2026-12-02 at 12:30:45, id 5e0c1d2a-7b3f-4a6e-9c1d-2a7b3f4a6e9c, n=12345, v1.2.3"),
        ];
        for (input, want) in cases {
            assert_eq!(m.mask_text(input), want, "{input}");
        }
        assert!(matches!(m.mask_text("nothing here"), Cow::Borrowed(_)), "no copy when nothing matches");
    }

    #[test]
    fn json_inside_strings_stays_json_with_keys_kept() {
        let m = r("[[rules]]\nkeys = [\"rl.state\"]\naction = \"mask\"\n[[rules]]\nkeys = [\"rl.state\", \"x\"]\naction = \"drop\"");
        let mut v = AttrValue::Str(r#"{"email":"bob@example.com","list":["ok","10.0.0.1"],"n":4}"#.into());
        m.on_value(&mut v, Action::Mask);
        assert_eq!(v, AttrValue::Str(r#"{"email":"[REDACTED:email]","list":["ok","[REDACTED:ip]"],"n":4}"#.into()));
        assert_eq!(m.action_for("rl.state"), Some(Action::Mask), "the first matching rule wins");
        assert_eq!(m.action_for("x"), Some(Action::Drop));
    }

    #[test]
    fn hash_truncate_and_drop() {
        let m = r("[[rules]]\nkeys = [\"user.*\"]\naction = \"hash\"\n[[rules]]\nkeys = [\"big\"]\naction = \"truncate:4\"\n[[rules]]\nkeys = [\"secret\"]\naction = \"drop\"");
        let mut attrs = vec![
            ("user.email".to_string(), AttrValue::Str("a@b.io".into())),
            ("user.id".to_string(), AttrValue::Int(7)),
            ("big".to_string(), AttrValue::Str("héllo".into())),
            ("secret".to_string(), AttrValue::Str("x".into())),
            ("other".to_string(), AttrValue::Str("a@b.io".into())),
        ];
        assert!(m.on_attrs(&mut attrs));
        assert_eq!(attrs[0].1, AttrValue::Str(sha256_text(b"a@b.io")));
        assert!(attrs[0].1.as_str().is_some_and(|s| s.starts_with("sha256:") && s.len() == 71));
        assert_eq!(attrs[1].1, AttrValue::Str(sha256_text(b"7")));
        assert_eq!(attrs[2].1, AttrValue::Str("hél".into()), "cut at a character boundary");
        assert_eq!(attrs.len(), 4);
        assert_eq!(attrs[3], ("other".to_string(), AttrValue::Str("a@b.io".into())), "no rule, no change");
    }

    #[test]
    fn globs() {
        let g = |p: &str, k: &str| Glob::new(p).matches(k);
        assert!(g("rl.state.*", "rl.state.prompt"));
        assert!(!g("rl.state.*", "rl.state"));
        assert!(g("gen_ai.*.messages", "gen_ai.input.messages"));
        assert!(!g("gen_ai.*.messages", "gen_ai.input.messages.0"));
        assert!(g("*", "anything"));
        assert!(g("*.content", "llm.input_messages.0.message.content"));
        assert!(g("exact", "exact") && !g("exact", "exactly"));
        assert!(g("a*b*c", "a-b-c") && !g("a*b*c", "a-c"));
    }

    #[test]
    fn events_and_resources_are_redacted_and_untouched_resources_are_not_copied() {
        let m = masker();
        let mut span = SpanRecord {
            trace_id: [1; 16],
            span_id: [1; 8],
            parent_span_id: None,
            name: "n".into(),
            kind: 1,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            status_code: 0,
            status_message: String::new(),
            attributes: vec![("k".into(), AttrValue::Str("to c@d.io".into()))],
            events: vec![crate::span::SpanEvent { name: "e".into(), time_unix_nano: 1, attributes: vec![("m".into(), AttrValue::Str("c@d.io".into()))] }],
            origin: std::sync::Arc::default(),
        };
        m.apply(&mut span);
        assert_eq!(span.attributes[0].1, AttrValue::Str("to [REDACTED:email]".into()));
        assert_eq!(span.events[0].attributes[0].1, AttrValue::Str("[REDACTED:email]".into()));
        let origin = Origin { resource: vec![("host.ip".into(), AttrValue::Str("10.1.2.3".into()))], ..Origin::default() };
        assert_eq!(m.apply_origin(&origin).expect("changed").resource[0].1, AttrValue::Str("[REDACTED:ip]".into()));
        assert!(r("[[rules]]\nkeys = [\"rl.*\"]\naction = \"mask\"").apply_origin(&origin).is_none());
    }

    #[test]
    fn configuration_errors_say_what_is_wrong_and_the_hash_follows_the_rules() {
        let bad = |t: &str| Redactor::new(&toml::from_str::<RedactionConfig>(t).expect("toml")).expect_err("refused").to_string();
        assert!(bad("[[rules]]\nkeys = [\"a\"]\naction = \"truncate:abc\"").contains("truncate:N"));
        assert!(bad("[[rules]]\nkeys = [\"a\"]\naction = \"truncate:0\"").contains("truncate:N"));
        assert!(bad("[[rules]]\nkeys = [\"a\"]\naction = \"erase\"").contains("unknown action"));
        assert!(bad("[[rules]]\nkeys = [\"\"]\naction = \"drop\"").contains("non-empty"));
        assert!(bad("detectors = [\"ssn\"]").contains("unknown detector"));
        assert!(bad("[[patterns]]\nname = \"x\"\nregex = \"(\"").contains("pattern x"));
        assert!(bad("[[patterns]]\nname = \"big\"\nregex = \"\\\\w{1000}\\\\w{1000}\\\\w{1000}\"").contains("pattern big"));
        let a = r("[[rules]]\nkeys = [\"a\"]\naction = \"mask\"");
        assert_eq!(a.hash(), r("[[rules]]\nkeys = [\"a\"]\naction = \"mask\"").hash());
        assert_ne!(a.hash(), r("[[rules]]\nkeys = [\"a\"]\naction = \"hash\"").hash());
        let custom = r("[[rules]]\nkeys = [\"*\"]\naction = \"mask\"\n[[patterns]]\nname = \"ticket\"\nregex = \"TICKET-[0-9]+\"");
        assert_eq!(custom.mask_text("see TICKET-991"), "see [REDACTED:ticket]");
        assert!(r("").is_empty());
    }
}
