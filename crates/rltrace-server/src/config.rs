//! The collector's config file (`rltrace serve --config FILE`, also read by `import`, `export`
//! and `gc`; TOML): `[auth]`, `[redaction]`,
//! `[retention]`, `[[forward]]` and `[agentlightning]`. Unknown sections and keys are errors, so a misspelt setting never passes
//! unseen. The README documents every key.

use serde::Deserialize;

use crate::auth::AuthConfig;
use rltrace_core::retention::Retention;

/// The whole file, as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// API keys and UI sessions.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Redaction before storage.
    #[serde(default)]
    pub redaction: rltrace_core::redact::RedactionConfig,
    /// Retention of spans and sequences.
    #[serde(default)]
    pub retention: Retention,
    /// OTLP/HTTP targets the stored spans are forwarded to (`[[forward]]`, several allowed).
    #[serde(default)]
    pub forward: Vec<crate::forward::ForwardConfig>,
    /// The Agent Lightning bridge (`[agentlightning]`).
    #[serde(default)]
    pub agentlightning: Option<crate::agl::AglConfig>,
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not TOML, or not of the expected shape (the message names the key).
    #[error("{0}")]
    Parse(String),
    /// A value out of range.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Parse and check a config file's text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.retention.validate().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        rltrace_core::redact::Redactor::new(&config.redaction).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        // Headers read from the environment are resolved at start; the rest is checked here.
        config.targets(|_| Some("set".into())).map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// Every forwarding target: the `[[forward]]` ones, then the bridge's (`env` looks the
    /// variables of `headers_env` up). Names are unique.
    pub fn targets(&self, env: impl Fn(&str) -> Option<String>) -> Result<Vec<crate::forward::Target>, String> {
        let mut out = crate::forward::resolve_all(&self.forward, &env)?;
        if let Some(agl) = &self.agentlightning {
            for t in agl.resolve(&env)? {
                if out.iter().any(|o| o.name == t.name) {
                    return Err(format!("a [[forward]] target is named {:?}, as the [agentlightning] bridge's: rename one", t.name));
                }
                out.push(t);
            }
        }
        Ok(out)
    }

    /// The compiled redaction rules.
    pub fn redactor(&self) -> Result<rltrace_core::redact::Redactor, ConfigError> {
        rltrace_core::redact::Redactor::new(&self.redaction).map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's example names every key: it must parse, keys and rules included.
    #[test]
    fn the_readme_example_is_a_valid_config() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("```toml\n# rltrace.toml").expect("the README has the example") + "```toml\n".len();
        let text = &readme[start..start + readme[start..].find("```").expect("end of the block")];
        let c = Config::from_toml(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.auth.keys.len(), 3);
        assert_eq!(c.redaction.rules.len(), 4);
        assert_eq!(c.retention.sequences, Some(180 * 86_400));
        assert_eq!(c.forward.len(), 3);
        let targets = c.targets(|_| Some("Basic cGs6c2s=".into())).expect("targets");
        assert_eq!((targets[0].name.as_str(), targets[2].what), ("langfuse", crate::forward::What::Triplets));
        assert!(targets[1].https.is_some() && targets[0].https.is_none(), "the https:// target has a TLS client");
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["langfuse", "langfuse-cloud", "phoenix", "agentlightning-spans", "agentlightning-rewards", "agentlightning-gateway"]);
        assert_eq!(c.agentlightning.as_ref().map(|a| a.episode_reward), Some(rltrace_core::sequence::EpisodeReward::Last));
        let auth = crate::auth::Auth::from_config(&c.auth, |var| Some(format!("{var}-0123456789abcdef"))).expect("keys");
        assert!(auth.check_key("test").is_some(), "the example's digest is of \"test\"");
        assert!(!c.redactor().expect("rules").is_empty());
    }

    #[test]
    fn a_whole_file_parses_and_unknown_keys_are_errors() {
        let c = Config::from_toml(
            r#"
            [auth]
            session_hours = 8
            [[auth.keys]]
            name = "ci"
            scopes = ["ingest", "write"]
            env = "RLTRACE_CI_KEY"
            [retention]
            spans = "7d"
            sequences = "90d"
            "#,
        )
        .expect("test value");
        assert_eq!(c.auth.keys.len(), 1);
        assert_eq!(c.auth.session_hours, Some(8));
        assert_eq!(c.retention.spans, Some(7 * 86_400));
        assert_eq!(Config::from_toml("").expect("test value"), Config::default());
        let e = Config::from_toml("[retention]\nspan = \"7d\"").expect_err("an error").to_string();
        assert!(e.contains("unknown field `span`"), "{e}");
        let e = Config::from_toml("[auth]\n[[auth.keys]]\nname = \"a\"\nscopes = [\"root\"]\nenv = \"X\"").expect_err("an error").to_string();
        assert!(e.contains("unknown variant `root`"), "{e}");
        let e = Config::from_toml("[forwarding]").expect_err("an error").to_string();
        assert!(e.contains("unknown field `forwarding`"), "{e}");
        assert!(matches!(Config::from_toml("[retention]\nbatch = 0"), Err(ConfigError::Invalid(_))));
    }
}
