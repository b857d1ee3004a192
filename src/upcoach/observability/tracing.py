"""OpenTelemetry traces: HTTP route -> routing decision -> guard, and each backend the answer was tried on.

Off by default, and then free: no OpenTelemetry import happens, ``span`` hands back one shared ``nullcontext`` and
``start_span`` returns None. ``UPCOACH_TRACING=otlp`` exports over OTLP/HTTP with the SDK's batch processor (the
exporter reads the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``/``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, the resource
``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES``); it needs the ``otel`` extra (``pip install 'upcoach[otel]'``).

The tree of one chat request::

    POST /v1/chat/completions          (server span, observability/http.py)
    ├── upcoach.routing                (routing/engine.py: the decision)
    │   └── upcoach.guard              (security/guard.py: injection and special-category checks)
    └── upcoach.backend                (one per backend tried: local, pool or cloud)

Attributes are ids, names, counts and verdicts, never message text.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

_NULL: AbstractContextManager[None] = nullcontext()
_tracer: Tracer | None = None
_provider: Any = None


def enabled() -> bool:
    return _tracer is not None


def use_provider(provider: Any) -> None:
    """Trace into ``provider`` (an SDK TracerProvider; None turns tracing off). Tests pass one with an in-memory
    exporter; ``configure_tracing`` passes the OTLP one."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("upcoach") if provider is not None else None


def configure_tracing(mode: str) -> None:
    """``off`` or ``otlp`` (Settings.tracing); called once by create_app."""
    if mode == "off":
        return
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:  # a clear start-up error instead of silently not tracing
        raise RuntimeError("UPCOACH_TRACING=otlp needs the otel extra: pip install 'upcoach[otel]'") from exc
    provider = TracerProvider(resource=Resource.create({"service.name": "upcoach"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    use_provider(provider)


def shutdown_tracing() -> None:
    """Flush what the batch processor holds (create_app's shutdown)."""
    if _provider is not None and hasattr(_provider, "force_flush"):
        _provider.force_flush()


def server_span(method: str) -> AbstractContextManager[Span | None]:
    """The span of one HTTP request; ``finish_server_span`` names it by its route template once routing is done."""
    if _tracer is None:
        return _NULL
    from opentelemetry.trace import SpanKind

    return _tracer.start_as_current_span(  # type: ignore[return-value]
        method, kind=SpanKind.SERVER, attributes={"http.request.method": method}
    )


def finish_server_span(span: Span | None, method: str, route: str, status: int, request_id: str) -> None:
    if span is None:
        return
    span.update_name(f"{method} {route}")
    span.set_attributes({"http.route": route, "http.response.status_code": status, "upcoach.request_id": request_id})
    if status >= 500:
        from opentelemetry.trace import StatusCode

        span.set_status(StatusCode.ERROR)


def span(name: str, **attributes: str | int | float | bool) -> AbstractContextManager[Span | None]:
    """A child of the current span, current while the block runs (no ``yield`` inside it: use ``start_span``)."""
    if _tracer is None:
        return _NULL
    return _tracer.start_as_current_span(name, attributes=attributes)  # type: ignore[return-value]


def start_span(name: str, **attributes: str | int | float | bool) -> Span | None:
    """A child of the current span that is *not* made current: for work that spans ``yield``s of a generator,
    where attaching a context would be detached in another one. The caller ends it."""
    if _tracer is None:
        return None
    return _tracer.start_span(name, attributes=attributes)
