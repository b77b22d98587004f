//! A typed async client for the collector's reward API (`POST /api/v1/rewards`) and callbacks
//! (`POST /api/v1/callbacks/hitl|tests|defects`, DESIGN section 5), for rewards that arrive after
//! the trace: a human review, a test run, a defect found later.
//!
//! The client is built with reqwest without TLS; to reach an `https://` collector, enable a TLS
//! feature of reqwest in your application (features are unified) and pass your own client to
//! [`RewardClient::with_client`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::Error;
use crate::helpers::{Strategy, validate_source, validate_value};

/// What a reward is for.
#[derive(Debug, Clone, PartialEq)]
pub enum RewardTarget {
    /// One triplet.
    Triplet {
        /// Its id (`rl.triplet_id`).
        triplet_id: String,
    },
    /// A sequence, reaching its triplets through a strategy.
    Sequence {
        /// The sequence id.
        sequence_id: String,
        /// How the value reaches the triplets.
        strategy: Strategy,
    },
}

/// A reward event to append to the ledger.
///
/// ```
/// use rltrace_sdk::client::NewReward;
/// use rltrace_sdk::Strategy;
///
/// let r = NewReward::sequence("task-42", Strategy::Last, 1.0, "terminal")
///     .reason("deployed")
///     .idempotency_key("deploy-42");
/// assert_eq!(r.to_json()["target"]["strategy"], "last");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewReward {
    /// The target.
    pub target: RewardTarget,
    /// The value in [0, 1].
    pub value: f64,
    /// The source (`[a-z0-9_.-]{1,64}`).
    pub source: String,
    /// Why.
    pub reason: Option<String>,
    /// Makes retries safe: the same key and body again answer the stored event.
    pub idempotency_key: Option<String>,
    /// Free-form JSON object.
    pub metadata: Option<Map<String, Value>>,
    /// Record it even if the target has not arrived yet (joined when it does).
    pub pending: bool,
}

impl NewReward {
    /// A reward for one triplet.
    pub fn triplet(triplet_id: impl Into<String>, value: f64, source: impl Into<String>) -> NewReward {
        NewReward::new(RewardTarget::Triplet { triplet_id: triplet_id.into() }, value, source)
    }

    /// A reward for a sequence.
    pub fn sequence(sequence_id: impl Into<String>, strategy: Strategy, value: f64, source: impl Into<String>) -> NewReward {
        NewReward::new(RewardTarget::Sequence { sequence_id: sequence_id.into(), strategy }, value, source)
    }

    fn new(target: RewardTarget, value: f64, source: impl Into<String>) -> NewReward {
        NewReward { target, value, source: source.into(), reason: None, idempotency_key: None, metadata: None, pending: false }
    }

    /// Set the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Set the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Set the metadata object.
    pub fn metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Accept a target that has not arrived yet.
    pub fn pending(mut self, pending: bool) -> Self {
        self.pending = pending;
        self
    }

    /// Check what the collector would reject with 422.
    pub fn validate(&self) -> Result<(), Error> {
        validate_value(self.value)?;
        validate_source(&self.source)?;
        match &self.target {
            RewardTarget::Triplet { triplet_id } if triplet_id.is_empty() => Err(Error::InvalidReward("triplet_id must not be empty".into())),
            RewardTarget::Sequence { sequence_id, .. } if sequence_id.is_empty() => {
                Err(Error::InvalidReward("sequence_id must not be empty".into()))
            }
            RewardTarget::Sequence { strategy, .. } => strategy.validate(),
            RewardTarget::Triplet { .. } => Ok(()),
        }
    }

    /// The request body.
    pub fn to_json(&self) -> Value {
        let target = match &self.target {
            RewardTarget::Triplet { triplet_id } => json!({ "triplet_id": triplet_id }),
            RewardTarget::Sequence { sequence_id, strategy } => {
                let mut t = json!({ "sequence_id": sequence_id, "strategy": strategy.name() });
                match strategy {
                    Strategy::Discounted { gamma } => t["gamma"] = json!(gamma),
                    Strategy::Role(r) => t["role"] = json!(r),
                    _ => {}
                }
                t
            }
        };
        let mut body = json!({ "target": target, "value": self.value, "source": self.source });
        if let Some(r) = &self.reason {
            body["reason"] = json!(r);
        }
        if let Some(k) = &self.idempotency_key {
            body["idempotency_key"] = json!(k);
        }
        if let Some(m) = &self.metadata {
            body["metadata"] = Value::Object(m.clone());
        }
        if self.pending {
            body["pending"] = json!(true);
        }
        body
    }
}

/// The target of a stored reward event, as the collector reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EventTarget {
    /// Set for a triplet reward.
    pub triplet_id: Option<String>,
    /// Set for a sequence reward.
    pub sequence_id: Option<String>,
    /// The strategy of a sequence reward.
    pub strategy: Option<String>,
    /// The discount of a `discounted` strategy.
    pub gamma: Option<f64>,
    /// The role of a `role` strategy.
    pub role: Option<String>,
}

/// A reward event stored in the ledger.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RewardEvent {
    /// Its id.
    pub reward_id: String,
    /// Its target.
    pub target: EventTarget,
    /// Its value (`None` for a deferred HITL decision).
    pub value: Option<f64>,
    /// Its source.
    pub source: String,
    /// Its reason.
    pub reason: Option<String>,
    /// When it was appended (RFC 3339 UTC).
    pub created_at: String,
    /// The idempotency key, if any.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The metadata, if any.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// Whether its target had not arrived when it was appended.
    #[serde(default)]
    pub pending: bool,
}

/// A human decision on a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Approved (reward 1.0).
    Approved,
    /// Approved with changes (0.7).
    ApprovedWithChanges,
    /// Rejected (0.0).
    Rejected,
    /// Deferred (recorded, no reward).
    Deferred,
}

/// `POST /api/v1/callbacks/hitl`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HitlDecision {
    /// The sequence reviewed.
    pub sequence_id: String,
    /// The decision.
    pub decision: Decision,
    /// Who decided.
    pub reviewer: String,
    /// Why (required).
    pub justification: String,
}

/// `POST /api/v1/callbacks/tests`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestResults {
    /// The sequence tested.
    pub sequence_id: String,
    /// Tests passed.
    pub passed: u64,
    /// Tests failed.
    pub failed: u64,
    /// Tests skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<u64>,
}

/// Severity of a defect (penalty 0.1 / 0.25 / 0.5 / 1.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Severity {
    /// Penalty 0.1.
    Low,
    /// Penalty 0.25.
    Medium,
    /// Penalty 0.5.
    High,
    /// Penalty 1.0.
    Critical,
}

/// Whom a defect is reported against.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DefectTarget {
    /// Every triplet of the task (`state.task_id`, the sequence `{task_id}` or `{task_id}:*`).
    TaskId(String),
    /// One sequence.
    SequenceId(String),
}

/// `POST /api/v1/callbacks/defects`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Defect {
    /// Task or sequence.
    #[serde(flatten)]
    pub target: DefectTarget,
    /// PSP defect type, `10_Documentation` ... `100_Environment`.
    pub defect_type: String,
    /// Severity.
    pub severity: Severity,
    /// The phase (agent role) that injected the defect.
    pub phase_injected: String,
    /// The phase that found and removed it (must differ from `phase_injected`).
    pub phase_removed: String,
    /// What it was.
    pub description: String,
}

/// Client of the collector's reward API.
///
/// ```no_run
/// # async fn run() -> Result<(), rltrace_sdk::Error> {
/// use rltrace_sdk::client::{NewReward, RewardClient};
///
/// let client = RewardClient::new("http://127.0.0.1:4318")?;
/// let event = client.post_reward(&NewReward::triplet("5f0c...", 0.8, "judge")).await?;
/// println!("stored as {}", event.reward_id);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RewardClient {
    http: reqwest::Client,
    base: String,
    api_key: Option<ApiKey>,
}

/// An API key, kept out of `Debug` output.
#[derive(Clone)]
struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// The environment variable [`RewardClient::from_env_key`] reads the API key from.
pub const ENV_API_KEY: &str = "RLTRACE_API_KEY";

/// Timeout of one request of [`RewardClient::new`]'s client.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl RewardClient {
    /// A client of the collector at `base_url` (e.g. `http://127.0.0.1:4318`).
    pub fn new(base_url: impl Into<String>) -> Result<RewardClient, Error> {
        let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().map_err(|e| Error::Http(e.to_string()))?;
        RewardClient::with_client(base_url, http)
    }

    /// A client using your reqwest client (TLS, proxies, headers).
    pub fn with_client(base_url: impl Into<String>, http: reqwest::Client) -> Result<RewardClient, Error> {
        let base = base_url.into().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::config("collector url", format!("expected an http:// or https:// url, got {base:?}")));
        }
        Ok(RewardClient { http, base, api_key: None })
    }

    /// Send `key` with every request (`Authorization: Bearer KEY`): a collector with keys
    /// configured needs one with the `write` scope.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Result<RewardClient, Error> {
        let key = key.into();
        if key.trim().is_empty() || key.chars().any(|c| c.is_control() || c == ' ') {
            return Err(Error::config("api key", "expected a non-empty key without spaces or control characters"));
        }
        self.api_key = Some(ApiKey(key));
        Ok(self)
    }

    /// The key of [`ENV_API_KEY`] (`RLTRACE_API_KEY`) when it is set, as [`RewardClient::with_api_key`].
    pub fn from_env_key(self) -> Result<RewardClient, Error> {
        match std::env::var(ENV_API_KEY) {
            Ok(k) if !k.is_empty() => self.with_api_key(k),
            _ => Ok(self),
        }
    }

    /// Append a reward event: 201 created, or 200 with the stored event for a repeated
    /// idempotency key and body.
    pub async fn post_reward(&self, reward: &NewReward) -> Result<RewardEvent, Error> {
        reward.validate()?;
        let v = self.post("/api/v1/rewards", &reward.to_json()).await?;
        serde_json::from_value(v).map_err(|e| Error::Http(format!("unexpected reward event: {e}")))
    }

    /// Send a human decision on a sequence; answers the collector's JSON.
    pub async fn hitl(&self, decision: &HitlDecision) -> Result<Value, Error> {
        if decision.justification.trim().is_empty() {
            return Err(Error::InvalidReward("a hitl decision needs a justification".into()));
        }
        self.post("/api/v1/callbacks/hitl", &json_of(decision)?).await
    }

    /// Send test results for a sequence; answers the collector's JSON.
    pub async fn tests(&self, results: &TestResults) -> Result<Value, Error> {
        if results.passed + results.failed == 0 {
            return Err(Error::InvalidReward("test results need passed + failed > 0".into()));
        }
        self.post("/api/v1/callbacks/tests", &json_of(results)?).await
    }

    /// Report a defect; answers the collector's JSON.
    pub async fn defect(&self, defect: &Defect) -> Result<Value, Error> {
        if defect.phase_injected == defect.phase_removed {
            return Err(Error::InvalidReward("phase_injected and phase_removed must differ".into()));
        }
        self.post("/api/v1/callbacks/defects", &json_of(defect)?).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, Error> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(ApiKey(k)) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.map_err(|e| Error::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| Error::Http(e.to_string()))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(v);
        }
        let field = |k: &str| v.get("error").and_then(|e| e.get(k)).and_then(Value::as_str).map(str::to_string);
        Err(Error::Api {
            status,
            code: field("code").unwrap_or_else(|| "unknown".into()),
            message: field("message").unwrap_or_else(|| text.chars().take(200).collect()),
        })
    }
}

fn json_of<T: Serialize>(v: &T) -> Result<Value, Error> {
    serde_json::to_value(v).map_err(|e| Error::InvalidReward(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_follow_the_api() {
        let r = NewReward::sequence("s", Strategy::Discounted { gamma: 0.5 }, 0.25, "tests").pending(true);
        assert_eq!(
            r.to_json(),
            json!({"target": {"sequence_id": "s", "strategy": "discounted", "gamma": 0.5}, "value": 0.25, "source": "tests", "pending": true})
        );
        let r = NewReward::triplet("t", 1.0, "judge").reason("ok");
        assert_eq!(r.to_json(), json!({"target": {"triplet_id": "t"}, "value": 1.0, "source": "judge", "reason": "ok"}));
        assert!(NewReward::triplet("t", 1.5, "judge").validate().is_err());
        assert!(NewReward::triplet("t", 0.5, "Judge").validate().is_err());
        assert!(NewReward::sequence("s", Strategy::Discounted { gamma: 0.0 }, 0.5, "x").validate().is_err());
        let d = Defect {
            target: DefectTarget::TaskId("t-1".into()),
            defect_type: "20_Syntax".into(),
            severity: Severity::High,
            phase_injected: "Code".into(),
            phase_removed: "Test".into(),
            description: "typo".into(),
        };
        assert_eq!(json_of(&d).ok().map(|v| v["task_id"].clone()), Some(json!("t-1")));
        assert_eq!(json_of(&d).ok().map(|v| v["severity"].clone()), Some(json!("High")));
        let h = HitlDecision { sequence_id: "s".into(), decision: Decision::ApprovedWithChanges, reviewer: "ana".into(), justification: "ok".into() };
        assert_eq!(json_of(&h).ok().map(|v| v["decision"].clone()), Some(json!("approved_with_changes")));
    }
}
