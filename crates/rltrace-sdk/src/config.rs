//! SDK settings that are not OpenTelemetry's: the capture mode of large strings, the weights of
//! immediate reward components, the latency budget and the sampling ratio; each read from an
//! `RLTRACE_*` variable or set by the builder. A bad value is an error, never a silent default.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::Error;

/// Default length kept by [`CaptureMode::Truncate`]: 500 characters.
pub const DEFAULT_TRUNCATE_CHARS: usize = 500;
/// Strings up to this many bytes are always kept as they are in [`CaptureMode::Hash`] and
/// [`CaptureMode::None`]: ids, names and roles stay readable and filterable.
pub const SHORT_STRING_BYTES: usize = 64;
/// Default latency budget: 10 seconds.
pub const DEFAULT_LATENCY_BUDGET: Duration = Duration::from_secs(10);

/// `RLTRACE_CAPTURE`: capture mode of large strings.
pub const ENV_CAPTURE: &str = "RLTRACE_CAPTURE";
/// `RLTRACE_REWARD_WEIGHTS`: JSON object of immediate reward component weights.
pub const ENV_REWARD_WEIGHTS: &str = "RLTRACE_REWARD_WEIGHTS";
/// `RLTRACE_LATENCY_BUDGET_MS`: latency budget in milliseconds.
pub const ENV_LATENCY_BUDGET_MS: &str = "RLTRACE_LATENCY_BUDGET_MS";
/// `RLTRACE_SAMPLING_RATIO`: fraction of sequences kept, in [0, 1].
pub const ENV_SAMPLING_RATIO: &str = "RLTRACE_SAMPLING_RATIO";
/// `RLTRACE_ENVIRONMENT`: the `deployment.environment` resource attribute.
pub const ENV_ENVIRONMENT: &str = "RLTRACE_ENVIRONMENT";

/// `AGL_ROLLOUT_ID`: the Agent Lightning rollout this process runs (with `AGL_ATTEMPT_ID`).
pub const ENV_AGL_ROLLOUT_ID: &str = "AGL_ROLLOUT_ID";
/// `AGL_ATTEMPT_ID`: the Agent Lightning attempt this process runs.
pub const ENV_AGL_ATTEMPT_ID: &str = "AGL_ATTEMPT_ID";
/// `AGL_EVENT_URL`: `.../rollouts/{rollout_id}/attempt/{attempt_id}/events`, as Agent Lightning's
/// controller gives every agent it starts.
pub const ENV_AGL_EVENT_URL: &str = "AGL_EVENT_URL";

/// The Agent Lightning rollout attempt of this process: `AGL_ROLLOUT_ID` with `AGL_ATTEMPT_ID`,
/// else the two ids of `AGL_EVENT_URL`, else none. Sent as the resource attributes
/// `agentlightning.rollout_id` and `agentlightning.attempt_id`, which link the process's
/// sequences to the attempt.
pub fn agl_link_from(get: impl Fn(&str) -> Result<Option<String>, Error>) -> Result<Option<(String, String)>, Error> {
    let rollout = get(ENV_AGL_ROLLOUT_ID)?.map(|v| v.trim().to_string());
    let attempt = get(ENV_AGL_ATTEMPT_ID)?.map(|v| v.trim().to_string());
    match (rollout, attempt) {
        (Some(r), Some(a)) => return Ok(Some((r, a))),
        (Some(_), None) => return Err(Error::config(ENV_AGL_ATTEMPT_ID, "AGL_ROLLOUT_ID and AGL_ATTEMPT_ID must be set together")),
        (None, Some(_)) => return Err(Error::config(ENV_AGL_ROLLOUT_ID, "AGL_ROLLOUT_ID and AGL_ATTEMPT_ID must be set together")),
        (None, None) => {}
    }
    let Some(url) = get(ENV_AGL_EVENT_URL)? else { return Ok(None) };
    let path = url.trim().split(['?', '#']).next().unwrap_or_default().trim_end_matches('/');
    let parts: Vec<&str> = path.rsplit('/').take(5).collect();
    match parts.as_slice() {
        ["events", attempt, "attempt", rollout, "rollouts"] if !attempt.is_empty() && !rollout.is_empty() => Ok(Some((rollout.to_string(), attempt.to_string()))),
        _ => Err(Error::config(ENV_AGL_EVENT_URL, format!("expected .../rollouts/{{rollout_id}}/attempt/{{attempt_id}}/events, got {url:?}"))),
    }
}

/// How strings in captured arguments, outputs and helper values are recorded.
///
/// ```
/// use rltrace_sdk::CaptureMode;
/// assert_eq!("truncate:80".parse::<CaptureMode>().unwrap(), CaptureMode::Truncate(80));
/// assert_eq!("hash".parse::<CaptureMode>().unwrap(), CaptureMode::Hash);
/// assert!("truncate:0".parse::<CaptureMode>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureMode {
    /// Every string as it is.
    Full,
    /// Strings longer than N characters keep their first N characters followed by `…`.
    Truncate(usize),
    /// Strings longer than [`SHORT_STRING_BYTES`] become `sha256:<hex>` of their UTF-8 bytes.
    Hash,
    /// Strings longer than [`SHORT_STRING_BYTES`] become `null`.
    None,
}

impl Default for CaptureMode {
    fn default() -> Self {
        CaptureMode::Truncate(DEFAULT_TRUNCATE_CHARS)
    }
}

impl CaptureMode {
    /// Longest serialized JSON that cannot hold a string this mode changes: below it, a value is
    /// written as serialized, with no second pass.
    pub(crate) fn untouched_below(&self) -> usize {
        match self {
            CaptureMode::Full => usize::MAX,
            // A string of more than N characters takes more than N bytes in JSON.
            CaptureMode::Truncate(n) => n.saturating_add(2),
            CaptureMode::Hash | CaptureMode::None => SHORT_STRING_BYTES + 2,
        }
    }
}

impl FromStr for CaptureMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |m: String| Error::config(ENV_CAPTURE, m);
        match s.trim() {
            "full" => Ok(CaptureMode::Full),
            "hash" => Ok(CaptureMode::Hash),
            "none" => Ok(CaptureMode::None),
            "truncate" => Ok(CaptureMode::Truncate(DEFAULT_TRUNCATE_CHARS)),
            other => match other.strip_prefix("truncate:") {
                Some(n) => match n.trim().parse::<usize>() {
                    Ok(n) if n > 0 => Ok(CaptureMode::Truncate(n)),
                    _ => Err(bad(format!("truncate length must be a positive integer, got {n:?}"))),
                },
                None => Err(bad(format!("expected full, truncate:N, hash or none, got {other:?}"))),
            },
        }
    }
}

impl fmt::Display for CaptureMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureMode::Full => f.write_str("full"),
            CaptureMode::Truncate(n) => write!(f, "truncate:{n}"),
            CaptureMode::Hash => f.write_str("hash"),
            CaptureMode::None => f.write_str("none"),
        }
    }
}

/// Weights of immediate reward components (`success`, `latency`, `cost`, `validation`, ...).
///
/// When configured, each triplet also carries `rl.reward`: the weighted mean of its components
/// that have a weight (components without one are still sent, and ignored in the mean). Without
/// weights the SDK sends only the components and the collector combines them with its policy.
///
/// ```
/// use rltrace_sdk::RewardWeights;
/// let w: RewardWeights = r#"{"success":0.4,"latency":0.2,"cost":0.2,"validation":0.2}"#.parse().unwrap();
/// assert_eq!(w.get("success"), Some(0.4));
/// assert!(r#"{"success":-1}"#.parse::<RewardWeights>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RewardWeights(BTreeMap<String, f64>);

impl RewardWeights {
    /// Weights from pairs; each weight finite and non-negative, at least one positive, names
    /// matching `[a-z0-9_.-]{1,64}`.
    pub fn new<I, K>(weights: I) -> Result<RewardWeights, Error>
    where
        I: IntoIterator<Item = (K, f64)>,
        K: Into<String>,
    {
        let bad = |m: String| Error::config(ENV_REWARD_WEIGHTS, m);
        let mut map = BTreeMap::new();
        for (k, w) in weights {
            let k = k.into();
            if !valid_name(&k) {
                return Err(bad(format!("component name {k:?} must match [a-z0-9_.-]{{1,64}}")));
            }
            if !w.is_finite() || w < 0.0 {
                return Err(bad(format!("weight of {k:?} must be a finite number >= 0, got {w}")));
            }
            map.insert(k, w);
        }
        if !map.values().any(|w| *w > 0.0) {
            return Err(bad("at least one weight must be positive".into()));
        }
        Ok(RewardWeights(map))
    }

    /// The weight of a component.
    pub fn get(&self, component: &str) -> Option<f64> {
        self.0.get(component).copied()
    }

    /// Weighted mean of the components that have a weight; `None` when none has.
    pub fn combine<'a>(&self, components: impl IntoIterator<Item = (&'a str, f64)>) -> Option<f64> {
        let (mut num, mut den) = (0.0, 0.0);
        for (c, v) in components {
            if let Some(w) = self.get(c) {
                num += w * v;
                den += w;
            }
        }
        (den > 0.0).then(|| (num / den).clamp(0.0, 1.0))
    }
}

impl FromStr for RewardWeights {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |m: String| Error::config(ENV_REWARD_WEIGHTS, m);
        let v: serde_json::Value = serde_json::from_str(s).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let obj = v.as_object().ok_or_else(|| bad("must be a JSON object of component -> weight".into()))?;
        let mut pairs = Vec::with_capacity(obj.len());
        for (k, w) in obj {
            let w = w.as_f64().ok_or_else(|| bad(format!("weight of {k:?} must be a number, got {w}")))?;
            pairs.push((k.clone(), w));
        }
        RewardWeights::new(pairs)
    }
}

/// Whether `s` is a valid reward source or component name: `[a-z0-9_.-]{1,64}`.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

/// The SDK settings in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Capture mode of large strings.
    pub capture: CaptureMode,
    /// Weights of immediate reward components, if configured.
    pub reward_weights: Option<RewardWeights>,
    /// Latency budget: a call within it gets `rl.reward.latency` 1.0.
    pub latency_budget: Duration,
    /// Fraction of sequences kept, in [0, 1].
    pub sampling_ratio: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { capture: CaptureMode::default(), reward_weights: None, latency_budget: DEFAULT_LATENCY_BUDGET, sampling_ratio: 1.0 }
    }
}

/// Parse a sampling ratio in [0, 1].
pub(crate) fn parse_sampling_ratio(s: &str) -> Result<f64, Error> {
    let bad = || Error::config(ENV_SAMPLING_RATIO, format!("expected a number in [0, 1], got {s:?}"));
    let r: f64 = s.trim().parse().map_err(|_| bad())?;
    check_sampling_ratio(r).map_err(|_| bad())
}

pub(crate) fn check_sampling_ratio(r: f64) -> Result<f64, Error> {
    if r.is_finite() && (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(Error::config(ENV_SAMPLING_RATIO, format!("expected a number in [0, 1], got {r}")))
    }
}

/// Parse a latency budget in milliseconds (a positive integer).
pub(crate) fn parse_latency_budget_ms(s: &str) -> Result<Duration, Error> {
    match s.trim().parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(Error::config(ENV_LATENCY_BUDGET_MS, format!("expected a positive integer of milliseconds, got {s:?}"))),
    }
}

pub(crate) fn check_latency_budget(d: Duration) -> Result<Duration, Error> {
    if d.is_zero() { Err(Error::config(ENV_LATENCY_BUDGET_MS, "the latency budget must be positive")) } else { Ok(d) }
}

/// Read an environment variable; unset or empty is `None`, non-UTF-8 is an error.
pub(crate) fn env_var(name: &str) -> Result<Option<String>, Error> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::config(name, "not valid UTF-8")),
    }
}

/// `rl.reward.latency` of a call: 1.0 within the budget, `budget / duration` beyond it (0.5 at
/// twice the budget).
pub(crate) fn latency_reward(elapsed: Duration, budget: Duration) -> f64 {
    if elapsed <= budget { 1.0 } else { (budget.as_secs_f64() / elapsed.as_secs_f64()).clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_modes_parse_and_reject() {
        assert_eq!("full".parse::<CaptureMode>().ok(), Some(CaptureMode::Full));
        assert_eq!("truncate".parse::<CaptureMode>().ok(), Some(CaptureMode::Truncate(500)));
        assert_eq!("truncate:12".parse::<CaptureMode>().ok(), Some(CaptureMode::Truncate(12)));
        assert_eq!("none".parse::<CaptureMode>().ok(), Some(CaptureMode::None));
        for bad in ["truncate:", "truncate:-1", "truncate:x", "FULL", "sha256"] {
            let e = bad.parse::<CaptureMode>().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.starts_with("invalid RLTRACE_CAPTURE: "), "{bad}: {e}");
        }
    }

    #[test]
    fn weights_parse_validate_and_combine() {
        let w: RewardWeights = r#"{"success":0.4,"latency":0.2,"cost":0.2,"validation":0.2}"#.parse().unwrap_or_else(|e| panic!("{e}"));
        let r = w.combine([("success", 1.0), ("latency", 0.5), ("other", 0.0)]).unwrap_or(-1.0);
        assert!((r - (0.4 + 0.1) / 0.6).abs() < 1e-12, "{r}");
        assert_eq!(w.combine([("other", 1.0)]), None);
        for bad in ["[1]", "{\"a\":\"x\"}", "{\"a\":0}", "{\"A\":1}", "{\"a\":-0.5}", "nope"] {
            assert!(bad.parse::<RewardWeights>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_agent_lightning_link_comes_from_the_ids_or_the_event_url() {
        let env = |pairs: &'static [(&'static str, &'static str)]| move |k: &str| Ok(pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()));
        assert_eq!(agl_link_from(env(&[])).ok(), Some(None));
        assert_eq!(agl_link_from(env(&[("AGL_ROLLOUT_ID", "ro-1"), ("AGL_ATTEMPT_ID", "at-1")])).ok(), Some(Some(("ro-1".into(), "at-1".into()))));
        assert_eq!(
            agl_link_from(env(&[("AGL_EVENT_URL", "http://127.0.0.1:9/api/rollouts/ro-2/attempt/at-2/events?x=1")])).ok(),
            Some(Some(("ro-2".into(), "at-2".into())))
        );
        assert!(agl_link_from(env(&[("AGL_ROLLOUT_ID", "ro-1")])).is_err());
        let e = agl_link_from(env(&[("AGL_EVENT_URL", "http://127.0.0.1:9/api/rollouts/ro-2")])).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("AGL_EVENT_URL"), "{e}");
    }

    #[test]
    fn ratio_budget_and_latency_reward() {
        assert_eq!(parse_sampling_ratio("0.25").ok(), Some(0.25));
        assert!(parse_sampling_ratio("1.5").is_err());
        assert!(parse_sampling_ratio("NaN").is_err());
        assert_eq!(parse_latency_budget_ms("250").ok(), Some(Duration::from_millis(250)));
        assert!(parse_latency_budget_ms("0").is_err());
        assert!(parse_latency_budget_ms("1s").is_err());
        let b = Duration::from_millis(100);
        assert_eq!(latency_reward(Duration::from_millis(50), b), 1.0);
        assert!((latency_reward(Duration::from_millis(200), b) - 0.5).abs() < 1e-9);
    }
}
