"""Wire shapes of the model management API (camelCase), and conversions from the model store's types."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from upcoach.modelstore.catalog import CatalogEntry
from upcoach.modelstore.devices import Capability, Recommendation
from upcoach.modelstore.signing import SignedManifest

SHA256 = r"^[0-9a-fA-F]{64}$"


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class DownloadBody(_Camel):
    """Exactly one of ``source`` (an http(s) URL) and ``modelId`` (a catalog model)."""

    source: str | None = Field(default=None, max_length=2048)
    model_id: str | None = Field(default=None, max_length=200)
    name: str | None = Field(default=None, max_length=128)
    version: str | None = Field(default=None, max_length=64)
    sha256: str | None = Field(default=None, pattern=SHA256)


class UpdateBody(_Camel):
    """``modelId``: an installed version (``name@version``, or a name: its newest ready version) or a catalog model
    to fetch; ``source``: a URL with a new version of the serving model."""

    model_id: str | None = Field(default=None, max_length=200)
    source: str | None = Field(default=None, max_length=2048)
    version: str | None = Field(default=None, max_length=64)
    sha256: str | None = Field(default=None, pattern=SHA256)


class ExperimentBody(_Camel):
    candidate_id: str = Field(min_length=1, max_length=200)
    share: float = Field(ge=0, le=1)


class RatingBody(_Camel):
    """A rating of one answer the caller was served (a version cannot be rated by name)."""

    request_id: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00]+$")
    rating: int = Field(ge=1, le=5)


class RecommendationOut(_Camel):
    """Which model the hardware could run (``tier``, ``modelId``), and apart from it whether the app reports the
    runtime to run it (``runtimeReported``; null: no capabilities reported) and so whether to run it now
    (``onDevice``)."""

    tier: Literal["flagship", "mid-range", "low-end"]
    model_id: str | None
    reasons: list[str]
    size_bytes: int | None
    sha256: str | None
    quantization: str | None
    runtime_reported: bool | None
    on_device: bool
    accelerators: list[Capability]
    installed_id: str | None
    artifact_url: str | None
    manifest_url: str | None


class ManifestOut(_Camel):
    name: str
    version: str
    sha256: str
    size: int
    signature: str
    key_id: str


class SigningKeyOut(_Camel):
    key_id: str
    algorithm: str
    public_key: str
    public_key_pem: str


def version_json(version: Any, *, serving: set[str]) -> dict[str, Any]:
    return {
        "id": version.id,
        "name": version.name,
        "version": version.version,
        "source": version.source,
        "sha256": version.sha256,
        "size": version.size,
        "quantization": version.quantization,
        "licence": version.licence,
        "status": version.status,
        "active": version.active,
        "previous": version.previous,
        "deviceTier": version.device_tier,
        "installed": True,
        "loaded": version.id in serving,
        "error": version.error,
        "createdAt": version.created_at.isoformat(),
        "activatedAt": version.activated_at.isoformat() if version.activated_at else None,
    }


def catalog_json(entry: CatalogEntry) -> dict[str, Any]:
    """A catalog model no version of which is installed: what a download would fetch."""
    tier = next((tag.removesuffix("-device") for tag in entry.tags if tag.endswith("-device")), None)
    return {
        "id": entry.name,
        "name": entry.name,
        "version": None,
        "source": "catalog",
        "sha256": entry.sha256,
        "size": entry.size,
        "quantization": entry.quantization,
        "licence": entry.licence,
        "status": "available",
        "active": False,
        "previous": False,
        "deviceTier": tier,
        "installed": False,
        "loaded": False,
        "error": None,
        "createdAt": None,
        "activatedAt": None,
    }


def recommendation_json(recommendation: Recommendation, installed_id: str | None) -> dict[str, Any]:
    base = "/api/ai/models/"
    return {
        "tier": recommendation.tier,
        "modelId": recommendation.model_id,
        "reasons": list(recommendation.reasons),
        "sizeBytes": recommendation.size_bytes,
        "sha256": recommendation.sha256,
        "quantization": recommendation.quantization,
        "runtimeReported": recommendation.runtime_reported,
        "onDevice": recommendation.on_device,
        "accelerators": list(recommendation.accelerators),
        "installedId": installed_id,
        "artifactUrl": f"{base}{installed_id}/artifact" if installed_id else None,
        "manifestUrl": f"{base}{installed_id}/manifest" if installed_id else None,
    }


def manifest_json(manifest: SignedManifest) -> dict[str, Any]:
    return {
        "name": manifest.name,
        "version": manifest.version,
        "sha256": manifest.sha256,
        "size": manifest.size,
        "signature": manifest.signature,
        "keyId": manifest.key_id,
    }


# ---- answers of the admin routes -----------------------------------------------------------------------------------
class _Out(_Camel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class JobOut(_Out):
    """A download or update; ``kind`` and the live figures are null for jobs of an earlier process."""

    id: str
    kind: str | None
    source: str | None
    model_id: str | None
    status: str
    bytes_done: int
    bytes_total: int | None
    rate_bytes_per_sec: float | None
    eta_seconds: float | None
    error: str | None
    error_code: str | None
    result: dict[str, Any] | None
    created_at: str
    updated_at: str


class JobEnvelope(_Out):
    job: JobOut


class ModelEntryOut(_Out):
    """An installed version, or a catalog model none of whose versions is installed (``status: available``)."""

    id: str
    name: str
    version: str | None
    source: str | None
    sha256: str | None
    size: int | None
    quantization: str | None
    licence: str | None
    status: str
    active: bool
    previous: bool
    device_tier: str | None
    installed: bool
    loaded: bool
    error: str | None
    created_at: str | None
    activated_at: str | None


class AbTestOut(_Out):
    active_id: str
    candidate_id: str
    share: float
    started_at: str
    versions: dict[str, dict[str, Any]] = Field(description="per version: requests, latencies, ratings")


class AbTestEnvelope(_Out):
    ab_test: AbTestOut | None


class StatusOut(_Out):
    active_id: str | None
    serving_model: str | None
    models: list[ModelEntryOut]
    jobs: list[JobOut]
    ab_test: AbTestOut | None


class SwappedOut(_Out):
    active_id: str
    previous_id: str | None


class AbStoppedOut(_Out):
    active_id: str
    experiment: AbTestOut


class DeletedOut(_Out):
    id: str
    deleted: bool


class AbRatingOut(_Out):
    version: str
    rating: int
