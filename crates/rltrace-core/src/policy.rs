//! The reward policy: weights per source and per immediate reward component. It is configuration
//! (a TOML file); the effective reward is derived from it at read time, so changing it recomputes
//! nothing stored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Weight of a source or component that the policy does not name.
pub const DEFAULT_WEIGHT: f64 = 1.0;

/// Settings of one reward source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePolicy {
    /// Weight of the source in the weighted mean (>= 0; 0 leaves the source out).
    pub weight: f64,
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
}

/// A policy file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not valid TOML or not of the policy's shape.
    #[error("policy is not valid: {0}")]
    Parse(String),
    /// A weight that is negative or not finite.
    #[error("policy weight of {0} must be a finite number >= 0")]
    Weight(String),
    /// A source name that is not `[a-z0-9_.-]{{1,64}}`.
    #[error("policy names an invalid source: {0}")]
    Source(String),
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
        for (name, s) in &p.sources {
            crate::reward::validate_source(name).map_err(|_| PolicyError::Source(name.clone()))?;
            if !s.weight.is_finite() || s.weight < 0.0 {
                return Err(PolicyError::Weight(format!("source {name}")));
            }
        }
        for (name, w) in &p.components {
            if !w.is_finite() || *w < 0.0 {
                return Err(PolicyError::Weight(format!("component {name}")));
            }
        }
        Ok(p)
    }

    /// Weight of `source` (1 when the policy does not name it).
    pub fn source_weight(&self, source: &str) -> f64 {
        self.sources.get(source).map_or(DEFAULT_WEIGHT, |s| s.weight)
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
        assert!(Policy::from_toml("nonsense = 1\n").is_err());
        assert!(Policy::from_toml("").is_ok());
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
