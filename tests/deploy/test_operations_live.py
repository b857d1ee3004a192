"""What an operator reads off a running server: JSON logs with request ids, /version, and the #18 metrics."""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from tests.deploy.conftest import SECRET, OpsServer
from upcoach.cli import app
from upcoach.observability.logs import JsonFormatter, RequestIdFilter, request_id_var

pytestmark = pytest.mark.slow


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples(text).items() if n == name and set(labels.items()) <= set(ls))


def test_metrics_carry_the_operations_series(served: OpsServer) -> None:
    with served.admin() as admin:
        text = admin.get("/metrics").text
    assert value(text, "process_resident_memory_bytes") > 0
    assert value(text, "process_cpu_seconds_total") > 0
    assert value(text, "upcoach_http_responses_total", route="/v1/chat/completions", status="200") >= 1
    assert value(text, "upcoach_http_responses_total", route="/v1/chat/completions", method="POST") >= 2
    assert value(text, "upcoach_time_per_output_token_seconds_count", mode="local") >= 1
    assert value(text, "upcoach_time_per_output_token_seconds_sum", mode="local") > 0
    assert value(text, "upcoach_local_queue_wait_seconds_count") >= 1
    assert value(text, "upcoach_build_info", build="test-build-42") == 1
    assert "upcoach_records_pending" in text and "upcoach_records_spooled" in text


def test_metrics_and_version_need_an_operator_key(served: OpsServer) -> None:
    with served.user() as user:
        assert user.get("/metrics").status_code == 403
        assert user.get("/version").status_code == 403


def test_version_names_build_model_and_schema(served: OpsServer) -> None:
    with served.admin() as admin:
        body = admin.get("/version").json()
    assert body["build"] == "test-build-42"
    assert body["model"] == "qwen2.5-0.5b-instruct"
    assert body["schemaRevision"]
    with served.admin() as admin:
        assert value(admin.get("/metrics").text, "upcoach_build_info", schema_revision=body["schemaRevision"]) == 1


def test_json_logs_have_a_request_id_on_every_line_and_never_message_text(served: OpsServer) -> None:
    lines = [line for line in served.server.log().splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all("request_id" in event and "event" in event for event in events)
    chat = [e for e in events if e["request_id"] == "ops-test-1"]
    assert chat and any(e["args"][:3] == ["POST", "/v1/chat/completions", 200] for e in chat if "args" in e)
    log = served.server.log()
    assert "Quokka" not in log and "Ingrid" not in log
    assert "forged-line" not in log


def test_json_formatter_drops_message_text_and_exception_messages() -> None:
    record = logging.LogRecord("upcoach.x", logging.ERROR, __file__, 1, "failed for %s after %d tries", (SECRET, 3),
                               None)  # fmt: skip
    try:
        raise ValueError(SECRET)
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    token = request_id_var.set("rid-1")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "rid-1"
    assert line["event"] == "failed for %s after %d tries"
    assert line["args"] == ["<str>", 3]
    assert line["exc_type"] == "ValueError"
    assert "Quokka" not in json.dumps(line)


def test_unknown_log_format_is_refused() -> None:
    result = CliRunner().invoke(app, ["serve", "--log-format", "yaml"])
    assert result.exit_code == 2
