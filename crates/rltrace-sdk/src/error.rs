//! The SDK's one error type.

/// Everything that can go wrong in the SDK: configuration at startup, exporter setup, reward
/// validation, and calls of the collector's reward API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value (an environment variable or a builder argument) is invalid.
    #[error("invalid {name}: {message}")]
    Config {
        /// The variable or setting, e.g. `RLTRACE_SAMPLING_RATIO`.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// The OTLP exporter could not be built.
    #[error("cannot build the otlp exporter: {0}")]
    Exporter(String),
    /// The SDK was already initialised in this process.
    #[error("rltrace_sdk is already initialised in this process")]
    AlreadyInitialized,
    /// Flushing or shutting down the tracer provider failed.
    #[error("shutdown failed: {0}")]
    Shutdown(String),
    /// A reward value, source, strategy or target is invalid.
    #[error("invalid reward: {0}")]
    InvalidReward(String),
    /// The helper was called outside an instrumented function (no current triplet).
    #[error("no current triplet: call this inside a #[rl_triplet] function or a request of the tower layer")]
    NoCurrentTriplet,
    /// The request to the collector could not be sent or its answer could not be read.
    #[error("request to the collector failed: {0}")]
    Http(String),
    /// The collector answered with an error.
    #[error("the collector answered {status}: {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error code of the collector's JSON error shape.
        code: String,
        /// The error message.
        message: String,
    },
}

impl Error {
    pub(crate) fn config(name: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Config { name: name.into(), message: message.into() }
    }
}
