"""OpenTelemetry tracing with the GenAI semantic-convention attributes.

Nothing is exported unless configured: with neither an OTLP endpoint nor console tracing,
a no-op tracer is used (near zero cost on the hot path). The tracer provider belongs to the
runtime that made it; the OpenTelemetry global provider is never replaced.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from arbor.core.errors import ConfigError

__all__ = ["GenAI", "make_tracer"]


class GenAI:
    """Attribute names from the OpenTelemetry GenAI semantic conventions."""

    OPERATION = "gen_ai.operation.name"
    SYSTEM = "gen_ai.system"
    PROVIDER = "gen_ai.provider.name"
    REQUEST_MODEL = "gen_ai.request.model"
    REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
    REQUEST_TEMPERATURE = "gen_ai.request.temperature"
    REQUEST_TOP_P = "gen_ai.request.top_p"
    RESPONSE_ID = "gen_ai.response.id"
    RESPONSE_MODEL = "gen_ai.response.model"
    RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
    USAGE_INPUT = "gen_ai.usage.input_tokens"
    USAGE_OUTPUT = "gen_ai.usage.output_tokens"
    ERROR_TYPE = "error.type"


def make_tracer(
    *,
    otlp_endpoint: str | None = None,
    console: bool = False,
    processors: list[SpanProcessor] | None = None,
    service_name: str = "arbor",
) -> trace.Tracer:
    """A tracer for one runtime. ``processors`` lets tests attach an in-memory exporter."""
    if not (otlp_endpoint or console or processors):
        return trace.NoOpTracer()
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    for p in processors or []:
        provider.add_span_processor(p)
    if console:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    if otlp_endpoint:
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(otlp_endpoint)))
    return provider.get_tracer("arbor")


def _otlp_exporter(endpoint: str) -> Any:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:  # the exporter is an optional extra
        raise ConfigError(
            "ARBOR_OTLP_ENDPOINT is set but opentelemetry-exporter-otlp-proto-http is not "
            "installed (pip install 'arbor[otlp]')",
            variable="ARBOR_OTLP_ENDPOINT",
        ) from exc
    return OTLPSpanExporter(endpoint=endpoint)
