"""OpenTelemetry traces, optional: one trace per call, joined across stages and processes.

Off unless the ``otel`` extra is installed and ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_TRACES_EXPORTER`` (not ``none``) is set; then ``configure()`` builds a tracer provider from
the standard ``OTEL_*`` variables and instruments httpx, so every Kallglot and handler call gets a
client span and carries a W3C ``traceparent`` header. While off, ``stage()`` costs one ``None``
check per call and nothing is imported.

A call's stages run at different times, often in different replicas, so no context can be handed
from one to the next in memory. Instead the trace id (and the id of a virtual root span) is derived
from the session id: intake, start, every poll and every delivery of one call land in the same trace
wherever they run, and nothing needs storing.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

P = ParamSpec("P")
R = TypeVar("R")

_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def wanted(environ: dict[str, str] | None = None) -> bool:
    """True when the standard OTEL_* variables ask for traces."""
    env = os.environ if environ is None else environ
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none" or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        exporter or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def available() -> bool:
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return False
    return True


def configure(version: str, exporter: SpanExporter | None = None) -> bool:
    """Start tracing: with ``exporter`` (tests), or the one the OTEL_* variables name. True when on."""
    global _tracer, _provider
    if _tracer is not None:
        return True
    if exporter is None and not (wanted() and available()):
        return False
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create({"service.name": "kallglot-receiver", "service.version": version})
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        provider.add_span_processor(BatchSpanProcessor(_exporter_from_env()))
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    _provider, _tracer = provider, provider.get_tracer("receiver")
    return True


def _exporter_from_env() -> SpanExporter:
    name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    # OTLP over HTTP/protobuf: endpoint, headers and timeout come from OTEL_EXPORTER_OTLP_*.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def shutdown() -> None:
    """Flush and stop (end of ``serve``, end of a test); instrumentation is removed again."""
    global _tracer, _provider
    if _provider is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor().uninstrument()
    _provider.shutdown()
    _tracer, _provider = None, None


def call_ids(session_id: str) -> tuple[int, int]:
    """The trace id and virtual root span id of a call: the same in every process."""
    digest = hashlib.sha256(f"kallglot-receiver:{session_id}".encode()).digest()
    return int.from_bytes(digest[:16], "big") or 1, int.from_bytes(digest[16:24], "big") or 1


def stage(
    name: str, session_of: Callable[..., str | None]
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Decorate a use case: while tracing is on, it runs in span ``name`` of its call's trace.

    ``session_of`` receives the decorated method's arguments after ``self`` and names the session.
    """

    def decorate(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            tracer = _tracer
            if tracer is None:
                return await fn(*args, **kwargs)
            session_id = session_of(*args[1:], **kwargs)
            with tracer.start_as_current_span(
                f"call.{name}",
                context=_call_context(session_id),
                attributes={"kallglot.session_id": session_id} if session_id else None,
            ):
                return await fn(*args, **kwargs)

        return wrapper

    return decorate


def _call_context(session_id: str | None) -> Any:
    from opentelemetry import trace

    if not session_id:
        return None  # a new trace of its own (e.g. an analysis event that names no session)
    trace_id, span_id = call_ids(session_id)
    parent = trace.SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def log_fields() -> dict[str, str]:
    """``trace_id``/``span_id`` of the current span for the JSON logs; {} while tracing is off."""
    if _tracer is None:
        return {}
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
