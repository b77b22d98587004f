//! Redaction before storage (`[redaction]` of the config file): rules by attribute key pattern,
//! each with an action, applied to every span on every ingest path before anything is written or
//! forwarded, so the raw text never reaches the database.
//!
//! ```toml
//! [redaction]
//! detectors = ["email", "phone", "card", "ip", "api_key", "bearer"]   # the default: all
//!
//! [[redaction.rules]]
//! keys = ["rl.state", "rl.action", "gen_ai.*.messages", "llm.input_messages.*"]
//! action = "mask"
//!
//! [[redaction.rules]]
//! keys = ["user.email"]
//! action = "hash"
//!
//! [[redaction.patterns]]
//! name = "ticket"
//! regex = "JIRA-[0-9]+"
//! ```
//!
//! # Key patterns
//!
//! A key pattern is a glob on the whole attribute key: `*` matches any run of characters, dots
//! included, the empty run too; no other character is special. `rl.state.*` matches
//! `rl.state.prompt` (and `rl.state.`) but not `rl.state`; `gen_ai.*.messages` matches
//! `gen_ai.input.messages`; `*` matches every key. The first rule, in the file's order, with a
//! pattern that matches a key decides that attribute; a key no rule matches is left alone. Exact
//! keys are looked up in a hash map, `prefix.*` patterns are prefix comparisons and other globs
//! are matched by hand, so a span none of whose keys match costs a few comparisons per attribute
//! and no allocation.
//!
//! # Actions
//!
//! - `drop` removes the attribute.
//! - `hash` replaces a string by `sha256:<lowercase hex of its UTF-8 bytes>`, bytes by the
//!   digest of the bytes, and a number or boolean by the digest of its JSON text (`7`, `1.5`,
//!   `true`) as a string.
//! - `truncate:N` (N >= 1) keeps at most N bytes of a string, cut back to a character boundary.
//! - `mask` replaces each finding of the detectors and patterns in a string by
//!   `[REDACTED:<name>]` (`[REDACTED:email]`, `[REDACTED:ticket]`). `Bearer <token>` keeps the
//!   word and loses the token: `Bearer [REDACTED:bearer]`.
//!
//! `truncate` and `mask` leave numbers, booleans and bytes as they are. Arrays and maps of values
//! are walked, their map keys untouched. A string that holds a JSON object or array (its first
//! non-space character is `{` or `[` and it parses) has `hash`, `truncate` or `mask` applied to
//! each string value inside it, at any depth, and is written back compactly: object keys, numbers
//! (digit for digit), booleans, nulls and the order of members are kept, so `rl.state` stays a
//! JSON object and the span is not rejected downstream. Numbers inside such JSON are not hashed
//! (only its strings are). When no string inside changes, the text is kept byte for byte.
//!
//! `mask` applies only to the keys its rule matches: there is no global mask; `keys = ["*"]`
//! masks every attribute.
//!
//! # Detectors
//!
//! Replacement names are the detector names: `email`, `phone`, `card`, `ip`, `api_key`,
//! `bearer`, then the configured patterns' names. Where findings overlap the earliest, then the
//! longest, wins (on a tie: bearer, api_key, email, card, ip, phone, then the patterns in order).
//!
//! - `email`: `local@domain.tld` (ASCII).
//! - `phone`: a `+` country code then 9 to 15 digits in groups (`+1 415 555 2671`,
//!   `+14155552671`, `+44 (0)20 7946 0958`), or a national number of 9 to 12 digits written with
//!   at least one separator (space, `.`, `-`) or an area code in parentheses (`(555) 123-4567`,
//!   `555-123-4567`, `06 12 34 56 78`, `030 12345678`). Not a phone number: digits that go on
//!   around the candidate (a longer number, a UUID's groups), a date (`2026-12-02`, with or
//!   without a time after it), a candidate followed by `:` (a time), an IPv4 address, a bare
//!   number without `+` (`12345`, `2024`, `1700000000`).
//! - `card`: 13 to 19 digits, possibly separated by single spaces or dashes, starting with 2 to 6
//!   (the major networks' ranges; this keeps epoch timestamps in milliseconds out), replaced only
//!   when the Luhn check passes. A 16-digit number failing it is kept.
//! - `ip`: IPv4 with each octet in 0-255, not inside a longer dotted run (`1.2.3.4.5` is kept as
//!   a version); IPv6 full, `::`-compressed or with an IPv4 tail, validated by
//!   [`std::net::Ipv6Addr`], with at least one decimal digit (so `std::io` or `abc::def` are
//!   kept) and not glued to letters or digits.
//! - `api_key`: OpenAI/Anthropic `sk-`, `sk-proj-`, `sk-ant-` keys; GitHub `ghp_`, `gho_`,
//!   `ghs_`, `ghu_`, `ghr_` and `github_pat_`; AWS `AKIA`/`ASIA` + 16; Slack `xox[abposr]-`;
//!   Google `AIza` + 35; JWTs `eyJ….eyJ….…`.
//! - `bearer`: `Bearer <token>` with "bearer" in any case and a token of at least 8 characters
//!   of the RFC 6750 alphabet that is not a plain lowercase word (`the bearer instrument` is
//!   prose).
//!
//! Each detector is a regular expression compiled once per process (a regex per detector, not
//! one combined regex: candidates are validated in code, Luhn, octets, [`Ipv6Addr`], dates, and a
//! rejected candidate of one detector must not hide another's match). A vectorised pass over
//! the bytes of a string counts digits and colons and notes the rare bytes literal triggers sit
//! on (`@`, `sk-`, `ghp_`, `AKIA`, `eyJ`, `bearer`, ...); a detector whose trigger is absent does
//! not run. The phone, card and IPv4 regexes run only on the runs of the characters they are
//! made of (digits among ` .()+-`, with 4 digits close together), IPv6 on runs of hex digits,
//! colons and dots with two colons, so prose costs a pass, not a regex scan per detector; the
//! findings are the same as a scan of the whole string. Configured patterns run on every
//! masked string. Inside JSON, detectors and patterns see each decoded string value on its own.
//!
//! Cost (criterion, `cargo bench -p rltrace-core --bench redact`, one 2-core AMD EPYC VM): about
//! 5 µs for a 1 KB span with three JSON attributes masked and one hashed, about 0.1 µs for a span
//! of 10 attributes whose keys no rule matches (no allocation), about 0.14 µs to mask 500 bytes
//! of prose with nothing to find, about 2 ns per byte of digit-dense prose.
//!
//! # What is redacted
//!
//! [`Redactor::apply`] redacts a span's attributes and its events' attributes;
//! [`Redactor::apply_origin`] its resource's attributes (a resource is shared by the spans of one
//! resource group, so it is redacted once per group: [`Redactor::apply_all`] does both for a
//! batch). Span names, status messages and event names are not attributes: rules reach them by
//! the keys `span.name`, `span.status_message` and `event.name` (a dropped name becomes
//! `redacted`, a dropped status message empty). Scope names are kept. [`Redactor::hash`] is the `sha256:` of a canonical form of the rules, patterns and
//! detectors in effect, recorded in export manifests.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};

use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::span::{AttrValue, Attributes, Origin, SpanRecord};

/// The key rules use for a span's name (not an attribute).
pub const SPAN_NAME_KEY: &str = "span.name";
/// The key rules use for a span's status message.
pub const STATUS_MESSAGE_KEY: &str = "span.status_message";
/// The key rules use for a span event's name.
pub const EVENT_NAME_KEY: &str = "event.name";

/// Rules at most.
pub const MAX_RULES: usize = 1000;
/// Patterns at most.
pub const MAX_PATTERNS: usize = 1000;
/// Key patterns of one rule at most.
pub const MAX_KEYS_PER_RULE: usize = 1000;
/// Compiled size of one configured regular expression at most (bytes).
pub const MAX_REGEX_BYTES: usize = 1 << 20;
/// The built-in detectors, by name.
pub const DETECTORS: [&str; 6] = ["email", "phone", "card", "ip", "api_key", "bearer"];

/// `[redaction]` of the config file, as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedactionConfig {
    /// Rules, applied in order; the first rule whose pattern matches a key decides that attribute.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Extra regular expressions for `mask`, each with a name used in the replacement.
    #[serde(default)]
    pub patterns: Vec<PatternConfig>,
    /// Built-in detectors used by `mask` (default: all): "email", "phone", "card", "ip",
    /// "api_key", "bearer". An empty list leaves only the patterns.
    #[serde(default)]
    pub detectors: Option<Vec<String>>,
}

/// One `[[redaction.rules]]`: key patterns and what to do with the attributes they match.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Key patterns: globs where `*` matches any run of characters.
    pub keys: Vec<String>,
    /// `drop`, `hash`, `truncate:N` or `mask`.
    pub action: String,
}

/// One `[[redaction.patterns]]`: a regular expression whose matches `mask` replaces.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    /// Name used in the replacement (`[REDACTED:<name>]`): 1 to 64 of `A-Z a-z 0-9 _ - .`.
    pub name: String,
    /// The regular expression (Rust `regex` syntax), compiled to at most [`MAX_REGEX_BYTES`].
    pub regex: String,
}

/// A `[redaction]` section that cannot be used; the message names the field and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RedactError {
    /// More rules, patterns or keys in one rule than allowed.
    #[error("redaction.{what}: {count} given, at most {max}")]
    TooMany {
        /// `rules`, `patterns` or `rules[i].keys`.
        what: String,
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A rule without key patterns.
    #[error("redaction.rules[{rule}].keys: a rule needs at least one key pattern")]
    NoKeys {
        /// Index of the rule (from 0).
        rule: usize,
    },
    /// An empty key pattern.
    #[error("redaction.rules[{rule}].keys[{key}]: empty key pattern")]
    EmptyKey {
        /// Index of the rule (from 0).
        rule: usize,
        /// Index of the key pattern in the rule (from 0).
        key: usize,
    },
    /// `truncate:` with a length that is not a whole number >= 1.
    #[error("redaction.rules[{rule}].action: {action:?}: truncate:N takes a whole number of bytes N >= 1")]
    Truncate {
        /// Index of the rule (from 0).
        rule: usize,
        /// The action as written.
        action: String,
    },
    /// An action that is none of the known ones.
    #[error("redaction.rules[{rule}].action: unknown action {action:?}: use drop, hash, truncate:N or mask")]
    Action {
        /// Index of the rule (from 0).
        rule: usize,
        /// The action as written.
        action: String,
    },
    /// A detector name that is not built in.
    #[error("redaction.detectors: unknown detector {0:?}: the detectors are email, phone, card, ip, api_key and bearer")]
    Detector(String),
    /// A pattern name that is empty, too long or has other characters than `A-Za-z0-9_-.`.
    #[error("redaction.patterns[{index}].name: {name:?}: a pattern name is 1 to 64 of A-Z a-z 0-9 _ - .")]
    PatternName {
        /// Index of the pattern (from 0).
        index: usize,
        /// The name as written.
        name: String,
    },
    /// Two patterns with one name.
    #[error("redaction.patterns[{index}].name: {name:?} is the name of an earlier pattern")]
    DuplicatePattern {
        /// Index of the later pattern (from 0).
        index: usize,
        /// The name.
        name: String,
    },
    /// A regular expression that does not compile.
    #[error("redaction.patterns[{index}] ({name}): invalid regular expression: {message}")]
    Regex {
        /// Index of the pattern (from 0).
        index: usize,
        /// Its name.
        name: String,
        /// What the regex compiler says.
        message: String,
    },
    /// A regular expression larger than [`MAX_REGEX_BYTES`] once compiled.
    #[error("redaction.patterns[{index}] ({name}): the regular expression is too large once compiled (limit {limit} bytes)")]
    RegexTooLarge {
        /// Index of the pattern (from 0).
        index: usize,
        /// Its name.
        name: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// A built-in detector that does not compile (a bug of this build).
    #[error("redaction: built-in detector {name} does not compile: {message}")]
    Builtin {
        /// The detector.
        name: &'static str,
        /// What the regex compiler says.
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Drop,
    Hash,
    Truncate(usize),
    Mask,
}

impl Action {
    fn parse(rule: usize, text: &str) -> Result<Action, RedactError> {
        match text {
            "drop" => Ok(Action::Drop),
            "hash" => Ok(Action::Hash),
            "mask" => Ok(Action::Mask),
            _ if text == "truncate" || text.starts_with("truncate:") => {
                match text.strip_prefix("truncate:").filter(|n| n.bytes().all(|b| b.is_ascii_digit())).and_then(|n| n.parse::<usize>().ok()) {
                    Some(n) if n >= 1 => Ok(Action::Truncate(n)),
                    _ => Err(RedactError::Truncate { rule, action: text.to_string() }),
                }
            }
            _ => Err(RedactError::Action { rule, action: text.to_string() }),
        }
    }

    /// Canonical text (for the rules' hash).
    fn canonical(self) -> String {
        match self {
            Action::Drop => "drop".into(),
            Action::Hash => "hash".into(),
            Action::Mask => "mask".into(),
            Action::Truncate(n) => format!("truncate:{n}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Key patterns

/// FNV-1a: the exact-key map is built from the config and only looked up with span keys, so a
/// keyed hash buys nothing and SipHash costs more on short keys.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A glob with at least one `*` that is not a plain prefix: `head*m1*m2*...*tail`.
#[derive(Debug, Clone)]
struct Glob {
    head: Box<str>,
    middle: Vec<Box<str>>,
    tail: Box<str>,
}

impl Glob {
    /// `pattern` must hold a `*` (consecutive stars already collapsed).
    fn new(pattern: &str) -> Glob {
        let parts: Vec<&str> = pattern.split('*').collect();
        let head = parts.first().copied().unwrap_or_default();
        let tail = if parts.len() > 1 { parts.last().copied().unwrap_or_default() } else { "" };
        let middle = if parts.len() > 2 { parts[1..parts.len() - 1].iter().filter(|p| !p.is_empty()).map(|p| Box::from(*p)).collect() } else { Vec::new() };
        Glob { head: head.into(), middle, tail: tail.into() }
    }

    fn matches(&self, key: &str) -> bool {
        if key.len() < self.head.len() + self.tail.len() || !key.starts_with(&*self.head) || !key.ends_with(&*self.tail) {
            return false;
        }
        // Both cuts are char boundaries: `key` starts with `head` and ends with `tail`.
        let mut rest = &key[self.head.len()..key.len() - self.tail.len()];
        for part in &self.middle {
            match rest.find(&**part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        true
    }
}

/// Whether `pattern` (a glob with `*` only) matches `key`, as one rule's key pattern would.
#[cfg(test)]
fn glob_matches(pattern: &str, key: &str) -> bool {
    let p = collapse_stars(pattern);
    if !p.contains('*') {
        return p == key;
    }
    Glob::new(&p).matches(key)
}

fn collapse_stars(p: &str) -> Cow<'_, str> {
    if !p.contains("**") {
        return Cow::Borrowed(p);
    }
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if c != '*' || !out.ends_with('*') {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// All key patterns of all rules, by kind, each with the index of its rule.
#[derive(Debug, Clone, Default)]
struct KeyIndex {
    exact: HashMap<Box<str>, u32, BuildHasherDefault<Fnv>>,
    /// Bit `l` set: some exact key has `l` bytes (bit 127: 127 bytes or more).
    exact_lens: u128,
    /// `prefix*` patterns, in rule order.
    prefixes: Vec<(Box<str>, u32)>,
    /// Other globs, in rule order.
    globs: Vec<(Glob, u32)>,
}

impl KeyIndex {
    fn add(&mut self, pattern: &str, rule: u32) {
        let p = collapse_stars(pattern);
        let stars = p.bytes().filter(|b| *b == b'*').count();
        if stars == 0 {
            self.exact.entry(Box::from(&*p)).or_insert(rule);
            self.exact_lens |= 1u128 << p.len().min(127);
        } else if stars == 1 && p.ends_with('*') {
            self.prefixes.push((Box::from(&p[..p.len() - 1]), rule));
        } else {
            self.globs.push((Glob::new(&p), rule));
        }
    }

    /// Index of the first rule with a pattern matching `key`.
    #[inline]
    fn lookup(&self, key: &str) -> Option<u32> {
        let mut best = u32::MAX;
        if self.exact_lens & (1u128 << key.len().min(127)) != 0
            && let Some(r) = self.exact.get(key)
        {
            best = *r;
        }
        for (prefix, r) in &self.prefixes {
            if *r >= best {
                break;
            }
            if key.starts_with(&**prefix) {
                best = *r;
                break;
            }
        }
        for (glob, r) in &self.globs {
            if *r >= best {
                break;
            }
            if glob.matches(key) {
                best = *r;
                break;
            }
        }
        (best != u32::MAX).then_some(best)
    }
}

// ---------------------------------------------------------------------------------------------
// Detectors

// Detector bits (in `DETECTORS` order).
const D_EMAIL: u8 = 1;
const D_PHONE: u8 = 2;
const D_CARD: u8 = 4;
const D_IP: u8 = 8;
const D_API_KEY: u8 = 16;
const D_BEARER: u8 = 32;

// Trigger bits of the byte pre-scan: a detector whose trigger is absent cannot match.
const T_EMAIL: u8 = 1;
const T_PHONE: u8 = 2;
const T_CARD: u8 = 4;
const T_IPV4: u8 = 8;
const T_IPV6: u8 = 16;
const T_API_KEY: u8 = 32;
const T_BEARER: u8 = 64;

// Replacement labels: the detectors in `DETECTORS` order, then the patterns.
const L_EMAIL: u16 = 0;
const L_PHONE: u16 = 1;
const L_CARD: u16 = 2;
const L_IP: u16 = 3;
const L_API_KEY: u16 = 4;
const L_BEARER: u16 = 5;

fn detector_bit(name: &str) -> Option<u8> {
    Some(match name {
        "email" => D_EMAIL,
        "phone" => D_PHONE,
        "card" => D_CARD,
        "ip" => D_IP,
        "api_key" => D_API_KEY,
        "bearer" => D_BEARER,
        _ => return None,
    })
}

fn triggers_of(detectors: u8) -> u8 {
    let mut t = 0;
    if detectors & D_EMAIL != 0 {
        t |= T_EMAIL;
    }
    if detectors & D_PHONE != 0 {
        t |= T_PHONE;
    }
    if detectors & D_CARD != 0 {
        t |= T_CARD;
    }
    if detectors & D_IP != 0 {
        t |= T_IPV4 | T_IPV6;
    }
    if detectors & D_API_KEY != 0 {
        t |= T_API_KEY;
    }
    if detectors & D_BEARER != 0 {
        t |= T_BEARER;
    }
    t
}

/// Tie-break among findings with the same start and end (lower wins).
fn priority(label: u16) -> u16 {
    match label {
        L_BEARER => 0,
        L_API_KEY => 1,
        L_EMAIL => 2,
        L_CARD => 3,
        L_IP => 4,
        L_PHONE => 5,
        l => l + 1,
    }
}

const OCTET: &str = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";

/// The built-in detectors' regular expressions, compiled once per process.
#[derive(Debug)]
struct Builtins {
    email: Regex,
    phone: Regex,
    card: Regex,
    ipv4: Regex,
    ipv6: Regex,
    api_key: Regex,
    bearer: Regex,
}

impl Builtins {
    fn compile() -> Result<Builtins, RedactError> {
        let re = |name: &'static str, src: &str| Regex::new(src).map_err(|e| RedactError::Builtin { name, message: e.to_string() });
        Ok(Builtins {
            email: re("email", r"[A-Za-z0-9._%+\-]+@(?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,63}(?-u:\b)")?,
            phone: re(
                "phone",
                concat!(
                    r"\+[1-9][0-9]{0,3}(?:[ .\-]?(?:\([0-9]{1,5}\)|[0-9]{1,6})){1,8}",
                    r"|(?:\([0-9]{2,5}\)[ .\-]?|(?-u:\b)[0-9]{2,5}[ .\-])[0-9]{2,8}(?:[ .\-][0-9]{2,8}){0,4}(?-u:\b)",
                ),
            )?,
            card: re("card", r"(?-u:\b)[2-6][0-9](?:[ \-]?[0-9]){11,17}(?-u:\b)")?,
            ipv4: re("ip", &format!(r"(?-u:\b)(?:{OCTET}\.){{3}}{OCTET}(?-u:\b)"))?,
            ipv6: re("ip", r"(?:[0-9A-Fa-f]{1,4})?(?::[0-9A-Fa-f]{0,4}){2,7}(?:(?:\.[0-9]{1,3}){3})?")?,
            api_key: re(
                "api_key",
                concat!(
                    r"(?-u:\b)(?:sk-[A-Za-z0-9_\-]{20,}",
                    r"|gh[opsur]_[A-Za-z0-9]{20,}",
                    r"|github_pat_[A-Za-z0-9_]{20,}",
                    r"|A(?:KIA|SIA)[0-9A-Z]{16}",
                    r"|xox[abposr]-[A-Za-z0-9\-]{10,}",
                    r"|AIza[0-9A-Za-z_\-]{35}",
                    r"|eyJ[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)",
                ),
            )?,
            bearer: re("bearer", r"(?i-u:\bbearer)[ \t]+[A-Za-z0-9\-._~+/]+=*")?,
        })
    }
}

static BUILTINS: OnceLock<Result<Builtins, RedactError>> = OnceLock::new();

fn builtins() -> Result<&'static Builtins, RedactError> {
    match BUILTINS.get_or_init(Builtins::compile) {
        Ok(b) => Ok(b),
        Err(e) => Err(e.clone()),
    }
}

/// From this length on, the e-mail, API key and bearer regexes look for themselves.
const LONG: usize = 128;

/// What one cheap look at a string says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Prescan {
    digits: u32,
    colons: u32,
    /// `T_EMAIL`, `T_API_KEY`, `T_BEARER`: the literal triggers present.
    literal: u8,
}

/// One pass counts digits and colons and notes the bytes where a literal trigger may sit
/// (`@ - _ A J b B`); it has no branch and no dependency from byte to byte, so it vectorises. In
/// a string shorter than [`LONG`], a second pass, only when such a byte is present, checks the
/// literal prefixes where they sit (`@`, `sk-`, `ghp_`, `github_pat_`, `AKIA`, `xoxb-`, `AIza`,
/// `eyJ`, `bearer`, ...).
fn prescan(s: &[u8]) -> Prescan {
    let (mut digits, mut colons, mut at, mut key, mut b_) = (0u32, 0u32, 0u8, 0u8, 0u8);
    // Blocks of at most 255 bytes keep the counts in bytes (wide vector lanes).
    for block in s.chunks(255) {
        let (mut d, mut c) = (0u8, 0u8);
        for &b in block {
            d += u8::from(b.wrapping_sub(b'0') < 10);
            c += u8::from(b == b':');
            at |= u8::from(b == b'@');
            key |= u8::from(b == b'-') | u8::from(b == b'_') | u8::from(b == b'A') | u8::from(b == b'J');
            b_ |= u8::from((b | 0x20) == b'b');
        }
        digits += u32::from(d);
        colons += u32::from(c);
    }
    let mut literal = 0u8;
    if s.len() >= LONG {
        // The literal regexes have prefilters that skip through long text faster than the
        // second pass: each looks for itself when its byte is present.
        if at != 0 {
            literal |= T_EMAIL;
        }
        if key != 0 {
            literal |= T_API_KEY;
        }
        if b_ != 0 {
            literal |= T_BEARER;
        }
    } else if at | key | b_ != 0 {
        for (i, &b) in s.iter().enumerate() {
            if matches!(b, b'@' | b'-' | b'_' | b'A' | b'J' | b'b' | b'B') {
                literal |= literal_trigger(s, i, b);
            }
        }
    }
    Prescan { digits, colons, literal }
}

/// Whether `b` can be part of a phone, card or IPv4 match (all their characters are these).
fn in_numeric_run(b: u8) -> bool {
    b.is_ascii_digit() || matches!(b, b' ' | b'.' | b'(' | b')' | b'+' | b'-')
}

/// Whether `b` can be part of an IPv6 match.
fn in_hex_run(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b':' || b == b'.'
}

/// Each maximal run of digits among ` .()+-` with at least 4 digits near 3 others: `f(start,
/// end, digits, dots)`. A phone, card or IPv4 match lies inside one such run: its characters are
/// all run characters, and it has 4 digits within 13 bytes (at most 3 characters, `) (`, between
/// two of its digits), so two consecutive 16-byte blocks hold 4 digits. Only around such blocks
/// are runs looked for; a run found there is measured whole.
fn numeric_runs(s: &[u8], mut f: impl FnMut(usize, usize, u32, u32)) {
    const BLOCK: usize = 16;
    // Digits before `searched` were looked at; processed runs end at or before `floor`.
    let (mut searched, mut floor, mut prev) = (0usize, 0usize, 0u32);
    for (k, block) in s.chunks(BLOCK).enumerate() {
        let cur = block.iter().fold(0u32, |n, b| n + u32::from(b.is_ascii_digit()));
        if prev + cur >= 4 {
            let limit = k * BLOCK + block.len();
            let mut j = searched.max(k.saturating_sub(1) * BLOCK);
            while j < limit {
                let Some(p) = s[j..limit].iter().position(u8::is_ascii_digit) else { break };
                let mut start = j + p;
                while start > floor && in_numeric_run(s[start - 1]) {
                    start -= 1;
                }
                let (mut end, mut digits, mut dots) = (start, 0u32, 0u32);
                while end < s.len() && in_numeric_run(s[end]) {
                    digits += u32::from(s[end].is_ascii_digit());
                    dots += u32::from(s[end] == b'.');
                    end += 1;
                }
                if digits >= 4 {
                    f(start, end, digits, dots);
                }
                floor = end;
                j = end;
            }
            searched = j.max(limit);
        }
        prev = cur;
    }
}

/// Each maximal run of hex digits, colons and dots with two colons and a decimal digit:
/// `f(start, end)`. An IPv6 match lies inside one such run.
fn hex_runs(text: &str, mut f: impl FnMut(usize, usize)) {
    let s = text.as_bytes();
    let mut i = 0;
    // `str::find` of an ASCII character is a memchr.
    while let Some(p) = text[i..].find(':') {
        let mut start = i + p;
        while start > i && in_hex_run(s[start - 1]) {
            start -= 1;
        }
        let (mut end, mut colons, mut digit) = (start, 0u32, false);
        while end < s.len() && in_hex_run(s[end]) {
            colons += u32::from(s[end] == b':');
            digit |= s[end].is_ascii_digit();
            end += 1;
        }
        if colons >= 2 && digit {
            f(start, end);
        }
        i = end;
    }
}

/// The end of the character after `end` (the context a match's last `\b` looks at).
fn with_next_char(s: &str, end: usize) -> usize {
    end + s[end..].chars().next().map_or(0, char::len_utf8)
}

#[inline]
fn literal_trigger(s: &[u8], i: usize, b: u8) -> u8 {
    let before = |n: usize, lit: &[u8]| i >= n && &s[i - n..i - n + lit.len()] == lit;
    let after = |lit: &[u8]| s.len() > i + lit.len() && &s[i + 1..=i + lit.len()] == lit;
    match b {
        b'@' => T_EMAIL,
        b'-' if before(2, b"sk") || before(4, b"xox") => T_API_KEY,
        b'_' if before(3, b"gh") || before(10, b"github_pat") => T_API_KEY,
        b'A' if after(b"KIA") || after(b"SIA") || after(b"Iza") => T_API_KEY,
        b'J' if before(2, b"ey") => T_API_KEY,
        b'b' | b'B' if s.len() > i + 5 && s[i + 1..i + 6].eq_ignore_ascii_case(b"earer") => T_BEARER,
        _ => 0,
    }
}

/// One finding: a byte range and its label.
#[derive(Debug, Clone, Copy)]
struct Hit {
    start: usize,
    end: usize,
    label: u16,
}

/// Where to search again after a candidate: past it, or from its next character.
enum Verdict {
    Accept(usize, usize),
    SkipPast,
    RetryNext,
}

/// Every match of `re` in `s` from byte `from` that `judge` accepts.
fn scan(re: &Regex, s: &str, from: usize, label: u16, hits: &mut Vec<Hit>, mut judge: impl FnMut(usize, usize) -> Verdict) {
    let mut at = from;
    while at < s.len() {
        let Some(m) = re.find_at(s, at) else { break };
        let next = match judge(m.start(), m.end()) {
            Verdict::Accept(a, b) => {
                hits.push(Hit { start: a, end: b, label });
                b.max(m.start() + 1)
            }
            Verdict::SkipPast => m.end().max(m.start() + 1),
            Verdict::RetryNext => m.start() + 1,
        };
        at = next;
        while at < s.len() && !s.is_char_boundary(at) {
            at += 1;
        }
    }
}

fn byte_before(s: &[u8], i: usize) -> Option<u8> {
    i.checked_sub(1).map(|j| s[j])
}

fn byte_at(s: &[u8], i: usize) -> Option<u8> {
    s.get(i).copied()
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn luhn(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.rev().enumerate() {
        let mut v = u32::from(d);
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

fn digits_of(b: &[u8]) -> impl DoubleEndedIterator<Item = u8> + '_ {
    b.iter().filter(|c| c.is_ascii_digit()).map(|c| c - b'0')
}

/// A decimal point glued to the candidate (`0.4111…`, `4111….5`) makes it part of a number.
fn in_decimal(s: &[u8], start: usize, end: usize) -> bool {
    (byte_before(s, start) == Some(b'.') && start >= 2 && s[start - 2].is_ascii_digit())
        || (byte_at(s, end) == Some(b'.') && byte_at(s, end + 1).is_some_and(|b| b.is_ascii_digit()))
}

fn judge_card(s: &[u8], start: usize, end: usize) -> Verdict {
    if in_decimal(s, start, end) {
        return Verdict::RetryNext;
    }
    let cand = &s[start..end];
    if luhn(digits_of(cand)) {
        return Verdict::Accept(start, end);
    }
    // A card next to another group of digits (`4111 1111 1111 1111 20`, `ref 55 4111 …`): the
    // run of whole groups with the most digits that is card-shaped and passes the check.
    let seps: Vec<usize> = (0..cand.len()).filter(|i| !cand[*i].is_ascii_digit()).collect();
    let starts = std::iter::once(0).chain(seps.iter().map(|i| i + 1));
    let mut best: Option<(usize, usize, usize)> = None;
    for a in starts {
        for b in seps.iter().copied().filter(|b| *b > a).chain(std::iter::once(cand.len())) {
            let n = digits_of(&cand[a..b]).count();
            let better = best.is_none_or(|(_, _, m)| n > m);
            if (13..=19).contains(&n) && better && (b'2'..=b'6').contains(&cand[a]) && luhn(digits_of(&cand[a..b])) {
                best = Some((a, b, n));
            }
        }
    }
    match best {
        Some((a, b, _)) if (a, b) != (0, cand.len()) => Verdict::Accept(start + a, start + b),
        _ => Verdict::RetryNext,
    }
}

fn judge_ipv4(s: &[u8], start: usize, end: usize) -> Verdict {
    let glued_before = byte_before(s, start) == Some(b'.') && start >= 2 && s[start - 2].is_ascii_digit();
    let glued_after = byte_at(s, end) == Some(b'.') && byte_at(s, end + 1).is_some_and(|b| b.is_ascii_digit());
    if glued_before || glued_after { Verdict::RetryNext } else { Verdict::Accept(start, end) }
}

fn judge_ipv6(text: &str, start: usize, mut end: usize) -> Verdict {
    let s = text.as_bytes();
    if byte_before(s, start).is_some_and(|b| is_word(b) || b == b'.') {
        return Verdict::SkipPast;
    }
    let mut cand = &text[start..end];
    // A sentence's colon after an address: `2001:db8::1: refused`.
    if cand.ends_with(':') && !cand.ends_with("::") {
        cand = &cand[..cand.len() - 1];
        end -= 1;
    }
    let after_ok = match byte_at(s, end) {
        None => true,
        Some(b':') => !byte_at(s, end + 1).is_some_and(|b| b.is_ascii_hexdigit() || b == b':'),
        Some(b) => !is_word(b),
    };
    if after_ok && cand.bytes().any(|b| b.is_ascii_digit()) && cand.parse::<Ipv6Addr>().is_ok() {
        Verdict::Accept(start, end)
    } else {
        Verdict::SkipPast
    }
}

fn judge_phone(text: &str, start: usize, end: usize) -> Verdict {
    let s = text.as_bytes();
    let cand = &s[start..end];
    let digits = digits_of(cand).count();
    let before = byte_before(s, start);
    let after = byte_at(s, end);
    // Digits that go on (`…-1234-5678`, `12:30`, `4567/89`) make it something else.
    let glued_after = match after {
        None => false,
        Some(b) if is_word(b) || matches!(b, b'-' | b'/' | b':' | b'+') => true,
        Some(b'.') => byte_at(s, end + 1).is_some_and(|b| b.is_ascii_digit()),
        Some(_) => false,
    };
    if glued_after {
        return Verdict::SkipPast;
    }
    if cand[0] == b'+' {
        let ok = (9..=15).contains(&digits) && !before.is_some_and(|b| is_word(b) || b == b'+');
        return if ok { Verdict::Accept(start, end) } else { Verdict::SkipPast };
    }
    let glued_before = before.is_some_and(|b| is_word(b) || matches!(b, b'-' | b'.' | b'/' | b'+' | b':'));
    if glued_before || !(9..=12).contains(&digits) || is_date(cand) || text[start..end].parse::<Ipv4Addr>().is_ok() {
        return Verdict::SkipPast;
    }
    Verdict::Accept(start, end)
}

/// `2026-12-02…` or `02.12.2026…`: a date with something after it.
fn is_date(cand: &[u8]) -> bool {
    let groups: Vec<&[u8]> = cand.split(|b| !b.is_ascii_digit()).filter(|g| !g.is_empty()).take(3).collect();
    let num = |g: &[u8]| g.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    match groups.as_slice() {
        [y, m, d] if y.len() == 4 && m.len() == 2 && d.len() == 2 => (1..=12).contains(&num(m)) && (1..=31).contains(&num(d)),
        [d, m, y] if d.len() == 2 && m.len() == 2 && y.len() == 4 => (1..=12).contains(&num(m)) && (1..=31).contains(&num(d)),
        _ => false,
    }
}

fn bearer_token_ok(token: &str) -> bool {
    token.len() >= 8 && !token.bytes().all(|b| b.is_ascii_lowercase())
}

// ---------------------------------------------------------------------------------------------
// JSON inside strings

enum JsonOutcome {
    NotJson,
    Unchanged,
    Changed(String),
}

fn is_json_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn looks_like_json(s: &str) -> bool {
    matches!(s.as_bytes().iter().find(|b| !is_json_ws(**b)), Some(b'{' | b'['))
}

/// Apply `f` to each string value (not object key) of the JSON text `s`; `f` returns the new
/// value when it changes one. The result is compact (no whitespace outside strings); keys,
/// numbers and untouched strings are copied as written.
fn rewrite_json(s: &str, mut f: impl FnMut(&str) -> Option<String>) -> JsonOutcome {
    if serde_json::from_str::<serde::de::IgnoredAny>(s).is_err() {
        return JsonOutcome::NotJson;
    }
    let b = s.as_bytes();
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = i + 1;
        let mut escaped = false;
        while j < b.len() && b[j] != b'"' {
            if b[j] == b'\\' {
                escaped = true;
                j += 1;
            }
            j += 1;
        }
        let end = (j + 1).min(b.len());
        let mut k = end;
        while k < b.len() && is_json_ws(b[k]) {
            k += 1;
        }
        if b.get(k) != Some(&b':') {
            let value: Cow<'_, str> = if escaped {
                match serde_json::from_str::<String>(&s[start..end]) {
                    Ok(v) => Cow::Owned(v),
                    // A lone surrogate escape: the caller treats the text as plain.
                    Err(_) => return JsonOutcome::NotJson,
                }
            } else {
                Cow::Borrowed(&s[start + 1..end - 1])
            };
            if let Some(new) = f(&value) {
                edits.push((start, end, new));
            }
        }
        i = end;
    }
    if edits.is_empty() {
        return JsonOutcome::Unchanged;
    }
    let mut out = String::with_capacity(s.len() + edits.iter().map(|e| e.2.len()).sum::<usize>());
    let mut pos = 0;
    for (start, end, new) in &edits {
        push_compact(&mut out, &s[pos..*start]);
        push_json_string(&mut out, new);
        pos = *end;
    }
    push_compact(&mut out, &s[pos..]);
    JsonOutcome::Changed(out)
}

/// Copy complete JSON tokens, leaving out whitespace between them.
fn push_compact(out: &mut String, chunk: &str) {
    let b = chunk.as_bytes();
    let (mut i, mut run) = (0, 0);
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
        } else if is_json_ws(c) {
            out.push_str(&chunk[run..i]);
            run = i + 1;
        }
        i += 1;
    }
    out.push_str(&chunk[run..]);
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[run..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 0xf) as usize] as char);
            }
        }
        run = i + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

// ---------------------------------------------------------------------------------------------
// The redactor

fn sha256_tagged(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::ids::to_hex(&Sha256::digest(bytes)))
}

fn floor_char_boundary(s: &str, n: usize) -> usize {
    if n >= s.len() {
        return s.len();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

#[derive(Debug)]
struct Inner {
    actions: Vec<Action>,
    keys: KeyIndex,
    /// The pre-scan triggers of the enabled detectors.
    triggers: u8,
    builtins: Option<&'static Builtins>,
    patterns: Vec<Regex>,
    /// `[REDACTED:<name>]` by label.
    replacements: Vec<String>,
    hash: String,
}

/// Compiled `[redaction]` rules, cheap to clone (shared) and usable from any thread.
#[derive(Debug, Clone)]
pub struct Redactor {
    inner: Arc<Inner>,
}

impl Redactor {
    /// Compile and check `config`: actions, key patterns, detector names, pattern names and
    /// regular expressions (each compiled to at most [`MAX_REGEX_BYTES`]), and the limits
    /// [`MAX_RULES`], [`MAX_PATTERNS`] and [`MAX_KEYS_PER_RULE`].
    ///
    /// ```
    /// use rltrace_core::redact::{RedactionConfig, Redactor};
    /// let config: RedactionConfig = toml::from_str("[[rules]]\nkeys = [\"note\"]\naction = \"mask\"").unwrap();
    /// let r = Redactor::new(&config).unwrap();
    /// assert_eq!(r.mask_text("mail bob@example.com"), "mail [REDACTED:email]");
    /// let bad: RedactionConfig = toml::from_str("[[rules]]\nkeys = [\"a\"]\naction = \"truncate:0\"").unwrap();
    /// assert!(Redactor::new(&bad).unwrap_err().to_string().contains("truncate:N"));
    /// ```
    pub fn new(config: &RedactionConfig) -> Result<Redactor, RedactError> {
        if config.rules.len() > MAX_RULES {
            return Err(RedactError::TooMany { what: "rules".into(), count: config.rules.len(), max: MAX_RULES });
        }
        if config.patterns.len() > MAX_PATTERNS {
            return Err(RedactError::TooMany { what: "patterns".into(), count: config.patterns.len(), max: MAX_PATTERNS });
        }
        let mut actions = Vec::with_capacity(config.rules.len());
        let mut keys = KeyIndex::default();
        for (i, rule) in config.rules.iter().enumerate() {
            if rule.keys.is_empty() {
                return Err(RedactError::NoKeys { rule: i });
            }
            if rule.keys.len() > MAX_KEYS_PER_RULE {
                return Err(RedactError::TooMany { what: format!("rules[{i}].keys"), count: rule.keys.len(), max: MAX_KEYS_PER_RULE });
            }
            let action = Action::parse(i, &rule.action)?;
            for (k, key) in rule.keys.iter().enumerate() {
                if key.is_empty() {
                    return Err(RedactError::EmptyKey { rule: i, key: k });
                }
                // At most MAX_RULES rules: the index fits.
                keys.add(key, i as u32);
            }
            actions.push(action);
        }
        let mut detectors = 0u8;
        match &config.detectors {
            None => detectors = D_EMAIL | D_PHONE | D_CARD | D_IP | D_API_KEY | D_BEARER,
            Some(names) => {
                for n in names {
                    detectors |= detector_bit(n).ok_or_else(|| RedactError::Detector(n.clone()))?;
                }
            }
        }
        let mut replacements: Vec<String> = DETECTORS.iter().map(|d| format!("[REDACTED:{d}]")).collect();
        let mut patterns = Vec::with_capacity(config.patterns.len());
        for (i, p) in config.patterns.iter().enumerate() {
            let name_ok = (1..=64).contains(&p.name.len()) && p.name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !name_ok {
                return Err(RedactError::PatternName { index: i, name: p.name.clone() });
            }
            if config.patterns[..i].iter().any(|q| q.name == p.name) {
                return Err(RedactError::DuplicatePattern { index: i, name: p.name.clone() });
            }
            if p.regex.is_empty() {
                return Err(RedactError::Regex { index: i, name: p.name.clone(), message: "empty regular expression".into() });
            }
            let re = RegexBuilder::new(&p.regex).size_limit(MAX_REGEX_BYTES).dfa_size_limit(2 * MAX_REGEX_BYTES).build().map_err(|e| match e {
                regex::Error::CompiledTooBig(limit) => RedactError::RegexTooLarge { index: i, name: p.name.clone(), limit },
                other => RedactError::Regex { index: i, name: p.name.clone(), message: other.to_string() },
            })?;
            patterns.push(re);
            replacements.push(format!("[REDACTED:{}]", p.name));
        }
        let hash = canonical_hash(config, &actions, detectors);
        Ok(Redactor {
            inner: Arc::new(Inner { actions, keys, triggers: triggers_of(detectors), builtins: Some(builtins()?), patterns, replacements, hash }),
        })
    }

    /// A redactor without rules: [`Redactor::apply`] changes nothing.
    pub fn none() -> Redactor {
        let config = RedactionConfig::default();
        Redactor::new(&config).unwrap_or_else(|_| Redactor {
            inner: Arc::new(Inner {
                actions: Vec::new(),
                keys: KeyIndex::default(),
                triggers: 0,
                builtins: None,
                patterns: Vec::new(),
                replacements: Vec::new(),
                hash: canonical_hash(&config, &[], 0),
            }),
        })
    }

    /// Whether there are no rules (then [`Redactor::apply`] is a no-op).
    pub fn is_empty(&self) -> bool {
        self.inner.actions.is_empty()
    }

    /// `sha256:<hex>` of a canonical form of the configuration in effect: the rules (key
    /// patterns as written, actions normalised: `truncate:010` is `truncate:10`), the patterns
    /// (names and expressions) and the enabled detectors (sorted; absent means all six). Stable
    /// across runs and builds; any change to a rule, a pattern or the detectors changes it.
    pub fn hash(&self) -> String {
        self.inner.hash.clone()
    }

    /// Redact the span's attributes and every event's attributes in place. The resource is
    /// shared and is not touched: see [`Redactor::apply_origin`] and [`Redactor::apply_all`].
    pub fn apply(&self, span: &mut SpanRecord) {
        if self.is_empty() {
            return;
        }
        self.redact_attrs(&mut span.attributes);
        for e in &mut span.events {
            self.redact_attrs(&mut e.attributes);
            self.redact_text(EVENT_NAME_KEY, &mut e.name, "redacted");
        }
        for l in &mut span.extras.links {
            self.redact_attrs(&mut l.attributes);
        }
        self.redact_text(SPAN_NAME_KEY, &mut span.name, "redacted");
        self.redact_text(STATUS_MESSAGE_KEY, &mut span.status_message, "");
    }

    /// A text that is not an attribute (a span's name, its status message, an event's name),
    /// redacted as the attribute `key` would be; a dropped one becomes `dropped`.
    fn redact_text(&self, key: &str, text: &mut String, dropped: &str) {
        if text.is_empty() || self.inner.keys.lookup(key).is_none() {
            return;
        }
        let mut attrs: Attributes = vec![(key.to_string(), AttrValue::Str(std::mem::take(text)))];
        self.redact_attrs(&mut attrs);
        *text = match attrs.pop() {
            Some((_, AttrValue::Str(s))) => s,
            Some((_, other)) => other.to_json().to_string(),
            None => dropped.to_string(),
        };
    }

    /// A redacted copy of a resource when a rule changed anything in its attributes, `None`
    /// when nothing changed (no key matched, or matched values had nothing to redact).
    pub fn apply_origin(&self, origin: &Origin) -> Option<Origin> {
        if self.is_empty() || !origin.resource.iter().any(|(k, _)| self.inner.keys.lookup(k).is_some()) {
            return None;
        }
        let mut copy = origin.clone();
        self.redact_attrs(&mut copy.resource).then_some(copy)
    }

    /// [`Redactor::apply`] on each span, and [`Redactor::apply_origin`] on each distinct
    /// resource: spans that shared a resource share its redacted copy.
    pub fn apply_all(&self, spans: &mut [SpanRecord]) {
        if self.is_empty() {
            return;
        }
        // (original, replacement) of the resources seen, newest last; a batch has few.
        let mut seen: Vec<(Arc<Origin>, Arc<Origin>)> = Vec::new();
        for span in spans {
            self.apply(span);
            if let Some((_, redacted)) = seen.iter().rev().take(16).find(|(o, _)| Arc::ptr_eq(o, &span.origin)) {
                span.origin = Arc::clone(redacted);
                continue;
            }
            let original = Arc::clone(&span.origin);
            if let Some(o) = self.apply_origin(&original) {
                span.origin = Arc::new(o);
            }
            seen.push((original, Arc::clone(&span.origin)));
        }
    }

    /// The enabled detectors and the patterns on one plain string: each finding replaced by
    /// `[REDACTED:<name>]` (borrowed back, without a copy, when nothing is found). JSON is not
    /// looked into here.
    pub fn mask_text<'a>(&self, s: &'a str) -> Cow<'a, str> {
        let mut hits = Vec::new();
        self.find_hits(s, &mut hits);
        if hits.is_empty() {
            return Cow::Borrowed(s);
        }
        hits.sort_unstable_by_key(|h| (h.start, Reverse(h.end), priority(h.label)));
        let mut out = String::with_capacity(s.len() + 16 * hits.len());
        let mut pos = 0;
        for h in hits {
            if h.start < pos {
                continue;
            }
            out.push_str(&s[pos..h.start]);
            out.push_str(&self.inner.replacements[h.label as usize]);
            pos = h.end;
        }
        out.push_str(&s[pos..]);
        Cow::Owned(out)
    }

    fn find_hits(&self, s: &str, hits: &mut Vec<Hit>) {
        let inner = &*self.inner;
        let enabled = inner.triggers;
        if let Some(b) = inner.builtins
            && enabled != 0
        {
            let bytes = s.as_bytes();
            let pre = prescan(bytes);
            let literal = pre.literal & enabled;
            if literal & T_BEARER != 0 {
                scan(&b.bearer, s, 0, L_BEARER, hits, |start, end| {
                    let mut tok = start + "bearer".len();
                    while tok < end && matches!(bytes[tok], b' ' | b'\t') {
                        tok += 1;
                    }
                    if bearer_token_ok(&s[tok..end]) { Verdict::Accept(tok, end) } else { Verdict::SkipPast }
                });
            }
            if literal & T_API_KEY != 0 {
                scan(&b.api_key, s, 0, L_API_KEY, hits, Verdict::Accept);
            }
            if literal & T_EMAIL != 0 {
                scan(&b.email, s, 0, L_EMAIL, hits, Verdict::Accept);
            }
            // Phone, card and IPv4 regexes run on the runs of characters they are made of
            // only (with the next character, for `\b`), so long prose costs a pass, not a
            // regex scan per detector.
            if enabled & (T_PHONE | T_CARD | T_IPV4) != 0 && pre.digits >= 4 {
                numeric_runs(bytes, |start, end, digits, dots| {
                    let window = &s[..with_next_char(s, end)];
                    if enabled & T_CARD != 0 && digits >= 13 {
                        scan(&b.card, window, start, L_CARD, hits, |x, y| judge_card(bytes, x, y));
                    }
                    if enabled & T_IPV4 != 0 && dots >= 3 {
                        scan(&b.ipv4, window, start, L_IP, hits, |x, y| judge_ipv4(bytes, x, y));
                    }
                    if enabled & T_PHONE != 0 && digits >= 9 {
                        scan(&b.phone, window, start, L_PHONE, hits, |x, y| judge_phone(s, x, y));
                    }
                });
            }
            if enabled & T_IPV6 != 0 && pre.colons >= 2 && pre.digits >= 1 {
                hex_runs(s, |start, end| {
                    let window = &s[..with_next_char(s, end)];
                    scan(&b.ipv6, window, start, L_IP, hits, |x, y| judge_ipv6(s, x, y));
                });
            }
        }
        for (i, re) in inner.patterns.iter().enumerate() {
            let label = (DETECTORS.len() + i) as u16;
            hits.extend(re.find_iter(s).filter(|m| !m.is_empty()).map(|m| Hit { start: m.start(), end: m.end(), label }));
        }
    }

    /// Whether `mask` can find anything at all (some detector or pattern is enabled).
    fn mask_may_find(&self) -> bool {
        let inner = &*self.inner;
        !inner.patterns.is_empty() || (inner.builtins.is_some() && inner.triggers != 0)
    }

    /// Redact a list of attributes; whether anything changed.
    fn redact_attrs(&self, attrs: &mut Attributes) -> bool {
        let inner = &*self.inner;
        let (mut changed, mut drops) = (false, false);
        for (k, v) in attrs.iter_mut() {
            if let Some(r) = inner.keys.lookup(k) {
                match inner.actions[r as usize] {
                    Action::Drop => drops = true,
                    a => changed |= self.redact_value(a, v),
                }
            }
        }
        if drops {
            attrs.retain(|(k, _)| inner.keys.lookup(k).is_none_or(|r| inner.actions[r as usize] != Action::Drop));
            changed = true;
        }
        changed
    }

    fn redact_value(&self, action: Action, v: &mut AttrValue) -> bool {
        match v {
            AttrValue::Empty => false,
            AttrValue::Str(s) => self.redact_string(action, s),
            AttrValue::Array(items) => items.iter_mut().fold(false, |c, x| self.redact_value(action, x) | c),
            AttrValue::Map(entries) => entries.iter_mut().fold(false, |c, (_, x)| self.redact_value(action, x) | c),
            AttrValue::Bytes(b) => {
                if action == Action::Hash {
                    *v = AttrValue::Str(sha256_tagged(b));
                    true
                } else {
                    false
                }
            }
            AttrValue::Bool(_) | AttrValue::Int(_) | AttrValue::Double(_) => {
                if action == Action::Hash {
                    let text = match v {
                        AttrValue::Bool(b) => b.to_string(),
                        AttrValue::Int(i) => i.to_string(),
                        AttrValue::Double(d) => serde_json::Number::from_f64(*d).map_or_else(|| d.to_string(), |n| n.to_string()),
                        _ => String::new(),
                    };
                    *v = AttrValue::Str(sha256_tagged(text.as_bytes()));
                    true
                } else {
                    false
                }
            }
        }
    }

    fn redact_string(&self, action: Action, s: &mut String) -> bool {
        let outcome = match action {
            Action::Drop => return false,
            Action::Hash => {
                if looks_like_json(s) { rewrite_json(s, |v| Some(sha256_tagged(v.as_bytes()))) } else { JsonOutcome::NotJson }
            }
            Action::Truncate(n) => {
                if s.len() <= n {
                    return false;
                }
                if looks_like_json(s) {
                    rewrite_json(s, |v| (v.len() > n).then(|| v[..floor_char_boundary(v, n)].to_string()))
                } else {
                    JsonOutcome::NotJson
                }
            }
            Action::Mask => {
                if !self.mask_may_find() {
                    return false;
                }
                // JSON is walked value by value: each decoded string gets its own pre-scan, so
                // keys, punctuation and escapes cost nothing and hide nothing.
                if looks_like_json(s) {
                    rewrite_json(s, |v| match self.mask_text(v) {
                        Cow::Owned(o) => Some(o),
                        Cow::Borrowed(_) => None,
                    })
                } else {
                    JsonOutcome::NotJson
                }
            }
        };
        match outcome {
            JsonOutcome::Changed(new) => {
                *s = new;
                true
            }
            JsonOutcome::Unchanged => false,
            JsonOutcome::NotJson => match action {
                Action::Drop => false,
                Action::Hash => {
                    *s = sha256_tagged(s.as_bytes());
                    true
                }
                Action::Truncate(n) => {
                    let cut = floor_char_boundary(s, n);
                    let changed = cut < s.len();
                    s.truncate(cut);
                    changed
                }
                Action::Mask => match self.mask_text(s) {
                    Cow::Owned(o) => {
                        *s = o;
                        true
                    }
                    Cow::Borrowed(_) => false,
                },
            },
        }
    }
}

fn canonical_hash(config: &RedactionConfig, actions: &[Action], detectors: u8) -> String {
    use serde_json::json;
    let mut names: Vec<&str> = DETECTORS.iter().copied().filter(|d| detector_bit(d).is_some_and(|b| detectors & b != 0)).collect();
    names.sort_unstable();
    let canonical = json!({
        "format": 1,
        "rules": config.rules.iter().zip(actions).map(|(r, a)| json!({"keys": r.keys, "action": a.canonical()})).collect::<Vec<_>>(),
        "patterns": config.patterns.iter().map(|p| json!({"name": p.name, "regex": p.regex})).collect::<Vec<_>>(),
        "detectors": names,
    });
    sha256_tagged(canonical.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::SpanEvent;

    fn cfg(toml_text: &str) -> RedactionConfig {
        toml::from_str(toml_text).expect("toml")
    }

    fn r(toml_text: &str) -> Redactor {
        Redactor::new(&cfg(toml_text)).expect("redactor")
    }

    fn masker() -> Redactor {
        r("[[rules]]\nkeys = [\"*\"]\naction = \"mask\"")
    }

    fn err(toml_text: &str) -> String {
        Redactor::new(&cfg(toml_text)).expect_err("refused").to_string()
    }

    fn span(attributes: Attributes) -> SpanRecord {
        SpanRecord {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            name: "step".into(),
            kind: 1,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            status_code: 0,
            status_message: "mail a@b.io".into(),
            attributes,
            events: Vec::new(),
            origin: Arc::default(),
            extras: Default::default(),
        }
    }

    fn s(v: &str) -> AttrValue {
        AttrValue::Str(v.to_string())
    }

    fn sha(v: &str) -> String {
        sha256_tagged(v.as_bytes())
    }

    fn check(m: &Redactor, cases: &[(&str, &str)]) {
        for (input, want) in cases {
            assert_eq!(m.mask_text(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn email() {
        check(
            &masker(),
            &[
                ("mail alice.smith+x@example.co.uk now", "mail [REDACTED:email] now"),
                ("<bob@example.com>, carol_d@sub.mail-host.org.", "<[REDACTED:email]>, [REDACTED:email]."),
                ("é ann@example.com é", "é [REDACTED:email] é"),
                ("@handle and a@b and x@localhost", "@handle and a@b and x@localhost"),
            ],
        );
    }

    #[test]
    fn phone() {
        check(
            &masker(),
            &[
                ("call +1 415 555 2671 now", "call [REDACTED:phone] now"),
                ("call +14155552671.", "call [REDACTED:phone]."),
                ("+44 (0)20 7946 0958", "[REDACTED:phone]"),
                ("+33 6 12 34 56 78", "[REDACTED:phone]"),
                ("+49-30-1234567", "[REDACTED:phone]"),
                ("us (555) 123-4567, 555-123-4567, 555.123.4567", "us [REDACTED:phone], [REDACTED:phone], [REDACTED:phone]"),
                ("fr 06 12 34 56 78; de 030 12345678; uk 020 7946 0958", "fr [REDACTED:phone]; de [REDACTED:phone]; uk [REDACTED:phone]"),
                // Look-alikes are kept.
                ("on 2026-12-02 at 12:30:45", "on 2026-12-02 at 12:30:45"),
                ("at 2026-12-02 10:30 and 02.12.2026 10:30", "at 2026-12-02 10:30 and 02.12.2026 10:30"),
                ("ts 2026-12-02T10:30:00.123456Z", "ts 2026-12-02T10:30:00.123456Z"),
                ("id 5e0c1d2a-7b3f-4a6e-9c1d-2a7b3f4a6e9c", "id 5e0c1d2a-7b3f-4a6e-9c1d-2a7b3f4a6e9c"),
                ("id 12345678-1234-1234-1234-123456789012", "id 12345678-1234-1234-1234-123456789012"),
                ("n=12345, year 2024, epoch 1700000000, 5551234567", "n=12345, year 2024, epoch 1700000000, 5551234567"),
                ("v 1.2.3.4.5 and 3.14159 2.71828", "v 1.2.3.4.5 and 3.14159 2.71828"),
                ("12 34 56 78", "12 34 56 78"),
                ("555 123 4567 8901 2345", "555 123 4567 8901 2345"),
                ("1+234567890123", "1+234567890123"),
            ],
        );
    }

    #[test]
    fn card() {
        check(
            &masker(),
            &[
                ("card 4111 1111 1111 1111 ok", "card [REDACTED:card] ok"),
                ("4111-1111-1111-1111", "[REDACTED:card]"),
                ("4111111111111111", "[REDACTED:card]"),
                ("mc 5555555555554444 amex 378282246310005", "mc [REDACTED:card] amex [REDACTED:card]"),
                ("disc 6011 1111 1111 1117", "disc [REDACTED:card]"),
                ("4111 1111 1111 1111 20", "[REDACTED:card] 20"),
                ("ref 55 4111 1111 1111 1111", "ref 55 [REDACTED:card]"),
                // Luhn fails, or not a card shape.
                ("card 4111 1111 1111 1112 kept", "card 4111 1111 1111 1112 kept"),
                ("4111111111111112", "4111111111111112"),
                ("ms 1700000000000 ns 1700000000000000000", "ms 1700000000000 ns 1700000000000000000"),
                ("4111  1111  1111  1111", "4111  1111  1111  1111"),
                ("x 0.4111111111111111", "x 0.4111111111111111"),
                ("41111111111111111111111", "41111111111111111111111"),
            ],
        );
    }

    #[test]
    fn ip() {
        check(
            &masker(),
            &[
                ("from 192.168.10.254 and 10.0.0.1:8080", "from [REDACTED:ip] and [REDACTED:ip]:8080"),
                ("0.0.0.0 255.255.255.255", "[REDACTED:ip] [REDACTED:ip]"),
                ("v6 2001:db8::8a2e:370:7334 and ::1", "v6 [REDACTED:ip] and [REDACTED:ip]"),
                ("2001:0db8:85a3:0000:0000:8a2e:0370:7334", "[REDACTED:ip]"),
                ("fe80::1%eth0, [2001:db8::1]:443", "[REDACTED:ip]%eth0, [[REDACTED:ip]]:443"),
                ("mapped ::ffff:192.0.2.1", "mapped [REDACTED:ip]"),
                ("peer 2001:db8::1: refused", "peer [REDACTED:ip]: refused"),
                // Look-alikes are kept.
                ("256.1.1.1 1.2.3 1.2.3.4.5 v10.1.2.3", "256.1.1.1 1.2.3 1.2.3.4.5 v10.1.2.3"),
                ("at 12:30:45, use std::io::Read; abc::def; u8::MAX", "at 12:30:45, use std::io::Read; abc::def; u8::MAX"),
                ("mac 00:1A:2B:3C:4D:5E", "mac 00:1A:2B:3C:4D:5E"),
            ],
        );
    }

    #[test]
    fn api_keys_and_bearer_tokens() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLWJ5dGVz";
        check(
            &masker(),
            &[
                ("key sk-proj-abcdefghijklmnop1234 end", "key [REDACTED:api_key] end"),
                ("sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv_-12", "[REDACTED:api_key]"),
                ("sk-abcdefghijklmnopqrstuvwxyz012345", "[REDACTED:api_key]"),
                ("gh ghp_abcdefghijklmnopqrstuvwxyz0123456789 gho_ABCDEFGHIJKLMNOPQRSTUVWX", "gh [REDACTED:api_key] [REDACTED:api_key]"),
                ("ghs_0123456789abcdefghijABCDEFGHIJ", "[REDACTED:api_key]"),
                ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "[REDACTED:api_key]"),
                ("aws AKIAIOSFODNN7EXAMPLE ok", "aws [REDACTED:api_key] ok"),
                ("slack xoxb-1234567890-abcdefghij", "slack [REDACTED:api_key]"),
                ("AIzaSyA-1234567890abcdefghijklmnopqrstu", "[REDACTED:api_key]"),
                (&format!("jwt {jwt}."), "jwt [REDACTED:api_key]."),
                ("Authorization: Bearer abc.def-ghi_jkl", "Authorization: Bearer [REDACTED:bearer]"),
                ("authorization: bearer tokSECRETabcdefgh", "authorization: bearer [REDACTED:bearer]"),
                ("BEARER\tdGhpcyBpcyBh/dG9rZW4+==", "BEARER\t[REDACTED:bearer]"),
                (&format!("Bearer {jwt}"), "Bearer [REDACTED:bearer]"),
                // Look-alikes are kept.
                ("task-abcdefghijklmnopqrstuvwxyz sk-short", "task-abcdefghijklmnopqrstuvwxyz sk-short"),
                ("AKIA123 ghp_short xoxz-1234567890ab eyJhbGciOiJIUzI1NiJ9", "AKIA123 ghp_short xoxz-1234567890ab eyJhbGciOiJIUzI1NiJ9"),
                ("the bearer instrument; Bearer abc", "the bearer instrument; Bearer abc"),
            ],
        );
    }

    #[test]
    fn mask_text_borrows_when_nothing_is_found() {
        let m = masker();
        assert!(matches!(m.mask_text("nothing here, 12 items, 2026-12-02"), Cow::Borrowed(_)));
        assert!(matches!(m.mask_text(""), Cow::Borrowed(_)));
    }

    #[test]
    fn detectors_can_be_chosen_and_patterns_added() {
        let only_email = r("detectors = [\"email\"]\n[[rules]]\nkeys = [\"*\"]\naction = \"mask\"");
        assert_eq!(only_email.mask_text("a@b.io 10.0.0.1 4111111111111111"), "[REDACTED:email] 10.0.0.1 4111111111111111");
        let patterns_only = r("detectors = []\n[[rules]]\nkeys = [\"*\"]\naction = \"mask\"\n[[patterns]]\nname = \"ticket\"\nregex = \"JIRA-[0-9]+\"\n[[patterns]]\nname = \"empty.ok\"\nregex = \"x*\"");
        assert_eq!(patterns_only.mask_text("see JIRA-991 from a@b.io, xx"), "see [REDACTED:ticket] from a@b.io, [REDACTED:empty.ok]");
        let both = r("[[rules]]\nkeys = [\"*\"]\naction = \"mask\"\n[[patterns]]\nname = \"emp\"\nregex = \"EMP[0-9]{4}\"");
        assert_eq!(both.mask_text("EMP1234 mailed a@b.io"), "[REDACTED:emp] mailed [REDACTED:email]");
    }

    #[test]
    fn json_inside_strings_stays_json_with_keys_and_order_kept() {
        let m = r("[[rules]]\nkeys = [\"rl.state\"]\naction = \"mask\"");
        let state = r#"{ "z_email": "bob@example.com", "a@b.io": 1, "list": ["ok", "10.0.0.1", {"deep": "Bearer abcdefgh12345"}],
            "big": 123456789012345678901234567890, "f": 1.50, "t": true, "n": null, "esc": "quo\"te \u00e9 bob@example.com\n" }"#;
        let mut sp = span(vec![("rl.state".into(), s(state))]);
        m.apply(&mut sp);
        let want = r#"{"z_email":"[REDACTED:email]","a@b.io":1,"list":["ok","[REDACTED:ip]",{"deep":"Bearer [REDACTED:bearer]"}],"big":123456789012345678901234567890,"f":1.50,"t":true,"n":null,"esc":"quo\"te é [REDACTED:email]\n"}"#;
        assert_eq!(sp.attributes[0].1, s(want));
        let v: serde_json::Value = serde_json::from_str(want).expect("still JSON");
        assert_eq!(v["esc"], "quo\"te é [REDACTED:email]\n");
        // Nothing to mask: the text stays byte for byte, spaces included.
        let clean = "{ \"a\": \"fine\", \"b\": [1, 2] }";
        let mut sp = span(vec![("rl.state".into(), s(clean))]);
        m.apply(&mut sp);
        assert_eq!(sp.attributes[0].1, s(clean));
        // An escape cannot hide a finding: values are decoded first.
        let mut sp = span(vec![("rl.state".into(), s(r#"["bob\u0040example.com"]"#))]);
        m.apply(&mut sp);
        assert_eq!(sp.attributes[0].1, s(r#"["[REDACTED:email]"]"#));
        // Not JSON after all: masked as plain text.
        let mut sp = span(vec![("rl.state".into(), s("{not json: bob@example.com"))]);
        m.apply(&mut sp);
        assert_eq!(sp.attributes[0].1, s("{not json: [REDACTED:email]"));
    }

    #[test]
    fn hash_and_truncate_inside_json() {
        let m = r("[[rules]]\nkeys = [\"h\"]\naction = \"hash\"\n[[rules]]\nkeys = [\"t\"]\naction = \"truncate:3\"");
        let mut sp = span(vec![("h".into(), s(r#"{"k":"abc","n":7,"l":["x"]}"#)), ("t".into(), s(r#"[ "héllo", "ab", {"key_is_long": "abcdef"} ]"#))]);
        m.apply(&mut sp);
        assert_eq!(sp.attributes[0].1, s(&format!(r#"{{"k":"{}","n":7,"l":["{}"]}}"#, sha("abc"), sha("x"))));
        assert_eq!(sp.attributes[1].1, s(r#"["hé","ab",{"key_is_long":"abc"}]"#));
        // JSON without strings: nothing to hash inside.
        let mut sp = span(vec![("h".into(), s("[1, 2]"))]);
        m.apply(&mut sp);
        assert_eq!(sp.attributes[0].1, s("[1, 2]"));
    }

    #[test]
    fn truncate_cuts_at_a_character_boundary() {
        let t = |n: usize, v: &str| {
            let m = r(&format!("[[rules]]\nkeys = [\"k\"]\naction = \"truncate:{n}\""));
            let mut sp = span(vec![("k".into(), s(v))]);
            m.apply(&mut sp);
            sp.attributes[0].1.as_str().map(str::to_string).unwrap_or_default()
        };
        assert_eq!(t(2, "héllo"), "h", "é is bytes 1..3");
        assert_eq!(t(3, "héllo"), "hé");
        assert_eq!(t(5, "héllo"), "héll");
        assert_eq!(t(10, "héllo"), "héllo");
        assert_eq!(t(1, "€uro"), "", "a 3-byte character does not fit in 1 byte");
        assert_eq!(t(4, "€uro"), "€u");
        let m = r("[[rules]]\nkeys = [\"k\"]\naction = \"truncate:2\"");
        let mut sp = span(vec![("k".into(), AttrValue::Int(123456)), ("k".into(), AttrValue::Bytes(vec![1, 2, 3]))]);
        m.apply(&mut sp);
        assert_eq!(sp.attributes, vec![("k".into(), AttrValue::Int(123456)), ("k".into(), AttrValue::Bytes(vec![1, 2, 3]))]);
    }

    #[test]
    fn hash_format_and_values() {
        let m = r("[[rules]]\nkeys = [\"h.*\"]\naction = \"hash\"");
        let mut sp = span(vec![
            ("h.s".into(), s("abc")),
            ("h.i".into(), AttrValue::Int(7)),
            ("h.d".into(), AttrValue::Double(1.5)),
            ("h.b".into(), AttrValue::Bool(true)),
            ("h.bytes".into(), AttrValue::Bytes(b"abc".to_vec())),
            ("h.arr".into(), AttrValue::Array(vec![s("abc"), AttrValue::Empty])),
            ("h.map".into(), AttrValue::Map(vec![("inner".into(), s("abc"))])),
            ("other".into(), s("abc")),
        ]);
        m.apply(&mut sp);
        let abc = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha("abc"), abc);
        assert_eq!(sp.attributes[0].1, s(abc));
        assert_eq!(sp.attributes[1].1, s(&sha("7")));
        assert_eq!(sp.attributes[2].1, s(&sha("1.5")));
        assert_eq!(sp.attributes[3].1, s(&sha("true")));
        assert_eq!(sp.attributes[4].1, s(abc));
        assert_eq!(sp.attributes[5].1, AttrValue::Array(vec![s(abc), AttrValue::Empty]));
        assert_eq!(sp.attributes[6].1, AttrValue::Map(vec![("inner".into(), s(abc))]));
        assert_eq!(sp.attributes[7].1, s("abc"), "no rule, no change");
        assert_eq!(abc.len(), 71);
    }

    #[test]
    fn drop_and_the_first_matching_rule_wins() {
        let m = r(concat!(
            "[[rules]]\nkeys = [\"secret.*\", \"password\"]\naction = \"drop\"\n",
            "[[rules]]\nkeys = [\"secret.keep\", \"*.email\"]\naction = \"hash\"\n",
            "[[rules]]\nkeys = [\"user.email\", \"password\", \"*\"]\naction = \"mask\"\n",
        ));
        let mut sp = span(vec![
            ("secret.keep".into(), s("x")),
            ("password".into(), s("hunter2")),
            ("user.email".into(), s("a@b.io")),
            ("note".into(), s("to a@b.io")),
            ("secret".into(), s("a@b.io")),
        ]);
        m.apply(&mut sp);
        assert_eq!(
            sp.attributes,
            vec![("user.email".into(), s(&sha("a@b.io"))), ("note".into(), s("to [REDACTED:email]")), ("secret".into(), s("[REDACTED:email]"))]
        );
        assert_eq!(sp.status_message, "mail [REDACTED:email]", "reached as span.status_message by `*`");
        // An exact key of a later rule does not beat a glob of an earlier one, and vice versa.
        let m = r("[[rules]]\nkeys = [\"a.*\"]\naction = \"drop\"\n[[rules]]\nkeys = [\"a.b\"]\naction = \"hash\"");
        assert_eq!(m.inner.keys.lookup("a.b"), Some(0));
        let m = r("[[rules]]\nkeys = [\"a.b\"]\naction = \"drop\"\n[[rules]]\nkeys = [\"a.*\", \"*\"]\naction = \"hash\"");
        assert_eq!(m.inner.keys.lookup("a.b"), Some(0));
        assert_eq!(m.inner.keys.lookup("a.c"), Some(1));
        assert_eq!(m.inner.keys.lookup("zzz"), Some(1));
    }

    #[test]
    fn mask_applies_only_to_the_keys_of_its_rule() {
        let m = r("[[rules]]\nkeys = [\"rl.state\"]\naction = \"mask\"");
        let mut sp = span(vec![("rl.state".into(), s("a@b.io")), ("rl.state.x".into(), s("a@b.io")), ("user".into(), s("a@b.io"))]);
        m.apply(&mut sp);
        assert_eq!(sp.attributes, vec![("rl.state".into(), s("[REDACTED:email]")), ("rl.state.x".into(), s("a@b.io")), ("user".into(), s("a@b.io"))]);
    }

    #[test]
    fn globs() {
        let g = glob_matches;
        assert!(g("rl.state.*", "rl.state.prompt"));
        assert!(g("rl.state.*", "rl.state.a.b"));
        assert!(g("rl.state.*", "rl.state."));
        assert!(!g("rl.state.*", "rl.state"));
        assert!(!g("rl.state.*", "rl.stateX"));
        assert!(g("gen_ai.*.messages", "gen_ai.input.messages"));
        assert!(g("gen_ai.*.messages", "gen_ai.a.b.messages"));
        assert!(!g("gen_ai.*.messages", "gen_ai.input.messages.0"));
        assert!(!g("gen_ai.*.messages", "gen_ai.messages"), "the two dots cannot overlap");
        assert!(g("*", "anything") && g("*", ""));
        assert!(g("**", "x") && g("a**b", "ab") && g("a**b", "axxb"));
        assert!(g("*.content", "llm.input_messages.0.message.content") && !g("*.content", "content"));
        assert!(g("exact", "exact") && !g("exact", "exactly") && !g("exact", "exac"));
        assert!(g("a*b*c", "a-b-c") && g("a*b*c", "abc") && !g("a*b*c", "a-c") && !g("a*b*c", "a-c-b"));
        assert!(!g("ab*ba", "aba"), "head and tail cannot share characters");
        assert!(g("*mid*", "xxmidyy") && !g("*mid*", "mi-d"));
        assert!(g("é.*.ü", "é.x.ü") && !g("é.*.ü", "é.ü"));
        assert!(!g("a.?", "a.b") && g("a.?", "a.?"), "only * is special");
        // The index agrees with the single matcher.
        let m = r("[[rules]]\nkeys = [\"x\", \"p.*\", \"*.s\", \"m*d\"]\naction = \"drop\"");
        for (key, want) in [("x", true), ("xx", false), ("p.", true), ("p", false), ("a.s", true), ("mod", true), ("mo", false), ("", false)] {
            assert_eq!(m.inner.keys.lookup(key).is_some(), want, "{key:?}");
        }
    }

    #[test]
    fn events_are_redacted_and_resources_only_by_apply_origin() {
        let m = masker();
        let mut sp = span(vec![("k".into(), s("to c@d.io"))]);
        sp.events.push(SpanEvent { name: "c@d.io".into(), time_unix_nano: 1, attributes: vec![("m".into(), s("c@d.io")), ("n".into(), AttrValue::Int(1))] });
        let origin = Origin { resource: vec![("host.ip".into(), s("10.1.2.3")), ("service.name".into(), s("agents"))], scope_name: "s".into(), scope_version: "1".into() };
        sp.origin = Arc::new(origin.clone());
        m.apply(&mut sp);
        assert_eq!(sp.attributes[0].1, s("to [REDACTED:email]"));
        assert_eq!(sp.events[0].attributes, vec![("m".into(), s("[REDACTED:email]")), ("n".into(), AttrValue::Int(1))]);
        assert_eq!(sp.events[0].name, "[REDACTED:email]", "reached as event.name by `*`");
        assert_eq!(*sp.origin, origin, "apply leaves the shared resource");
        let redacted = m.apply_origin(&origin).expect("changed");
        assert_eq!(redacted.resource, vec![("host.ip".into(), s("[REDACTED:ip]")), ("service.name".into(), s("agents"))]);
        assert_eq!((redacted.scope_name.as_str(), redacted.scope_version.as_str()), ("s", "1"));
    }

    #[test]
    fn apply_origin_is_none_when_nothing_changes() {
        let origin = Origin { resource: vec![("service.name".into(), s("agents")), ("n".into(), AttrValue::Int(3))], ..Origin::default() };
        assert_eq!(r("[[rules]]\nkeys = [\"rl.*\"]\naction = \"hash\"").apply_origin(&origin), None, "no key matches");
        assert_eq!(masker().apply_origin(&origin), None, "keys match, nothing to mask");
        assert_eq!(r("[[rules]]\nkeys = [\"service.name\"]\naction = \"truncate:10\"").apply_origin(&origin), None, "short enough");
        assert_eq!(Redactor::none().apply_origin(&origin), None);
        let dropped = r("[[rules]]\nkeys = [\"n\"]\naction = \"drop\"").apply_origin(&origin).expect("changed");
        assert_eq!(dropped.resource, vec![("service.name".into(), s("agents"))]);
    }

    #[test]
    fn apply_all_redacts_each_shared_resource_once() {
        let m = masker();
        let shared = Arc::new(Origin { resource: vec![("host.ip".into(), s("10.1.2.3"))], ..Origin::default() });
        let clean = Arc::new(Origin { resource: vec![("service.name".into(), s("agents"))], ..Origin::default() });
        let mut spans = vec![span(vec![("k".into(), s("a@b.io"))]), span(Vec::new()), span(Vec::new())];
        spans[0].origin = Arc::clone(&shared);
        spans[1].origin = Arc::clone(&clean);
        spans[2].origin = Arc::clone(&shared);
        m.apply_all(&mut spans);
        assert_eq!(spans[0].attributes[0].1, s("[REDACTED:email]"));
        assert_eq!(spans[0].origin.resource[0].1, s("[REDACTED:ip]"));
        assert!(Arc::ptr_eq(&spans[0].origin, &spans[2].origin), "one redacted copy for the spans that shared it");
        assert!(Arc::ptr_eq(&spans[1].origin, &clean), "an unchanged resource is not copied");
    }

    #[test]
    fn no_rules_change_nothing() {
        let m = r("");
        assert!(m.is_empty() && Redactor::none().is_empty());
        assert!(!masker().is_empty());
        let mut sp = span(vec![("user.email".into(), s("a@b.io"))]);
        let before = sp.clone();
        m.apply(&mut sp);
        assert_eq!(sp, before);
        assert_eq!(Redactor::none().hash(), m.hash());
        // Patterns without rules mask nothing in spans but serve mask_text.
        let p = r("[[patterns]]\nname = \"t\"\nregex = \"T-[0-9]+\"");
        assert!(p.is_empty());
        assert_eq!(p.mask_text("T-1 a@b.io"), "[REDACTED:t] [REDACTED:email]");
    }

    #[test]
    fn configuration_errors_say_what_is_wrong() {
        let rule = |a: &str| format!("[[rules]]\nkeys = [\"a\"]\naction = \"{a}\"");
        assert_eq!(err(&rule("truncate:abc")), "redaction.rules[0].action: \"truncate:abc\": truncate:N takes a whole number of bytes N >= 1");
        assert_eq!(err(&rule("truncate:0")), "redaction.rules[0].action: \"truncate:0\": truncate:N takes a whole number of bytes N >= 1");
        assert_eq!(err(&rule("truncate:-1")), "redaction.rules[0].action: \"truncate:-1\": truncate:N takes a whole number of bytes N >= 1");
        assert_eq!(err(&rule("truncate")), "redaction.rules[0].action: \"truncate\": truncate:N takes a whole number of bytes N >= 1");
        assert_eq!(err(&format!("{}\n{}", rule("drop"), rule("erase"))), "redaction.rules[1].action: unknown action \"erase\": use drop, hash, truncate:N or mask");
        assert_eq!(err(&rule("Mask")), "redaction.rules[0].action: unknown action \"Mask\": use drop, hash, truncate:N or mask");
        assert_eq!(err("[[rules]]\nkeys = [\"a\", \"\"]\naction = \"drop\""), "redaction.rules[0].keys[1]: empty key pattern");
        assert_eq!(err("[[rules]]\nkeys = []\naction = \"drop\""), "redaction.rules[0].keys: a rule needs at least one key pattern");
        assert_eq!(err("detectors = [\"email\", \"ssn\"]"), "redaction.detectors: unknown detector \"ssn\": the detectors are email, phone, card, ip, api_key and bearer");
        assert_eq!(err("[[patterns]]\nname = \"bad name\"\nregex = \"x\""), "redaction.patterns[0].name: \"bad name\": a pattern name is 1 to 64 of A-Z a-z 0-9 _ - .");
        assert_eq!(err("[[patterns]]\nname = \"t\"\nregex = \"x\"\n[[patterns]]\nname = \"t\"\nregex = \"y\""), "redaction.patterns[1].name: \"t\" is the name of an earlier pattern");
        assert_eq!(err("[[patterns]]\nname = \"e\"\nregex = \"\""), "redaction.patterns[0] (e): invalid regular expression: empty regular expression");
        let bad_regex = err("[[patterns]]\nname = \"paren\"\nregex = \"(abc\"");
        assert!(bad_regex.starts_with("redaction.patterns[0] (paren): invalid regular expression: "), "{bad_regex}");
        assert!(bad_regex.contains("unclosed group"), "{bad_regex}");
        assert_eq!(
            err("[[patterns]]\nname = \"big\"\nregex = \"\\\\w{1000}\\\\w{1000}\\\\w{1000}\""),
            format!("redaction.patterns[0] (big): the regular expression is too large once compiled (limit {MAX_REGEX_BYTES} bytes)")
        );
        let many = RedactionConfig { rules: vec![RuleConfig { keys: vec!["a".into()], action: "drop".into() }; MAX_RULES + 1], ..RedactionConfig::default() };
        assert_eq!(Redactor::new(&many).expect_err("too many").to_string(), "redaction.rules: 1001 given, at most 1000");
        let many = RedactionConfig { patterns: vec![PatternConfig { name: "p".into(), regex: "x".into() }; MAX_PATTERNS + 1], ..RedactionConfig::default() };
        assert_eq!(Redactor::new(&many).expect_err("too many").to_string(), "redaction.patterns: 1001 given, at most 1000");
        // Unknown fields are refused when the section is read.
        assert!(toml::from_str::<RedactionConfig>("[[rules]]\nkeys = [\"a\"]\naction = \"drop\"\nwhen = 1").is_err());
        assert!(toml::from_str::<RedactionConfig>("rulez = []").is_err());
    }

    #[test]
    fn the_hash_is_stable_and_follows_every_change() {
        let base = "[[rules]]\nkeys = [\"rl.state\", \"gen_ai.*.messages\"]\naction = \"mask\"\n[[rules]]\nkeys = [\"user.email\"]\naction = \"hash\"";
        let h = r(base).hash();
        // A fixed value: the canonical form must not drift between builds.
        assert_eq!(h, "sha256:9e92f3632582510e2086b67cd96ac34b6244644f65c508a46f0b38fbcc342840");
        assert_eq!(h, r(base).hash());
        assert_eq!(h, r(&format!("detectors = [\"phone\", \"email\", \"card\", \"ip\", \"api_key\", \"bearer\", \"ip\"]\n{base}")).hash(), "all detectors, any order");
        let changed = [
            base.replace("\"mask\"", "\"drop\""),
            base.replace("user.email", "user.mail"),
            base.replace("[\"rl.state\", \"gen_ai.*.messages\"]", "[\"gen_ai.*.messages\", \"rl.state\"]"),
            format!("detectors = [\"email\"]\n{base}"),
            format!("{base}\n[[patterns]]\nname = \"t\"\nregex = \"T-[0-9]+\""),
            format!("{base}\n[[rules]]\nkeys = [\"x\"]\naction = \"truncate:5\""),
        ];
        for c in &changed {
            assert_ne!(r(c).hash(), h, "{c}");
        }
        assert_eq!(
            r("[[rules]]\nkeys = [\"x\"]\naction = \"truncate:010\"").hash(),
            r("[[rules]]\nkeys = [\"x\"]\naction = \"truncate:10\"").hash(),
            "the same action"
        );
    }

    #[test]
    fn redactors_are_shared_across_threads() {
        fn assert_traits<T: Clone + Send + Sync + std::fmt::Debug>() {}
        assert_traits::<Redactor>();
        let m = masker();
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || m.mask_text("a@b.io").into_owned())
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().expect("thread"), "[REDACTED:email]");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Any text: no panic, findings only replaced, nothing changed without a finding.
        #[test]
        fn mask_text_never_panics(text in "[0-9 .:()+@a-fA-Zé€_/-]{0,60}|\\PC{0,40}") {
            let m = masker();
            let out = m.mask_text(&text);
            if out != text {
                proptest::prop_assert!(out.contains("[REDACTED:"), "{text:?} -> {out:?}");
            }
        }

        /// JSON stays JSON of the same shape: same keys, same numbers, strings maybe masked.
        #[test]
        fn masked_json_keeps_its_shape(values in proptest::collection::vec("[0-9 .:@a-f+()-]{0,30}|\\PC{0,12}", 0..6), n in proptest::num::i64::ANY) {
            let object: serde_json::Map<String, serde_json::Value> = values.iter().enumerate().map(|(i, v)| (format!("{v}#{i}"), serde_json::Value::String(v.clone()))).collect();
            let text = serde_json::json!({"o": object, "n": n, "l": values}).to_string();
            let m = r("[[rules]]\nkeys = [\"j\"]\naction = \"mask\"");
            let mut sp = span(vec![("j".into(), AttrValue::Str(text.clone()))]);
            m.apply(&mut sp);
            let out: serde_json::Value = serde_json::from_str(sp.attributes[0].1.as_str().unwrap_or_default()).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let before: serde_json::Value = serde_json::from_str(&text).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert_eq!(out["n"].clone(), before["n"].clone());
            let keys = |v: &serde_json::Value| v["o"].as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
            proptest::prop_assert_eq!(keys(&out), keys(&before));
            proptest::prop_assert_eq!(out["l"].as_array().map(Vec::len), before["l"].as_array().map(Vec::len));
        }
    }

    /// The findings of every enabled detector's regex run on the whole string (no pre-scan, no
    /// runs), for comparison with `find_hits`.
    fn hits_reference(m: &Redactor, s: &str) -> Vec<(usize, usize, u16)> {
        let (inner, b, bytes) = (&*m.inner, builtins().expect("builtins"), s.as_bytes());
        let mut hits = Vec::new();
        let on = |t: u8| inner.triggers & t != 0;
        if on(T_BEARER) {
            scan(&b.bearer, s, 0, L_BEARER, &mut hits, |start, end| {
                let mut tok = start + 6;
                while tok < end && matches!(bytes[tok], b' ' | b'\t') {
                    tok += 1;
                }
                if bearer_token_ok(&s[tok..end]) { Verdict::Accept(tok, end) } else { Verdict::SkipPast }
            });
        }
        if on(T_API_KEY) {
            scan(&b.api_key, s, 0, L_API_KEY, &mut hits, Verdict::Accept);
        }
        if on(T_EMAIL) {
            scan(&b.email, s, 0, L_EMAIL, &mut hits, Verdict::Accept);
        }
        if on(T_CARD) {
            scan(&b.card, s, 0, L_CARD, &mut hits, |x, y| judge_card(bytes, x, y));
        }
        if on(T_IPV4) {
            scan(&b.ipv4, s, 0, L_IP, &mut hits, |x, y| judge_ipv4(bytes, x, y));
        }
        if on(T_PHONE) {
            scan(&b.phone, s, 0, L_PHONE, &mut hits, |x, y| judge_phone(s, x, y));
        }
        if on(T_IPV6) {
            scan(&b.ipv6, s, 0, L_IP, &mut hits, |x, y| judge_ipv6(s, x, y));
        }
        let mut out: Vec<_> = hits.iter().map(|h| (h.start, h.end, h.label)).collect();
        out.sort_unstable();
        out
    }

    fn hits_fast(m: &Redactor, s: &str) -> Vec<(usize, usize, u16)> {
        let mut hits = Vec::new();
        m.find_hits(s, &mut hits);
        let mut out: Vec<_> = hits.iter().map(|h| (h.start, h.end, h.label)).collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn the_pre_scan_and_runs_find_what_the_whole_string_scan_finds() {
        let m = masker();
        let texts = [
            "mail a@b.io, call +1 415 555 2671 or (555) 123-4567, card 4111 1111 1111 1111 20",
            "from 10.0.0.1:8080 and 2001:db8::1: refused, [fe80::1]:443, ::ffff:192.0.2.1 at 12:30:45",
            "key sk-proj-abcdefghijklmnop1234 Bearer tokSECRETabcdefgh AKIAIOSFODNN7EXAMPLE eyJa.eyJb.c",
            "é 4111111111111111é 10.1.2.3€ +33 6 12 34 56 78€ ::1",
            "on 2026-12-02 10:30, v 1.2.3.4.5, id 12345678-1234-1234-1234-123456789012",
            "ref 55 4111 1111 1111 1111 and 555 123 4567 8901 2345 and 1+234567890123",
        ];
        for text in texts {
            assert_eq!(hits_fast(&m, text), hits_reference(&m, text), "{text}");
            assert_eq!(hits_fast(&m, text).is_empty(), text.starts_with("on "), "only the look-alikes find nothing: {text}");
        }
        assert_eq!(prescan(b"x@y.io sk-abc ghp_ AKIA eyJ Bearer 1:2:3"), Prescan { digits: 3, colons: 2, literal: T_EMAIL | T_API_KEY | T_BEARER });
        assert_eq!(prescan(b"task-bound"), Prescan { digits: 0, colons: 0, literal: T_API_KEY }, "the regex then sees no word boundary");
        assert_eq!(prescan(b"desk bound abcd_ Aside Jet bear"), Prescan { digits: 0, colons: 0, literal: 0 });
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// The pre-scan and the runs never lose a finding the whole-string scan makes.
        #[test]
        fn runs_and_pre_scan_lose_nothing(text in "([0-9 .:()+@a-fA-F_/-]|[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]|sk-|ghp_|AKIA|eyJ|Bearer |x|é){0,80}|\\PC{0,60}") {
            let m = masker();
            proptest::prop_assert_eq!(hits_fast(&m, &text), hits_reference(&m, &text), "{:?}", text);
        }

        /// The same on long text (blocks, the literal regexes' own search).
        #[test]
        fn runs_and_pre_scan_lose_nothing_in_long_text(parts in proptest::collection::vec("[a-z ]{0,40}|[0-9 .()+-]{1,20}|[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}|([0-9a-f]{0,4}:){1,4}[0-9]?|sk-[a-z0-9]{20}|x@y.io|Bearer abcdefgh1", 1..40)) {
            let text = parts.concat();
            let m = masker();
            proptest::prop_assert_eq!(hits_fast(&m, &text), hits_reference(&m, &text), "{:?}", text);
        }
    }

    /// The end-to-end test's config and values (crates/rltrace/tests/redaction.rs), on one span.
    #[test]
    fn the_collector_example_redacts_every_kind_of_secret() {
        let m = r(concat!(
            "[[rules]]\nkeys = [\"rl.state\", \"rl.action\", \"gen_ai.*.messages\", \"note\", \"host.*\"]\naction = \"mask\"\n",
            "[[rules]]\nkeys = [\"user.email\"]\naction = \"hash\"\n",
            "[[rules]]\nkeys = [\"debug.*\"]\naction = \"drop\"\n",
            "[[rules]]\nkeys = [\"big\"]\naction = \"truncate:9\"\n",
            "[[patterns]]\nname = \"ticket\"\nregex = \"TICKET-[0-9]+\"\n",
        ));
        let state = serde_json::json!({"agent_role": "Code", "user": "alice.secret@example.com", "card": "4111 1111 1111 1111",
            "nested": {"key": "sk-proj-SECRETSECRETSECRET1234", "list": ["Bearer tokSECRETabcdefgh", "TICKET-424242"]}});
        let mut sp = span(vec![
            ("rl.state".into(), s(&state.to_string())),
            ("rl.action".into(), s("{\"reply\":\"mail alice.secret@example.com from 10.20.30.40\"}")),
            ("gen_ai.input.messages".into(), s("[{\"role\":\"user\",\"content\":\"my card is 4111 1111 1111 1111\"}]")),
            ("user.email".into(), s("bob.hashed@example.org")),
            ("debug.password".into(), s("hunter2-SECRET-XYZ")),
            ("big".into(), s("keep-this-then-LONGSECRETTAIL")),
        ]);
        sp.events.push(SpanEvent { name: "note-event".into(), time_unix_nano: 1, attributes: vec![("note".into(), s("see TICKET-424242"))] });
        m.apply(&mut sp);
        let json = |k: &str| serde_json::from_str::<serde_json::Value>(sp.attr(k).and_then(AttrValue::as_str).unwrap_or_default()).expect("JSON");
        assert_eq!(
            json("rl.state"),
            serde_json::json!({"agent_role": "Code", "user": "[REDACTED:email]", "card": "[REDACTED:card]",
                "nested": {"key": "[REDACTED:api_key]", "list": ["Bearer [REDACTED:bearer]", "[REDACTED:ticket]"]}})
        );
        assert_eq!(json("rl.action"), serde_json::json!({"reply": "mail [REDACTED:email] from [REDACTED:ip]"}));
        assert_eq!(json("gen_ai.input.messages"), serde_json::json!([{"role": "user", "content": "my card is [REDACTED:card]"}]));
        assert_eq!(sp.attr("user.email"), Some(&s(&sha("bob.hashed@example.org"))));
        assert_eq!(sp.attr("debug.password"), None);
        assert_eq!(sp.attr("big"), Some(&s("keep-this")));
        assert_eq!(sp.events[0].attributes[0].1, s("see [REDACTED:ticket]"));
        let origin = Origin { resource: vec![("service.name".into(), s("agents")), ("host.ip".into(), s("10.20.30.40"))], ..Origin::default() };
        assert_eq!(m.apply_origin(&origin).expect("changed").resource[1].1, s("[REDACTED:ip]"));
    }

    #[test]
    fn json_helpers() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        let mut out = String::new();
        push_compact(&mut out, "{ \"a b\" : [ 1 , \"x \\\" y\" ] }");
        assert_eq!(out, r#"{"a b":[1,"x \" y"]}"#);
        assert!(looks_like_json(" \n[1]") && looks_like_json("{}") && !looks_like_json("x{}") && !looks_like_json(""));
        assert!(is_date(b"2026-12-02 10") && is_date(b"02.12.2026 10") && !is_date(b"555-123-4567"));
    }
}

#[cfg(test)]
mod text_tests {
    use super::*;

    fn span_with(name: &str, status: &str) -> SpanRecord {
        SpanRecord {
            trace_id: [1; 16],
            span_id: [1; 8],
            parent_span_id: None,
            name: name.into(),
            kind: 1,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            status_code: 2,
            status_message: status.into(),
            attributes: Vec::new(),
            events: Vec::new(),
            origin: Arc::default(),
            extras: Default::default(),
        }
    }

    #[test]
    fn names_and_status_messages_are_reached_by_their_pseudo_keys_only() {
        let r = |t: &str| Redactor::new(&toml::from_str::<RedactionConfig>(t).expect("toml")).expect("redactor");
        let mut sp = span_with("call a@b.io", "failed for a@b.io");
        r("[[rules]]\nkeys = [\"span.status_message\"]\naction = \"mask\"").apply(&mut sp);
        assert_eq!((sp.name.as_str(), sp.status_message.as_str()), ("call a@b.io", "failed for [REDACTED:email]"));
        r("[[rules]]\nkeys = [\"span.*\"]\naction = \"drop\"").apply(&mut sp);
        assert_eq!((sp.name.as_str(), sp.status_message.as_str()), ("redacted", ""));
        let mut sp = span_with("call a@b.io", "failed");
        r("[[rules]]\nkeys = [\"span.name\"]\naction = \"truncate:4\"").apply(&mut sp);
        assert_eq!(sp.name, "call");
        let mut sp = span_with("a@b.io", "a@b.io");
        r("[[rules]]\nkeys = [\"rl.*\"]\naction = \"mask\"").apply(&mut sp);
        assert_eq!((sp.name.as_str(), sp.status_message.as_str()), ("a@b.io", "a@b.io"), "no rule, no change");
    }
}
