"""OpenTelemetry traces of a chat request through the app create_app builds (the real model answers), collected
in memory; and tracing off costs nothing but a shared no-op context."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import data_dir_with_model
from upcoach.app import create_app
from upcoach.config import Settings
from upcoach.observability import tracing

on_session_loop = pytest.mark.asyncio(loop_scope="session")
SECRET = "Wombat-Harbour-5531"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    collected = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(collected))
    tracing.use_provider(provider)
    try:
        yield collected
    finally:
        tracing.use_provider(None)


@pytest.fixture
async def client(tmp_path: Path, model_path: Path, exporter: InMemorySpanExporter) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(data_dir=data_dir_with_model(tmp_path, model_path), auth="off", redis_url=None, threads=2)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as http:
            for _ in range(600):  # the model loads in the background
                if (await http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.2)
            exporter.clear()
            yield http


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, [span.name for span in spans]
    return found[0]


@pytest.mark.slow
@on_session_loop
async def test_a_chat_request_is_one_trace_route_routing_guard_backend(
    client: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": f"Greet {SECRET} in five words."}],
            "max_tokens": 12, "stream": True}  # fmt: skip
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for _ in response.aiter_lines():
            pass
    spans = exporter.get_finished_spans()
    route = by_name(spans, "POST /v1/chat/completions")
    routing = by_name(spans, "upcoach.routing")
    guard = by_name(spans, "upcoach.guard")
    backend = by_name(spans, "upcoach.backend")
    assert route.parent is None
    assert routing.parent.span_id == route.context.span_id  # type: ignore[union-attr]
    assert guard.parent.span_id == routing.context.span_id  # type: ignore[union-attr]
    assert backend.parent.span_id == route.context.span_id  # type: ignore[union-attr]
    assert len({span.context.trace_id for span in spans}) == 1
    assert route.attributes["http.response.status_code"] == 200
    assert routing.attributes["upcoach.decision"] == "local"
    assert guard.attributes["upcoach.guard.injection"] == "allow"
    assert backend.attributes["upcoach.backend.outcome"] == "ok"
    assert backend.attributes["upcoach.cloud"] is False
    every_value = " ".join(str(v) for span in spans for v in (span.attributes or {}).values())
    assert SECRET not in every_value


def test_tracing_off_is_a_shared_no_op() -> None:
    assert not tracing.enabled()
    assert tracing.span("upcoach.routing") is tracing.span("upcoach.guard")
    assert tracing.start_span("upcoach.backend") is None
    with tracing.server_span("GET") as span:
        assert span is None


class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append((self.path, self.headers["content-type"], body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_otlp_mode_exports_to_the_configured_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{server.server_port}/v1/traces")
    try:
        tracing.configure_tracing("otlp")
        with tracing.span("upcoach.routing", **{"upcoach.request_id": "r-1"}):
            pass
        tracing.shutdown_tracing()
    finally:
        tracing.use_provider(None)
        server.shutdown()
    assert _Collector.received
    path, content_type, body = _Collector.received[0]
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    assert b"upcoach.routing" in body and b"r-1" in body
