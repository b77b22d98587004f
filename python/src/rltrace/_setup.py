"""``rltrace.configure``: the tracer (the application's own provider when it set one up, else a new
provider with OTLP export), the SDK settings, state providers, and the collector URL of the
reward helpers. Exporter packages are imported here, never at ``import rltrace``."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import trace

from . import __version__, _runtime
from ._config import AgentLightningLink, CaptureMode, ConfigError, RewardWeights, Settings, resolve_settings

log = logging.getLogger("rltrace")

ENV_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
ENV_OTLP_TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
ENV_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"


class Handle:
    """What :func:`configure` installed: flush it, or shut it down (a provider rltrace created
    is shut down; the application's own provider is only flushed and left running)."""

    def __init__(self, provider: Any, owned: bool, settings: Settings, runtime: _runtime.Runtime) -> None:
        self.provider = provider
        self.owned = owned
        self.settings = settings
        self._runtime = runtime

    def flush(self, timeout_millis: int = 30_000) -> bool:
        """Export every finished span now; ``False`` when the provider cannot flush in time."""
        f = getattr(self.provider, "force_flush", None)
        return bool(f(timeout_millis)) if callable(f) else True

    def shutdown(self) -> None:
        """Uninstall the SDK and flush; shut the provider down when rltrace created it."""
        global _handle
        if _runtime.current() is self._runtime:
            _runtime.install(None)
        if self._runtime.providers is not None:
            self._runtime.providers.stop()
        self.flush()
        if self.owned:
            s = getattr(self.provider, "shutdown", None)
            if callable(s):
                s()
        if _handle is self:
            _handle = None


_handle: Handle | None = None


def _protocol(protocol: str | None) -> str:
    p = protocol or os.environ.get(ENV_OTLP_TRACES_PROTOCOL) or os.environ.get(ENV_OTLP_PROTOCOL) or "http/protobuf"
    p = p.strip()
    if p not in ("grpc", "http/protobuf", "http/json"):
        raise ConfigError(ENV_OTLP_PROTOCOL, f"expected grpc, http/protobuf or http/json, got {p!r}")
    if p == "http/json":
        raise ConfigError(ENV_OTLP_PROTOCOL, "the Python OTLP exporter has no http/json: use http/protobuf or grpc")
    return p


def _exporter(endpoint: str | None, protocol: str | None, headers: Mapping[str, str] | None) -> Any:
    p = _protocol(protocol)
    if p == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        insecure = endpoint.startswith("http://") if endpoint else None
        return GrpcExporter(endpoint=endpoint, insecure=insecure, headers=dict(headers) if headers else None)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    url = endpoint.rstrip("/") + "/v1/traces" if endpoint else None
    return HttpExporter(endpoint=url, headers=dict(headers) if headers else None)


def _collector_url(explicit: str | None, endpoint: str | None, protocol: str | None) -> str | None:
    if explicit:
        return explicit.rstrip("/")
    env = os.environ.get("RLTRACE_COLLECTOR_URL")
    if env and env.strip():
        return env.strip().rstrip("/")
    # OTLP/HTTP and the REST API share the collector's HTTP listener.
    try:
        p = _protocol(protocol)
    except ConfigError:
        return None
    ep = endpoint or os.environ.get(ENV_OTLP_ENDPOINT)
    if p != "grpc" and ep and ep.strip():
        return ep.strip().rstrip("/")
    return None


def configure(
    *,
    service_name: str | None = None,
    service_version: str | None = None,
    environment: str | None = None,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    tracer_provider: Any = None,
    capture: str | CaptureMode | None = None,
    reward_weights: Mapping[str, float] | RewardWeights | None = None,
    latency_budget_s: float | None = None,
    sampling_ratio: float | None = None,
    agentlightning: AgentLightningLink | None = None,
    state_providers: Sequence[Callable[[], Mapping[str, Any]]] = (),
    state_provider_interval_s: float = 1.0,
    collector_url: str | None = None,
    api_key: str | None = None,
    set_global: bool = True,
) -> Handle:
    """Set rltrace up. Arguments win over the environment, which wins over the defaults; a bad
    value raises :class:`rltrace.ConfigError`.

    Tracer provider, in this order: ``tracer_provider`` when given; else the application's
    global OpenTelemetry SDK provider when it already set one up (it is used as it is, never
    replaced; rltrace's OTLP exporter is added to it only when ``endpoint`` is passed); else a
    new provider (``service.name`` from ``service_name`` or ``OTEL_SERVICE_NAME``; every span
    sampled, since rltrace samples whole sequences itself) exporting over OTLP
    (``endpoint`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``protocol`` /
    ``OTEL_EXPORTER_OTLP_PROTOCOL``: ``http/protobuf`` by default or ``grpc``, ``headers`` /
    ``OTEL_EXPORTER_OTLP_HEADERS``) through a bounded batch processor, installed as the global
    provider when ``set_global``.

    SDK settings: ``capture`` (``RLTRACE_CAPTURE``: ``full``, ``truncate:N`` (default 500),
    ``hash``, ``none``), ``reward_weights`` (``RLTRACE_REWARD_WEIGHTS``, a JSON object),
    ``latency_budget_s`` (``RLTRACE_LATENCY_BUDGET_MS``, default 10 s), ``sampling_ratio``
    (``RLTRACE_SAMPLING_RATIO`` or ``RLTRACE_SAMPLE_RATIO``, default 1), the Agent Lightning link
    (``AGL_ROLLOUT_ID`` + ``AGL_ATTEMPT_ID`` or ``AGL_EVENT_URL``). ``state_providers``: functions
    returning a dict merged into every triplet's state, refreshed in the background every
    ``state_provider_interval_s``. ``collector_url`` (``RLTRACE_COLLECTOR_URL``, else the OTLP/HTTP
    endpoint) and ``api_key`` (``RLTRACE_API_KEY``) serve :func:`rltrace.assign_reward` and
    :func:`rltrace.assign_sequence_reward`; the key is also sent with the spans
    (``authorization: Bearer KEY``) unless ``headers`` or ``OTEL_EXPORTER_OTLP_HEADERS`` say otherwise.

    Calling it again replaces the settings and shuts the previous handle down; a global provider
    rltrace created is kept (OpenTelemetry sets the global provider once) and taken over.
    """
    global _handle
    settings = resolve_settings(
        capture=capture,
        reward_weights=reward_weights,
        latency_budget_s=latency_budget_s,
        sampling_ratio=sampling_ratio,
        agentlightning=agentlightning,
    )
    if state_provider_interval_s <= 0:
        raise ConfigError("state_provider_interval_s", "must be positive")
    api = api_key or os.environ.get("RLTRACE_API_KEY") or None
    env_headers = os.environ.get("OTEL_EXPORTER_OTLP_HEADERS") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
    if api and headers is None and not env_headers:
        # The same key authenticates the spans (a collector with keys needs the ingest scope).
        headers = {"authorization": f"Bearer {api}"}
    owned = False
    provider = tracer_provider
    prev = _handle
    if prev is not None:
        # A provider rltrace created and made global cannot be replaced (OpenTelemetry sets the
        # global provider once): a new configure() keeps it and takes it over.
        if prev.owned and provider is None and trace.get_tracer_provider() is prev.provider:
            provider, owned = prev.provider, True
            prev.owned = False
        prev.shutdown()
    if provider is None:
        existing = trace.get_tracer_provider()
        from opentelemetry.sdk.trace import TracerProvider

        if isinstance(existing, TracerProvider):
            provider = existing
            log.info("rltrace uses the tracer provider the application set up")
            if endpoint is not None:
                from opentelemetry.sdk.trace.export import BatchSpanProcessor

                existing.add_span_processor(BatchSpanProcessor(_exporter(endpoint, protocol, headers)))
        else:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.sampling import ALWAYS_ON

            attrs: dict[str, Any] = {}
            if service_name:
                attrs["service.name"] = service_name
            if service_version:
                attrs["service.version"] = service_version
            env_name = environment or os.environ.get("RLTRACE_ENVIRONMENT")
            if env_name:
                attrs["deployment.environment"] = env_name
            link = settings.agentlightning
            if link is not None:
                attrs["agentlightning.rollout_id"] = link.rollout_id
                attrs["agentlightning.attempt_id"] = link.attempt_id
            provider = TracerProvider(resource=Resource.create(attrs), sampler=ALWAYS_ON)
            provider.add_span_processor(BatchSpanProcessor(_exporter(endpoint, protocol, headers)))
            owned = True
            if set_global:
                trace.set_tracer_provider(provider)
    tracer = provider.get_tracer("rltrace", __version__)
    providers = None
    if state_providers:
        providers = _runtime.StateProviders(list(state_providers), state_provider_interval_s)
        providers.wait_first(1.0)
    rt = _runtime.Runtime(tracer, settings, providers, _collector_url(collector_url, endpoint, protocol), api)
    _runtime.install(rt)
    _handle = Handle(provider, owned, settings, rt)
    return _handle


def flush(timeout_millis: int = 30_000) -> bool:
    """Flush the configured provider (``True`` when nothing is configured)."""
    return _handle.flush(timeout_millis) if _handle is not None else True


def shutdown() -> None:
    """Uninstall rltrace (see :meth:`Handle.shutdown`)."""
    if _handle is not None:
        _handle.shutdown()
