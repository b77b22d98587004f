//! API keys, scopes and the web UI's sessions (`[auth]` of the config file).
//!
//! A key is presented as `Authorization: Bearer KEY` or `x-api-key: KEY` (an HTTP header or gRPC
//! metadata, as `OTEL_EXPORTER_OTLP_HEADERS` sends it). Keys are kept only as SHA-256 digests:
//! configured as a digest, or read once at start from an environment variable and hashed. A
//! presented key is hashed and compared with every configured digest in constant time; neither
//! keys nor digests are logged.
//!
//! Each route of [`crate::routes::table`] names the access it needs ([`Access`]). With no keys
//! configured every route is open (the collector then listens on loopback only: `rltrace serve`
//! refuses another address without `--insecure-no-auth`).
//!
//! The web UI signs in with a key into a session: a random token in an HttpOnly, SameSite=Strict
//! cookie, valid for `session_hours`. Sessions live in memory, bounded by [`MAX_SESSIONS`]
//! (the oldest is ended when a new one would exceed it); the UI's forms carry a CSRF token
//! derived from the session token.
//!
//! Invariant: a failed check changes nothing and says which header to send, never what a key is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::AppState;

/// Sessions of the web UI kept at once; signing in beyond ends the oldest.
pub const MAX_SESSIONS: usize = 10_000;
/// Configured keys at most.
pub const MAX_KEYS: usize = 1_000;
/// The shortest key accepted from an environment variable.
pub const MIN_KEY_BYTES: usize = 16;
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "rltrace_session";
/// Default lifetime of a UI session.
pub const DEFAULT_SESSION_HOURS: u64 = 12;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send spans (OTLP/HTTP and gRPC).
    Ingest,
    /// Append rewards and callbacks.
    Write,
    /// REST reads, export, the web UI and the metrics.
    Read,
    /// Administrative actions (settle, gc).
    Admin,
}

impl Scope {
    /// The scope's name in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Write => "write",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: health, readiness, the sign-in page and the UI's assets.
    Public,
    /// A key (or UI session) with this scope.
    Needs(Scope),
}

/// `[auth]` of the config file, as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The keys.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Hours a UI session lasts (default 12).
    #[serde(default)]
    pub session_hours: Option<u64>,
}

/// One `[[auth.keys]]` entry: a name, its scopes, and either the key's SHA-256 digest or the
/// environment variable holding the key.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// A name for people and logs (`ci-ingest`, `alice`).
    pub name: String,
    /// What the key may do.
    pub scopes: Vec<Scope>,
    /// The key's SHA-256 digest in hex (`printf %s "$KEY" | sha256sum`).
    #[serde(default)]
    pub sha256: Option<String>,
    /// The environment variable holding the key, read once at start.
    #[serde(default)]
    pub env: Option<String>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("[auth] {0}")]
pub struct AuthError(String);

/// A configured key, as kept: its digest only.
#[derive(Clone)]
struct Key {
    name: Arc<str>,
    digest: [u8; 32],
    scopes: Vec<Scope>,
}

/// Who made a request: the key's name and scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's name.
    pub name: Arc<str>,
    /// Its scopes.
    pub scopes: Vec<Scope>,
}

impl Principal {
    /// Whether it has `scope`.
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// One UI session.
struct Session {
    principal: Principal,
    csrf: String,
    expires: Instant,
    started: Instant,
}

/// The collector's keys and UI sessions.
pub struct Auth {
    keys: Vec<Key>,
    session_for: Duration,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|k| &*k.name).collect();
        f.debug_struct("Auth").field("keys", &names).finish_non_exhaustive()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Equality of two digests in constant time.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

impl Auth {
    /// No keys: every route open.
    pub fn open() -> Auth {
        Auth { keys: Vec::new(), session_for: Duration::from_secs(DEFAULT_SESSION_HOURS * 3600), sessions: Mutex::new(HashMap::new()) }
    }

    /// The keys of `config`; `env` reads an environment variable.
    pub fn from_config(config: &AuthConfig, env: impl Fn(&str) -> Option<String>) -> Result<Auth, AuthError> {
        if config.keys.len() > MAX_KEYS {
            return Err(AuthError(format!("{} keys are configured; at most {MAX_KEYS}", config.keys.len())));
        }
        let hours = config.session_hours.unwrap_or(DEFAULT_SESSION_HOURS);
        if !(1..=24 * 365).contains(&hours) {
            return Err(AuthError(format!("session_hours = {hours}: use 1 to 8760")));
        }
        let mut keys: Vec<Key> = Vec::with_capacity(config.keys.len());
        for k in &config.keys {
            let name = k.name.trim();
            if name.is_empty() || name.len() > 64 {
                return Err(AuthError("a key's name must be 1 to 64 characters".into()));
            }
            if keys.iter().any(|o| &*o.name == name) {
                return Err(AuthError(format!("two keys are named {name:?}")));
            }
            if k.scopes.is_empty() {
                return Err(AuthError(format!("key {name:?} has no scopes: give some of ingest, write, read, admin")));
            }
            let digest = match (&k.sha256, &k.env) {
                (Some(h), None) => {
                    hex32(h).ok_or_else(|| AuthError(format!("key {name:?}: sha256 must be 64 hex digits (printf %s \"$KEY\" | sha256sum)")))?
                }
                (None, Some(var)) => {
                    // A trailing newline (a key file read into the variable) is not part of the key.
                    let value = env(var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
                    let value = value.ok_or_else(|| AuthError(format!("key {name:?}: environment variable {var} is not set")))?;
                    if value.len() < MIN_KEY_BYTES {
                        return Err(AuthError(format!("key {name:?}: the key in {var} is shorter than {MIN_KEY_BYTES} characters")));
                    }
                    sha256(value.as_bytes())
                }
                _ => return Err(AuthError(format!("key {name:?}: give exactly one of sha256 or env"))),
            };
            if keys.iter().any(|o| same(&o.digest, &digest)) {
                return Err(AuthError(format!("key {name:?} is the same key as another one")));
            }
            let mut scopes = k.scopes.clone();
            scopes.sort();
            scopes.dedup();
            keys.push(Key { name: name.into(), digest, scopes });
        }
        Ok(Auth { keys, session_for: Duration::from_secs(hours * 3600), sessions: Mutex::new(HashMap::new()) })
    }

    /// Whether keys are required (some are configured).
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The key's principal, if `presented` is a configured key. Every digest is compared, in
    /// constant time, whatever matches.
    pub fn check_key(&self, presented: &str) -> Option<Principal> {
        let digest = sha256(presented.as_bytes());
        let mut found: Option<&Key> = None;
        for k in &self.keys {
            if same(&k.digest, &digest) {
                found = Some(k);
            }
        }
        found.map(|k| Principal { name: Arc::clone(&k.name), scopes: k.scopes.clone() })
    }

    /// Start a session for `principal`: its cookie token.
    pub fn start_session(&self, principal: Principal) -> String {
        let token = random_token();
        let now = Instant::now();
        let session = Session { principal, csrf: csrf_of(&token), expires: now + self.session_for, started: now };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.started).map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(sha256(token.as_bytes()), session);
        token
    }

    /// The session of a cookie token, if live: its principal and CSRF token.
    pub fn session(&self, token: &str) -> Option<(Principal, String)> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let id = sha256(token.as_bytes());
        match sessions.get(&id) {
            Some(s) if s.expires > Instant::now() => Some((s.principal.clone(), s.csrf.clone())),
            Some(_) => {
                sessions.remove(&id);
                None
            }
            None => None,
        }
    }

    /// End a session.
    pub fn end_session(&self, token: &str) {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&sha256(token.as_bytes()));
    }

    /// Sessions held now.
    pub fn session_count(&self) -> usize {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Seconds a session lasts.
    pub fn session_seconds(&self) -> u64 {
        self.session_for.as_secs()
    }
}

/// 256 random bits as hex (two v4 UUIDs: 244 bits from the system's random source).
fn random_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// The CSRF token of a session: derived from its cookie token, so a page can carry it without
/// the cookie being readable.
fn csrf_of(token: &str) -> String {
    let d = sha256(format!("rltrace-csrf:{token}").as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a request presents: a key, or for UI routes a session cookie.
pub enum Credential<'a> {
    /// A key in `Authorization: Bearer` or `x-api-key`.
    Key(&'a str),
    /// A UI session cookie.
    Session(&'a str),
    /// Nothing.
    None,
    /// A header that is not a usable key (not text, or another `Authorization` scheme).
    Malformed(&'static str),
}

/// The key of `authorization` / `x-api-key` values (HTTP headers or gRPC metadata).
pub fn key_of<'a>(authorization: Option<&'a [u8]>, api_key: Option<&'a [u8]>) -> Credential<'a> {
    if let Some(v) = authorization {
        let Ok(v) = std::str::from_utf8(v) else { return Credential::Malformed("the Authorization header is not text") };
        let v = v.trim();
        return match v.split_once(' ') {
            Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") && !key.trim().is_empty() => Credential::Key(key.trim()),
            _ => Credential::Malformed("the Authorization header must be `Bearer KEY`"),
        };
    }
    if let Some(v) = api_key {
        let Ok(v) = std::str::from_utf8(v) else { return Credential::Malformed("the x-api-key header is not text") };
        if v.trim().is_empty() {
            return Credential::Malformed("the x-api-key header is empty");
        }
        return Credential::Key(v.trim());
    }
    Credential::None
}

/// The session cookie's value in a `Cookie` header.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (name, value) = c.trim().split_once('=')?;
        (name == SESSION_COOKIE && !value.is_empty()).then_some(value)
    })
}

/// The outcome of a check.
pub enum Verdict {
    /// Allowed, as this principal (`None` when no keys are configured or the route is public),
    /// with the CSRF token of its UI session if it came with one.
    Allowed(Option<Principal>, Option<String>),
    /// No usable key: 401.
    Unauthenticated(String),
    /// A key without the scope: 403.
    Forbidden(String),
}

impl Auth {
    /// Check a request for `access`; `cookie`: the UI's session cookie counts too.
    pub fn verdict(&self, access: Access, headers: &HeaderMap, cookie: bool) -> Verdict {
        let Access::Needs(scope) = access else { return Verdict::Allowed(None, None) };
        if !self.enabled() {
            return Verdict::Allowed(None, None);
        }
        let authz = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
        let api_key = headers.get("x-api-key").map(HeaderValue::as_bytes);
        let cred = match key_of(authz, api_key) {
            Credential::None if cookie => session_cookie(headers).map_or(Credential::None, Credential::Session),
            c => c,
        };
        let (principal, csrf) = match cred {
            Credential::Key(k) => match self.check_key(k) {
                Some(p) => (p, None),
                None => return Verdict::Unauthenticated("the key is not valid".into()),
            },
            Credential::Session(t) => match self.session(t) {
                Some((p, csrf)) => (p, Some(csrf)),
                None => return Verdict::Unauthenticated("the session has ended: sign in again".into()),
            },
            Credential::Malformed(why) => return Verdict::Unauthenticated(why.into()),
            Credential::None => return Verdict::Unauthenticated("a key is required: send `Authorization: Bearer KEY` or `x-api-key: KEY`".into()),
        };
        if principal.may(scope) {
            Verdict::Allowed(Some(principal), csrf)
        } else {
            Verdict::Forbidden(format!("key {:?} lacks the {} scope", &*principal.name, scope.as_str()))
        }
    }
}

tokio::task_local! {
    /// The CSRF token of the UI session serving this request, while its handler runs.
    pub static SESSION_CSRF: String;
}

/// The middleware of one route: check the request for `access` and answer 401 / 403 in the
/// route's own error shape (OTLP status, REST error, or a UI page).
pub async fn authorize(State((st, access)): State<(AppState, Access)>, req: Request, next: Next) -> Response {
    let path = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| req.uri().path().to_string());
    let ui = path.starts_with("/ui");
    // The session cookie opens the UI's pages and forms (which carry a CSRF token) and any other
    // GET (the UI links to the API's reads); it is never a key for a state change elsewhere.
    let cookie = ui || req.method() == axum::http::Method::GET;
    match st.auth.verdict(access, req.headers(), cookie) {
        Verdict::Allowed(principal, csrf) => {
            let mut req = req;
            if let Some(p) = principal {
                req.extensions_mut().insert(p);
            }
            match csrf {
                Some(token) => SESSION_CSRF.scope(token, next.run(req)).await,
                None => next.run(req).await,
            }
        }
        Verdict::Unauthenticated(why) => {
            st.metrics.auth_refused(401);
            if path == "/v1/traces" {
                // Read the body (up to its bound) first: an exporter still sending would see a
                // reset instead of the final 401, and retry.
                let (parts, body) = req.into_parts();
                crate::ingest::drain(body, st.limits.max_body_bytes).await;
                crate::ingest::otlp_refusal(&parts.headers, StatusCode::UNAUTHORIZED, GRPC_UNAUTHENTICATED, &why)
            } else if ui {
                crate::ui::signin::refused(&req, StatusCode::UNAUTHORIZED, &why)
            } else {
                let mut resp = crate::error::ApiError::Unauthenticated(why).into_response();
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"rltrace\""));
                resp
            }
        }
        Verdict::Forbidden(why) => {
            st.metrics.auth_refused(403);
            if path == "/v1/traces" {
                let (parts, body) = req.into_parts();
                crate::ingest::drain(body, st.limits.max_body_bytes).await;
                crate::ingest::otlp_refusal(&parts.headers, StatusCode::FORBIDDEN, GRPC_PERMISSION_DENIED, &why)
            } else if ui {
                crate::ui::signin::refused(&req, StatusCode::FORBIDDEN, &why)
            } else {
                crate::error::ApiError::Forbidden(why).into_response()
            }
        }
    }
}

/// gRPC `UNAUTHENTICATED`, carried in OTLP/HTTP error bodies.
const GRPC_UNAUTHENTICATED: i32 = 16;
/// gRPC `PERMISSION_DENIED`.
const GRPC_PERMISSION_DENIED: i32 = 7;

/// The gRPC check: `authorization` or `x-api-key` metadata with the `ingest` scope.
pub fn check_grpc(auth: &Auth, metadata: &tonic::metadata::MetadataMap) -> Result<(), tonic::Status> {
    if !auth.enabled() {
        return Ok(());
    }
    let authz = metadata.get("authorization").map(|v| v.as_bytes());
    let api_key = metadata.get("x-api-key").map(|v| v.as_bytes());
    match key_of(authz, api_key) {
        Credential::Key(k) => match auth.check_key(k) {
            Some(p) if p.may(Scope::Ingest) => Ok(()),
            Some(p) => Err(tonic::Status::permission_denied(format!("key {:?} lacks the ingest scope", &*p.name))),
            None => Err(tonic::Status::unauthenticated("the key is not valid")),
        },
        Credential::Malformed(why) => Err(tonic::Status::unauthenticated(why)),
        _ => Err(tonic::Status::unauthenticated("a key is required: send `authorization: Bearer KEY` or `x-api-key: KEY` metadata")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: [u8; 32]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn config() -> AuthConfig {
        AuthConfig {
            keys: vec![
                KeyConfig { name: "ingest".into(), scopes: vec![Scope::Ingest], sha256: Some(hex(sha256(b"ingest-key-0123456789"))), env: None },
                KeyConfig { name: "ops".into(), scopes: vec![Scope::Read, Scope::Admin, Scope::Read], sha256: None, env: Some("OPS_KEY".into()) },
            ],
            session_hours: None,
        }
    }

    fn env(var: &str) -> Option<String> {
        (var == "OPS_KEY").then(|| "ops-key-0123456789abcdef".to_string())
    }

    #[test]
    fn keys_from_digests_and_environment_variables_are_recognised_with_their_scopes() {
        let auth = Auth::from_config(&config(), env).expect("test value");
        assert!(auth.enabled());
        let p = auth.check_key("ingest-key-0123456789").expect("test value");
        assert_eq!((&*p.name, p.scopes.as_slice()), ("ingest", &[Scope::Ingest][..]));
        let p = auth.check_key("ops-key-0123456789abcdef").expect("test value");
        assert_eq!(p.scopes, vec![Scope::Read, Scope::Admin]);
        assert!(auth.check_key("ops-key-0123456789abcde").is_none());
        assert!(auth.check_key("").is_none());
    }

    #[test]
    fn bad_configurations_are_refused_with_the_reason() {
        let mut c = config();
        c.keys[0].sha256 = Some("abc".into());
        assert!(Auth::from_config(&c, env).expect_err("an error").to_string().contains("64 hex digits"));
        let c = config();
        assert!(Auth::from_config(&c, |_| None).expect_err("an error").to_string().contains("OPS_KEY is not set"));
        assert!(Auth::from_config(&c, |_| Some("short".into())).expect_err("an error").to_string().contains("shorter than 16"));
        let mut c = config();
        c.keys[1].name = "ingest".into();
        assert!(Auth::from_config(&c, env).expect_err("an error").to_string().contains("two keys are named"));
        let mut c = config();
        c.keys[0].env = Some("OPS_KEY".into());
        assert!(Auth::from_config(&c, env).expect_err("an error").to_string().contains("exactly one of"));
        let mut c = config();
        c.keys[0].scopes.clear();
        assert!(Auth::from_config(&c, env).expect_err("an error").to_string().contains("no scopes"));
        let mut c = config();
        c.keys[0].sha256 = Some(hex(sha256(b"ops-key-0123456789abcdef")));
        assert!(Auth::from_config(&c, env).expect_err("an error").to_string().contains("same key"));
        let c = AuthConfig { session_hours: Some(0), ..config() };
        assert!(Auth::from_config(&c, env).expect_err("an error").to_string().contains("session_hours"));
    }

    #[test]
    fn headers_give_the_key_or_say_what_is_wrong() {
        assert!(matches!(key_of(Some(b"Bearer abc"), None), Credential::Key("abc")));
        assert!(matches!(key_of(Some(b"bearer  abc "), None), Credential::Key("abc")));
        assert!(matches!(key_of(None, Some(b"xyz")), Credential::Key("xyz")));
        assert!(matches!(key_of(Some(b"Basic abc"), Some(b"xyz")), Credential::Malformed(_)));
        assert!(matches!(key_of(Some(b"Bearer"), None), Credential::Malformed(_)));
        assert!(matches!(key_of(None, Some(b" ")), Credential::Malformed(_)));
        assert!(matches!(key_of(None, None), Credential::None));
    }

    #[test]
    fn verdicts_follow_scopes_and_public_routes_need_nothing() {
        let auth = Auth::from_config(&config(), env).expect("test value");
        let mut h = HeaderMap::new();
        assert!(matches!(auth.verdict(Access::Public, &h, false), Verdict::Allowed(None, None)));
        assert!(matches!(auth.verdict(Access::Needs(Scope::Read), &h, false), Verdict::Unauthenticated(_)));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer ingest-key-0123456789"));
        assert!(matches!(auth.verdict(Access::Needs(Scope::Ingest), &h, false), Verdict::Allowed(Some(_), None)));
        match auth.verdict(Access::Needs(Scope::Read), &h, false) {
            Verdict::Forbidden(m) => assert_eq!(m, "key \"ingest\" lacks the read scope"),
            _ => panic!("expected 403"),
        }
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer wrong-key-0123456789"));
        assert!(matches!(auth.verdict(Access::Needs(Scope::Ingest), &h, false), Verdict::Unauthenticated(_)));
        // No keys: everything open.
        assert!(matches!(Auth::open().verdict(Access::Needs(Scope::Admin), &HeaderMap::new(), false), Verdict::Allowed(None, None)));
    }

    #[test]
    fn sessions_work_only_on_ui_routes_end_and_are_bounded() {
        let auth = Auth::from_config(&config(), env).expect("test value");
        let p = auth.check_key("ops-key-0123456789abcdef").expect("test value");
        let token = auth.start_session(p.clone());
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(&format!("a=b; {SESSION_COOKIE}={token}")).expect("test value"));
        match auth.verdict(Access::Needs(Scope::Read), &h, true) {
            Verdict::Allowed(Some(q), Some(csrf)) => {
                assert_eq!(q, p);
                assert_eq!(csrf, csrf_of(&token));
                assert_ne!(csrf, token);
            }
            _ => panic!("expected the session"),
        }
        assert!(matches!(auth.verdict(Access::Needs(Scope::Read), &h, false), Verdict::Unauthenticated(_)), "a cookie is not a key for the API");
        assert!(matches!(auth.verdict(Access::Needs(Scope::Write), &h, true), Verdict::Forbidden(_)));
        auth.end_session(&token);
        assert!(matches!(auth.verdict(Access::Needs(Scope::Read), &h, true), Verdict::Unauthenticated(_)));
        for _ in 0..MAX_SESSIONS + 5 {
            auth.start_session(p.clone());
        }
        assert_eq!(auth.session_count(), MAX_SESSIONS);
    }
}
