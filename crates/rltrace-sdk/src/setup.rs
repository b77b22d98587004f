//! Setup: an OpenTelemetry tracer provider with OTLP export (gRPC or HTTP, chosen by the standard
//! `OTEL_EXPORTER_OTLP_*` variables or the builder), resource attributes, batch export, the SDK
//! settings, and a guard that flushes on shutdown.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanProcessor, TracerProviderBuilder};

use crate::Error;
use crate::config::{
    self, CaptureMode, ENV_CAPTURE, ENV_ENVIRONMENT, ENV_LATENCY_BUDGET_MS, ENV_REWARD_WEIGHTS, ENV_SAMPLING_RATIO, RewardWeights, Settings,
    env_var,
};
use crate::runtime::{self, RlIdGenerator, Runtime};
use crate::sequence;

/// `OTEL_EXPORTER_OTLP_PROTOCOL`.
pub const ENV_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` (wins over [`ENV_OTLP_PROTOCOL`]).
pub const ENV_OTLP_TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (`grpc`); needs a tokio runtime when the SDK is installed.
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`, the default).
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies (`http/json`).
    HttpJson,
}

impl std::str::FromStr for Protocol {
    type Err = Error;

    fn from_str(s: &str) -> Result<Protocol, Error> {
        match s.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http/json" => Ok(Protocol::HttpJson),
            other => Err(Error::config(ENV_OTLP_PROTOCOL, format!("expected grpc, http/protobuf or http/json, got {other:?}"))),
        }
    }
}

type ProcessorFn = Box<dyn FnOnce(TracerProviderBuilder) -> TracerProviderBuilder>;

/// Configures and installs the SDK. Values set here win over the environment, which wins over
/// the defaults.
///
/// ```no_run
/// # fn main() -> Result<(), rltrace_sdk::Error> {
/// use std::time::Duration;
/// use rltrace_sdk::{CaptureMode, Protocol};
///
/// let _guard = rltrace_sdk::builder()
///     .service_name("agents")
///     .service_version("1.4.0")
///     .environment("staging")
///     .endpoint("http://127.0.0.1:4318")
///     .protocol(Protocol::HttpProtobuf)
///     .capture(CaptureMode::Hash)
///     .latency_budget(Duration::from_secs(5))
///     .sampling_ratio(0.5)
///     .install()?;
/// // ... spans are flushed when `_guard` drops.
/// # Ok(()) }
/// ```
#[must_use = "call install() to set the SDK up"]
pub struct Builder {
    service_name: Option<String>,
    service_version: Option<String>,
    environment: Option<String>,
    endpoint: Option<String>,
    protocol: Option<Protocol>,
    capture: Option<CaptureMode>,
    reward_weights: Option<RewardWeights>,
    latency_budget: Option<Duration>,
    sampling_ratio: Option<f64>,
    processors: Vec<ProcessorFn>,
    set_global: bool,
    read_env: bool,
    api_key: Option<String>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            service_name: None,
            service_version: None,
            environment: None,
            endpoint: None,
            protocol: None,
            capture: None,
            reward_weights: None,
            latency_budget: None,
            sampling_ratio: None,
            processors: Vec::new(),
            set_global: true,
            read_env: true,
            api_key: None,
        }
    }
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("service_name", &self.service_name)
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("processors", &self.processors.len())
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// The `service.name` resource attribute (default: `OTEL_SERVICE_NAME`, else
    /// `unknown_service`).
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// The `service.version` resource attribute.
    pub fn service_version(mut self, version: impl Into<String>) -> Self {
        self.service_version = Some(version.into());
        self
    }

    /// The `deployment.environment` resource attribute (default: `RLTRACE_ENVIRONMENT`).
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    /// The collector's base URL, e.g. `http://127.0.0.1:4318` for HTTP (`/v1/traces` is
    /// appended) or `http://127.0.0.1:4317` for gRPC. Default: `OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// else the OTLP default of the protocol on localhost.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The transport (default: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`, else `http/protobuf`).
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Capture mode of large strings (default: `RLTRACE_CAPTURE`, else `truncate:500`).
    pub fn capture(mut self, mode: CaptureMode) -> Self {
        self.capture = Some(mode);
        self
    }

    /// Weights of immediate reward components (default: `RLTRACE_REWARD_WEIGHTS`, else none:
    /// the collector's policy combines the components).
    pub fn reward_weights(mut self, weights: RewardWeights) -> Self {
        self.reward_weights = Some(weights);
        self
    }

    /// The latency budget (default: `RLTRACE_LATENCY_BUDGET_MS`, else 10 s); must be positive.
    pub fn latency_budget(mut self, budget: Duration) -> Self {
        self.latency_budget = Some(budget);
        self
    }

    /// The fraction of sequences kept, in [0, 1] (default: `RLTRACE_SAMPLING_RATIO`, else 1).
    pub fn sampling_ratio(mut self, ratio: f64) -> Self {
        self.sampling_ratio = Some(ratio);
        self
    }

    /// Send spans to this processor instead of the OTLP exporter (tests, custom pipelines). May
    /// be called several times.
    pub fn with_span_processor<P: SpanProcessor + 'static>(mut self, processor: P) -> Self {
        self.processors.push(Box::new(move |b| b.with_span_processor(processor)));
        self
    }

    /// Whether to install the provider as OpenTelemetry's global tracer provider and W3C trace
    /// context as the global propagator (default: yes).
    pub fn set_global(mut self, yes: bool) -> Self {
        self.set_global = yes;
        self
    }

    /// Ignore the `RLTRACE_*` and `OTEL_*` variables (builder values and defaults only).
    pub fn ignore_env(mut self) -> Self {
        self.read_env = false;
        self
    }

    /// The settings this builder gives, with the environment read: every bad value is an error.
    pub fn settings(&self) -> Result<Settings, Error> {
        let env = |name: &str| if self.read_env { env_var(name) } else { Ok(None) };
        let capture = match (self.capture, env(ENV_CAPTURE)?) {
            (Some(c), _) => c,
            (None, Some(v)) => v.parse()?,
            (None, None) => CaptureMode::default(),
        };
        let reward_weights = match (&self.reward_weights, env(ENV_REWARD_WEIGHTS)?) {
            (Some(w), _) => Some(w.clone()),
            (None, Some(v)) => Some(v.parse()?),
            (None, None) => None,
        };
        let latency_budget = match (self.latency_budget, env(ENV_LATENCY_BUDGET_MS)?) {
            (Some(d), _) => config::check_latency_budget(d)?,
            (None, Some(v)) => config::parse_latency_budget_ms(&v)?,
            (None, None) => config::DEFAULT_LATENCY_BUDGET,
        };
        let sampling_ratio = match (self.sampling_ratio, env(ENV_SAMPLING_RATIO)?) {
            (Some(r), _) => config::check_sampling_ratio(r)?,
            (None, Some(v)) => config::parse_sampling_ratio(&v)?,
            (None, None) => 1.0,
        };
        Ok(Settings { capture, reward_weights, latency_budget, sampling_ratio })
    }

    /// The transport this builder gives.
    pub fn resolved_protocol(&self) -> Result<Protocol, Error> {
        if let Some(p) = self.protocol {
            return Ok(p);
        }
        if self.read_env {
            if let Some(v) = env_var(ENV_OTLP_TRACES_PROTOCOL)? {
                return v.parse().map_err(|_| Error::config(ENV_OTLP_TRACES_PROTOCOL, format!("expected grpc, http/protobuf or http/json, got {v:?}")));
            }
            if let Some(v) = env_var(ENV_OTLP_PROTOCOL)? {
                return v.parse();
            }
        }
        Ok(Protocol::HttpProtobuf)
    }

    fn resource(&self) -> Result<Resource, Error> {
        let mut b = if self.read_env { Resource::builder() } else { Resource::builder_empty() };
        if let Some(n) = &self.service_name {
            b = b.with_service_name(n.clone());
        } else if !self.read_env {
            b = b.with_service_name("unknown_service");
        }
        if let Some(v) = &self.service_version {
            b = b.with_attribute(KeyValue::new("service.version", v.clone()));
        }
        let environment = match &self.environment {
            Some(e) => Some(e.clone()),
            None if self.read_env => env_var(ENV_ENVIRONMENT)?,
            None => None,
        };
        if let Some(e) = environment {
            b = b.with_attribute(KeyValue::new("deployment.environment", e));
        }
        if self.read_env
            && let Some((rollout, attempt)) = config::agl_link_from(env_var)?
        {
            b = b.with_attribute(KeyValue::new("agentlightning.rollout_id", rollout));
            b = b.with_attribute(KeyValue::new("agentlightning.attempt_id", attempt));
        }
        Ok(b.build())
    }

    fn otlp_exporter(&self) -> Result<opentelemetry_otlp::SpanExporter, Error> {
        let protocol = self.resolved_protocol()?;
        let key = self.resolved_api_key()?;
        let exporter = match protocol {
            Protocol::Grpc => {
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(Error::config(
                        ENV_OTLP_PROTOCOL,
                        "grpc export needs a tokio runtime: install the sdk inside one (e.g. in #[tokio::main]) or use http/protobuf",
                    ));
                }
                let mut b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
                if let Some(k) = &key {
                    use opentelemetry_otlp::WithTonicConfig;
                    let mut md = opentelemetry_otlp::tonic_types::metadata::MetadataMap::new();
                    let value = format!("Bearer {k}").parse().map_err(|_| Error::config(crate::client::ENV_API_KEY, "the key is not valid in gRPC metadata"))?;
                    md.insert("authorization", value);
                    b = b.with_metadata(md);
                }
                if let Some(e) = &self.endpoint {
                    b = b.with_endpoint(e.clone());
                }
                b.build()
            }
            Protocol::HttpProtobuf | Protocol::HttpJson => {
                let p = if protocol == Protocol::HttpJson { opentelemetry_otlp::Protocol::HttpJson } else { opentelemetry_otlp::Protocol::HttpBinary };
                let mut b = opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(p);
                if let Some(k) = &key {
                    use opentelemetry_otlp::WithHttpConfig;
                    b = b.with_headers(std::collections::HashMap::from([("authorization".to_string(), format!("Bearer {k}"))]));
                }
                if let Some(e) = &self.endpoint {
                    b = b.with_endpoint(format!("{}/v1/traces", e.trim_end_matches('/')));
                }
                b.build()
            }
        };
        exporter.map_err(|e| Error::Exporter(e.to_string()))
    }

    /// The collector's API key (`RLTRACE_API_KEY`), sent as `authorization: Bearer KEY` with
    /// every export (HTTP header or gRPC metadata). Without it the exporter still honours
    /// `OTEL_EXPORTER_OTLP_HEADERS`.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    fn resolved_api_key(&self) -> Result<Option<String>, Error> {
        let key = match &self.api_key {
            Some(k) => Some(k.clone()),
            None if self.read_env => env_var(crate::client::ENV_API_KEY)?,
            None => None,
        };
        match key {
            Some(k) if k.trim().is_empty() || k.chars().any(|c| c.is_control() || c == ' ') => {
                Err(Error::config(crate::client::ENV_API_KEY, "expected a non-empty key without spaces or control characters"))
            }
            k => Ok(k),
        }
    }

    /// Build the provider, install the SDK, and return the guard that flushes and shuts it down.
    pub fn install(mut self) -> Result<Guard, Error> {
        let settings = self.settings()?;
        let resource = self.resource()?;
        // Every span is recorded: rltrace samples whole sequences itself, and a parent-based
        // sampler would cut a sequence wherever an upstream `traceparent` says "not sampled".
        let mut pb = SdkTracerProvider::builder().with_resource(resource).with_id_generator(RlIdGenerator).with_sampler(Sampler::AlwaysOn);
        if self.processors.is_empty() {
            pb = pb.with_batch_exporter(self.otlp_exporter()?);
        } else {
            for p in std::mem::take(&mut self.processors) {
                pb = p(pb);
            }
        }
        let provider = pb.build();
        let scope = InstrumentationScope::builder("rltrace_sdk").with_version(env!("CARGO_PKG_VERSION")).build();
        let tracer = provider.tracer_with_scope(scope);
        let sample_threshold = sequence::threshold(settings.sampling_ratio);
        runtime::install(Runtime { tracer, settings, sample_threshold })?;
        if self.set_global {
            opentelemetry::global::set_tracer_provider(provider.clone());
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        }
        Ok(Guard { provider: Some(provider) })
    }
}

/// Keeps the SDK installed; flushes and shuts the tracer provider down when dropped or on
/// [`Guard::shutdown`].
#[must_use = "dropping the guard shuts the SDK down"]
#[derive(Debug)]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Guard {
    /// Export every finished span now.
    pub fn flush(&self) -> Result<(), Error> {
        match &self.provider {
            Some(p) => p.force_flush().map_err(|e| Error::Shutdown(e.to_string())),
            None => Ok(()),
        }
    }

    /// The tracer provider (to build more tracers on the same pipeline).
    pub fn provider(&self) -> Option<&SdkTracerProvider> {
        self.provider.as_ref()
    }

    /// Uninstall the SDK, export what is pending and shut the provider down.
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), Error> {
        let Some(p) = self.provider.take() else { return Ok(()) };
        runtime::uninstall();
        let flushed = p.force_flush().map_err(|e| Error::Shutdown(e.to_string()));
        let shut = p.shutdown().map_err(|e| Error::Shutdown(e.to_string()));
        flushed.and(shut)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Install the SDK from the environment (`OTEL_EXPORTER_OTLP_*`, `OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`, `RLTRACE_*`). Same as `builder().install()`.
///
/// ```no_run
/// fn main() -> Result<(), rltrace_sdk::Error> {
///     let guard = rltrace_sdk::init()?;
///     // ... run the agents ...
///     guard.shutdown()
/// }
/// ```
pub fn init() -> Result<Guard, Error> {
    builder().install()
}

/// A [`Builder`] with nothing set.
pub fn builder() -> Builder {
    Builder::default()
}
