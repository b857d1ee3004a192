"""Every JSON route declares what it answers: /openapi.json of the app the factory builds holds a response schema
(a component, so generated clients get a named type) for each success answer of every route under /api and /v1,
and of /healthz, /readyz and /version. The dashboard's HTML pages are not part of the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.testclient import TestClient

from upcoach.api.hybrid_schemas import HybridProcessRequest
from upcoach.app import create_app
from upcoach.config import Settings
from upcoach.modelstore.devices import Capability

API_PREFIXES = ("/api/", "/v1/")
SERVICE_PATHS = {"/healthz", "/readyz", "/version", "/tokenize", "/detokenize"}


def api_routes(app: FastAPI) -> list[RouteContext]:
    """The app's routes under the paths it serves them at (included routers are walked into)."""
    return [
        route
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute)
        and route.original_route.include_in_schema
        and (route.path.startswith(API_PREFIXES) or route.path in SERVICE_PATHS)
    ]


def untyped_routes(app: FastAPI) -> list[str]:
    """``METHOD path`` of every API route whose success answer has no named JSON schema in the spec."""
    spec = app.openapi()
    missing = []
    for route in api_routes(app):
        for method in sorted(route.methods or ()):
            responses = spec["paths"][route.path][method.lower()]["responses"]
            success = {status: answer for status, answer in responses.items() if status.startswith("2")}
            if not success or not all(_typed(answer) for answer in success.values()):
                missing.append(f"{method} {route.path}")
    return missing


def _typed(answer: dict[str, Any]) -> bool:
    content = answer.get("content")
    if not content:
        return True  # 204, or a status described without a body (206 of a ranged download)
    if "application/json" not in content:
        return bool(content)  # a declared non-JSON answer: the model file, an event stream
    return "$ref" in content["application/json"].get("schema", {})


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return create_app(Settings(data_dir=tmp_path_factory.mktemp("schemas")))


def test_every_json_route_declares_its_answer(app: FastAPI) -> None:
    assert len(api_routes(app)) >= 55  # the walk saw the API, not an empty app
    assert untyped_routes(app) == []


def test_a_route_without_a_response_model_is_found(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))

    @app.get("/api/untyped")
    async def untyped() -> dict[str, object]:
        return {"anything": 1}

    @app.get("/api/typed-elsewhere", response_model=None)
    async def raw() -> None:
        return None

    assert untyped_routes(app) == ["GET /api/untyped", "GET /api/typed-elsewhere"]


def test_error_answers_are_declared_in_the_error_shape(app: FastAPI) -> None:
    spec = app.openapi()
    error = {"$ref": "#/components/schemas/ErrorOut"}
    for path, method, status in [
        ("/api/journal/entries/{entry_id}", "delete", "404"),
        ("/api/privacy/grants/{grant_id}", "delete", "404"),
        ("/api/privacy/settings", "put", "409"),
        ("/api/ai/models/rollback", "post", "409"),
        ("/api/ai/models/{model_id}/artifact", "get", "416"),
        ("/api/coach/strategies/{strategy_id}", "get", "404"),
        ("/api/experiments/{key}/assignment", "get", "404"),
    ]:
        answer = spec["paths"][path][method]["responses"][status]
        assert answer["content"]["application/json"]["schema"] == error, (path, method, status)
    # /readyz's 503 is its own status document, not an error
    assert spec["paths"]["/readyz"]["get"]["responses"]["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ReadyOut"
    }


def test_device_profile_capabilities_are_the_declared_enum(app: FastAPI) -> None:
    schemas = app.openapi()["components"]["schemas"]
    capabilities = schemas["DeviceProfile"]["properties"]["capabilities"]
    assert capabilities["items"] == {"$ref": "#/components/schemas/Capability"}


def test_device_profile_reads_old_spellings_and_refuses_unknown_capabilities(tmp_path: Path) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "deviceProfile": {"capabilities": ["telepathy"]}}
    with TestClient(create_app(Settings(data_dir=tmp_path, load_model=False, auth="off"))) as client:
        refused = client.post("/api/ai/hybrid/route", json=body)
    assert refused.status_code == 400 and refused.json()["error"]["param"].startswith("deviceProfile.capabilities")
    profile = HybridProcessRequest.model_validate(
        {**body, "deviceProfile": {"capabilities": ["LOCAL_LLM", " npu ", "on-device-llm"]}}
    ).device_profile
    assert profile is not None and profile.capabilities == [Capability.local_llm, Capability.npu, Capability.local_llm]
