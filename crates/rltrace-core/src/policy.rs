//! The reward policy: per source a weight and an aggregation, weights of immediate reward
//! components, the values of HITL decisions and the penalties of defects, the fallback reward and
//! the idle time that completes a sequence. It is configuration (a TOML file); effective rewards are
//! derived from it at read time, so changing it recomputes nothing stored.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

/// Weight of a source or component that the policy does not name.
pub const DEFAULT_WEIGHT: f64 = 1.0;

/// How the events of one source that reach a triplet are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// The newest event (default).
    Latest,
    /// The oldest event.
    Earliest,
    /// The mean of the events.
    Mean,
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
    /// The sum, clipped to [0, 1].
    Sum,
    /// The product (default of `defect`: penalties compound).
    Product,
}

impl Aggregation {
    /// The aggregation of a source the policy does not configure.
    pub fn default_for(source: &str) -> Aggregation {
        if source == "defect" { Aggregation::Product } else { Aggregation::Latest }
    }

    /// Its name in the policy file.
    pub fn name(self) -> &'static str {
        match self {
            Aggregation::Latest => "latest",
            Aggregation::Earliest => "earliest",
            Aggregation::Mean => "mean",
            Aggregation::Min => "min",
            Aggregation::Max => "max",
            Aggregation::Sum => "sum",
            Aggregation::Product => "product",
        }
    }
}

fn one() -> f64 {
    DEFAULT_WEIGHT
}

/// Settings of one reward source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePolicy {
    /// Weight of the source in the weighted mean (>= 0; 0 leaves the source out). Default 1.
    #[serde(default = "one")]
    pub weight: f64,
    /// How its events are combined; default `latest` (`product` for `defect`).
    #[serde(default)]
    pub aggregation: Option<Aggregation>,
}

/// Values of the HITL decisions (`deferred` records the decision and gives no reward).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HitlValues {
    /// `approved` (default 1.0).
    pub approved: f64,
    /// `approved_with_changes` (default 0.7).
    pub approved_with_changes: f64,
    /// `rejected` (default 0.0).
    pub rejected: f64,
}

impl Default for HitlValues {
    fn default() -> Self {
        HitlValues { approved: 1.0, approved_with_changes: 0.7, rejected: 0.0 }
    }
}

/// Penalties of defects by severity; a defect gives its triplets `1 - penalty`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefectPenalties {
    /// `Low` (default 0.1).
    #[serde(rename = "Low")]
    pub low: f64,
    /// `Medium` (default 0.25).
    #[serde(rename = "Medium")]
    pub medium: f64,
    /// `High` (default 0.5).
    #[serde(rename = "High")]
    pub high: f64,
    /// `Critical` (default 1.0).
    #[serde(rename = "Critical")]
    pub critical: f64,
}

impl Default for DefectPenalties {
    fn default() -> Self {
        DefectPenalties { low: 0.1, medium: 0.25, high: 0.5, critical: 1.0 }
    }
}

/// The reward policy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Per-source settings, by source name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourcePolicy>,
    /// Weights of immediate reward components (`rl.reward.<component>`), by component name.
    #[serde(default)]
    pub components: BTreeMap<String, f64>,
    /// Values of HITL decisions.
    #[serde(default)]
    pub hitl: HitlValues,
    /// Penalties of defects by severity.
    #[serde(default)]
    pub defects: DefectPenalties,
    /// Seconds after its last triplet before a sequence with no terminal-type reward gets the
    /// fallback (`"24h"`, `"30m"`, `"90s"`, `"7d"` or a number of seconds).
    #[serde(default, deserialize_with = "duration_secs", skip_serializing_if = "Option::is_none")]
    pub reward_wait: Option<u64>,
    /// The fallback reward (source `fallback`); none when absent (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_reward: Option<f64>,
    /// Seconds after its last triplet after which a sequence counts as complete; never when absent.
    #[serde(default, deserialize_with = "duration_secs", skip_serializing_if = "Option::is_none")]
    pub sequence_idle: Option<u64>,
}

/// A duration in seconds, given as a number of seconds or as `90s`, `30m`, `24h`, `7d` (serde).
pub fn duration_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Some(s)),
        Raw::Text(t) => parse_duration(&t).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!("invalid duration {t:?}: use a number of seconds or 90s, 30m, 24h, 7d"))
        }),
    }
}

/// Parse `90s`, `30m`, `24h`, `7d` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 's') => (&s[..i], 1),
        (i, 'm') => (&s[..i], 60),
        (i, 'h') => (&s[..i], 3600),
        (i, 'd') => (&s[..i], 86_400),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// A policy file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not valid TOML or not of the policy's shape.
    #[error("policy is not valid: {0}")]
    Parse(String),
    /// A field of the policy's shape that is wrong (unknown, of the wrong type): its path
    /// (`sources.hitl.weight`) and what is wrong.
    #[error("{path}: {message}")]
    Field {
        /// Dotted path of the field.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// A weight that is negative or not finite; its path (`sources.hitl.weight`, `components.success`).
    #[error("{0}: a policy weight must be a finite number >= 0")]
    Weight(String),
    /// A value that must be in [0, 1]; its path (`hitl.approved`).
    #[error("{0}: a policy value must be a number in [0, 1]")]
    Unit(String),
    /// A source name that is not `[a-z0-9_.-]{{1,64}}`; its path (`sources.HITL`).
    #[error("{0}: not a valid source name ([a-z0-9_.-], 1 to 64 characters)")]
    Source(String),
}

impl PolicyError {
    /// The dotted path of the bad field, when the error names one.
    pub fn path(&self) -> Option<&str> {
        match self {
            PolicyError::Parse(_) => None,
            PolicyError::Field { path, .. } => Some(path),
            PolicyError::Weight(p) | PolicyError::Unit(p) | PolicyError::Source(p) => Some(p),
        }
    }
}

impl Policy {
    /// Parse and validate a policy from TOML text.
    ///
    /// ```
    /// let p = rltrace_core::Policy::from_toml("[sources.hitl]\nweight = 2.0\n[components]\nsuccess = 0.4\n").unwrap();
    /// assert_eq!(p.source_weight("hitl"), 2.0);
    /// assert_eq!(p.source_weight("tests"), 1.0);
    /// ```
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let p: Policy = toml::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// Read and validate a policy given as JSON (the structure of the TOML file): a field of the
    /// wrong shape or a value out of range is reported with its dotted path.
    ///
    /// ```
    /// let bad = serde_json::json!({"sources": {"hitl": {"weight": "heavy"}}});
    /// let e = rltrace_core::Policy::from_json_value(&bad).unwrap_err();
    /// assert_eq!(e.path(), Some("sources.hitl.weight"));
    /// ```
    pub fn from_json_value(value: &serde_json::Value) -> Result<Policy, PolicyError> {
        let p: Policy = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            if path == "." { PolicyError::Parse(message) } else { PolicyError::Field { path, message } }
        })?;
        p.validate()?;
        Ok(p)
    }

    /// Read a policy from TOML text like [`Policy::from_json_value`], with the dotted path of a
    /// bad field; TOML that does not parse at all is [`PolicyError::Parse`].
    pub fn from_toml_with_paths(text: &str) -> Result<Policy, PolicyError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        let value = serde_json::to_value(table).map_err(|e| PolicyError::Parse(e.to_string()))?;
        Policy::from_json_value(&value)
    }

    /// Check every value: weights finite and >= 0, source names valid, decision values,
    /// penalties and the fallback in [0, 1].
    pub fn validate(&self) -> Result<(), PolicyError> {
        let p = self;
        for (name, s) in &p.sources {
            crate::reward::validate_source(name).map_err(|_| PolicyError::Source(format!("sources.{name}")))?;
            if !s.weight.is_finite() || s.weight < 0.0 {
                return Err(PolicyError::Weight(format!("sources.{name}.weight")));
            }
        }
        for (name, w) in &p.components {
            if !w.is_finite() || *w < 0.0 {
                return Err(PolicyError::Weight(format!("components.{name}")));
            }
        }
        let unit = |name: &str, v: f64| if v.is_finite() && (0.0..=1.0).contains(&v) { Ok(()) } else { Err(PolicyError::Unit(name.to_string())) };
        unit("hitl.approved", p.hitl.approved)?;
        unit("hitl.approved_with_changes", p.hitl.approved_with_changes)?;
        unit("hitl.rejected", p.hitl.rejected)?;
        unit("defects.Low", p.defects.low)?;
        unit("defects.Medium", p.defects.medium)?;
        unit("defects.High", p.defects.high)?;
        unit("defects.Critical", p.defects.critical)?;
        if let Some(d) = p.default_reward {
            unit("default_reward", d)?;
        }
        Ok(())
    }

    /// The policy as the TOML text of a `--policy` file ([`Policy::from_toml`] reads it back to
    /// the same policy). Durations are written in seconds.
    pub fn to_toml(&self) -> Result<String, PolicyError> {
        fn strip_nulls(v: &mut serde_json::Value) {
            if let serde_json::Value::Object(o) = v {
                o.retain(|_, x| !x.is_null());
                o.values_mut().for_each(strip_nulls);
            }
        }
        let mut v = self.to_json();
        strip_nulls(&mut v);
        // Plain values first, then tables, as TOML needs them.
        let mut out = String::new();
        let mut tables = serde_json::Map::new();
        let mut plain = serde_json::Map::new();
        if let serde_json::Value::Object(o) = v {
            for (k, x) in o {
                if x.is_object() { tables.insert(k, x); } else { plain.insert(k, x); }
            }
        }
        out.push_str(&toml::to_string(&plain).map_err(|e| PolicyError::Parse(e.to_string()))?);
        out.push_str(&toml::to_string(&tables).map_err(|e| PolicyError::Parse(e.to_string()))?);
        Ok(out)
    }

    /// Weight of `source` (1 when the policy does not name it).
    pub fn source_weight(&self, source: &str) -> f64 {
        self.sources.get(source).map_or(DEFAULT_WEIGHT, |s| s.weight)
    }

    /// Aggregation of `source`.
    pub fn aggregation(&self, source: &str) -> Aggregation {
        self.sources.get(source).and_then(|s| s.aggregation).unwrap_or_else(|| Aggregation::default_for(source))
    }

    /// Weight of an immediate reward component (1 when the policy does not name it).
    pub fn component_weight(&self, component: &str) -> f64 {
        self.components.get(component).copied().unwrap_or(DEFAULT_WEIGHT)
    }

    /// Weighted mean of immediate reward components, or `None` if there are none (or all weigh 0).
    pub fn combine_components(&self, components: &BTreeMap<String, f64>) -> Option<f64> {
        let (mut num, mut den) = (0.0, 0.0);
        for (k, v) in components {
            let w = self.component_weight(k);
            num += w * v;
            den += w;
        }
        (den > 0.0).then(|| (num / den).clamp(0.0, 1.0))
    }

    /// Whether some source or component weighs 0 (which makes a reward vanish).
    pub fn has_zero_weights(&self) -> bool {
        self.sources.values().any(|s| s.weight == 0.0) || self.components.values().any(|w| *w == 0.0)
    }

    /// The policy as JSON, as recorded in export manifests.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// `sha256:<hex>` of the policy's canonical JSON.
    pub fn hash(&self) -> String {
        let canon = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&canon);
        format!("sha256:{}", crate::ids::to_hex(&digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_policies() {
        assert!(Policy::from_toml("[sources.hitl]\nweight = -1.0\n").is_err());
        assert!(Policy::from_toml("[sources.HITL]\nweight = 1.0\n").is_err());
        assert!(Policy::from_toml("[sources.hitl]\nwieght = 1.0\n").is_err());
        assert!(Policy::from_toml("[sources.hitl]\naggregation = \"median\"\n").is_err());
        assert!(Policy::from_toml("nonsense = 1\n").is_err());
        assert!(Policy::from_toml("default_reward = 1.5\n").is_err());
        assert!(Policy::from_toml("reward_wait = \"soon\"\n").is_err());
        assert!(Policy::from_toml("[hitl]\napproved = 2.0\n").is_err());
        assert!(Policy::from_toml("[defects]\nHigh = -0.5\n").is_err());
        assert!(Policy::from_toml("").is_ok());
    }

    #[test]
    fn reads_every_setting() {
        let p = Policy::from_toml(
            "reward_wait = \"24h\"\ndefault_reward = 0.5\nsequence_idle = 600\n[sources.hitl]\nweight = 2.0\naggregation = \"mean\"\n[sources.tests]\naggregation = \"min\"\n[hitl]\napproved_with_changes = 0.6\n[defects]\nHigh = 0.4\n",
        )
        .expect("valid");
        assert_eq!(p.reward_wait, Some(86_400));
        assert_eq!(p.sequence_idle, Some(600));
        assert_eq!(p.default_reward, Some(0.5));
        assert_eq!(p.aggregation("hitl"), Aggregation::Mean);
        assert_eq!(p.source_weight("tests"), 1.0);
        assert_eq!(p.aggregation("tests"), Aggregation::Min);
        assert_eq!(p.aggregation("defect"), Aggregation::Product);
        assert_eq!(p.aggregation("judge"), Aggregation::Latest);
        assert_eq!(p.hitl.approved_with_changes, 0.6);
        assert_eq!(p.hitl.approved, 1.0);
        assert_eq!(p.defects.high, 0.4);
        assert_eq!(p.defects.critical, 1.0);
    }

    #[test]
    fn json_policies_report_the_path_of_a_bad_field() {
        use serde_json::json;
        let path = |v: serde_json::Value| Policy::from_json_value(&v).err().and_then(|e| e.path().map(str::to_string));
        assert_eq!(path(json!({"sources": {"hitl": {"weight": "heavy"}}})).as_deref(), Some("sources.hitl.weight"));
        assert_eq!(path(json!({"sources": {"hitl": {"weight": -1.0}}})).as_deref(), Some("sources.hitl.weight"));
        assert_eq!(path(json!({"sources": {"hitl": {"aggregation": "median"}}})).as_deref(), Some("sources.hitl.aggregation"));
        assert_eq!(path(json!({"hitl": {"approved": 1.5}})).as_deref(), Some("hitl.approved"));
        assert_eq!(path(json!({"defects": {"Huge": 0.5}})).as_deref(), Some("defects.Huge"));
        assert_eq!(path(json!({"components": {"success": -0.5}})).as_deref(), Some("components.success"));
        assert_eq!(path(json!({"sources": {"HITL": {}}})).as_deref(), Some("sources.HITL"));
        assert!(Policy::from_json_value(&json!({"sources": {"hitl": {"weight": 2.0}}})).is_ok());
        let e = Policy::from_toml_with_paths("[sources.hitl]\nweight = \"x\"\n").expect_err("bad");
        assert_eq!(e.path(), Some("sources.hitl.weight"));
        assert!(Policy::from_toml_with_paths("not toml [").expect_err("bad").path().is_none());
    }

    #[test]
    fn toml_text_reads_back_to_the_same_policy() {
        let text = "reward_wait = \"24h\"\ndefault_reward = 0.3\nsequence_idle = \"1h\"\n[sources.hitl]\nweight = 3.0\naggregation = \"mean\"\n[sources.tests]\nweight = 0.5\n[components]\nsuccess = 0.4\nlatency = 0.2\n[hitl]\napproved_with_changes = 0.6\n[defects]\nHigh = 0.4\n";
        let p = Policy::from_toml(text).expect("valid");
        let back = Policy::from_toml(&p.to_toml().expect("toml")).expect("reads back");
        assert_eq!(back, p);
        let d = Policy::default();
        assert_eq!(Policy::from_toml(&d.to_toml().expect("toml")).expect("reads back"), d);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("30m"), Some(1800));
        assert_eq!(parse_duration("7d"), Some(604_800));
        assert_eq!(parse_duration("15"), Some(15));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn hash_changes_with_content() {
        let a = Policy::default();
        let b = Policy::from_toml("[sources.hitl]\nweight = 2.0\n").expect("valid");
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.hash(), Policy::default().hash());
        assert!(a.hash().starts_with("sha256:"));
    }
}
