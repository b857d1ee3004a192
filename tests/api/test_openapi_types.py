"""The OpenAPI spec is typed enough for a generated client: openapi-typescript turns it into TypeScript types and
tsc type-checks a small phone client against them (clients/typescript/check.ts), which also reads answers of the app's
everyday routes (journal, routing advice, privacy settings, grants, /v1/models, /healthz). With the response schema of
one route removed from the spec, the same file no longer compiles: the check is real."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from upcoach.app import create_app
from upcoach.config import Settings

TS_DIR = Path(__file__).resolve().parents[2] / "clients" / "typescript"
# The routes the phone uses, each with its declared (non-error) answer.
PHONE_ROUTES = [
    ("/api/ai/models/recommend", "get", "200"),
    ("/api/ai/models/signing-key", "get", "200"),
    ("/api/ai/models/{model_id}/manifest", "get", "200"),
    ("/api/devices", "post", "201"),
    ("/api/devices", "get", "200"),
    ("/api/devices/{device_id}/revoke", "post", "200"),
    ("/api/sync", "post", "200"),
    ("/api/sync", "get", "200"),
]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return create_app(Settings(data_dir=tmp_path_factory.mktemp("spec"))).openapi()


@pytest.fixture(scope="module")
def node_tools() -> Path:
    """openapi-typescript and tsc from clients/typescript/package-lock.json (installed once, like `make test`)."""
    if shutil.which("npm") is None:
        pytest.fail("npm is needed for the TypeScript check (apt-get install nodejs npm)")
    if not (TS_DIR / "node_modules" / ".bin" / "tsc").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=TS_DIR, check=True, capture_output=True)
    return TS_DIR / "node_modules" / ".bin"


def typecheck(bin_dir: Path, spec: dict[str, Any], tmp: Path) -> subprocess.CompletedProcess[str]:
    spec_path = tmp / "openapi.json"
    spec_path.write_text(json.dumps(spec))
    generated = TS_DIR / "generated" / "api.d.ts"
    made = subprocess.run([str(bin_dir / "openapi-typescript"), str(spec_path), "-o", str(generated)],
                          capture_output=True, text=True)  # fmt: skip
    assert made.returncode == 0, made.stderr
    return subprocess.run([str(bin_dir / "tsc"), "-p", str(TS_DIR / "tsconfig.json")], capture_output=True, text=True)


def test_phone_routes_declare_their_answers_and_errors(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert schemas["Capability"]["enum"] == [
        "local-llm", "npu", "gpu", "neural-engine", "nnapi", "coreml", "metal", "vulkan",
    ]  # fmt: skip
    for path, method, status in PHONE_ROUTES:
        responses = spec["paths"][path][method]["responses"]
        assert "$ref" in json.dumps(responses[status]["content"]["application/json"]["schema"]), (path, method)
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            error = operation["responses"].get("400", {}).get("content", {}).get("application/json", {})
            assert error.get("schema") == {"$ref": "#/components/schemas/ErrorOut"}, (path, method)
    assert "HTTPValidationError" not in json.dumps(spec)  # validation errors answer 400 in the error shape


def test_typescript_client_compiles_against_the_spec(spec: dict[str, Any], node_tools: Path, tmp_path: Path) -> None:
    checked = typecheck(node_tools, spec, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for path, method, status in [("/api/sync", "post", "200"), ("/api/journal/entries", "post", "201")]:
        untyped = copy.deepcopy(spec)
        untyped["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"] = {}
        broken = typecheck(node_tools, untyped, tmp_path)
        assert broken.returncode != 0 and "check.ts" in broken.stdout, path
