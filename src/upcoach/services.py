"""What the API layer talks to: engines, repositories and settings, built once per app by create_app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from upcoach.coaching.journal import Journal
from upcoach.coaching.ratings import Ratings
from upcoach.coaching.service import Coach
from upcoach.config import Settings
from upcoach.devices.changes import ChangeFeed
from upcoach.devices.registry import Devices
from upcoach.devices.sync import SyncService
from upcoach.errors import ModelNotFound
from upcoach.experiments.service import Experiments
from upcoach.llm.base import Backend
from upcoach.llm.embeddings import LocalEmbedder
from upcoach.modelstore.catalog import CATALOG
from upcoach.modelstore.manager import ModelManager
from upcoach.modelstore.signing import ManifestSigner
from upcoach.observability.audit import AuditLog
from upcoach.observability.metrics import Metrics
from upcoach.observability.records import RecordWriter
from upcoach.privacy.grants import Grants
from upcoach.privacy.rights import DataRights
from upcoach.privacy.settings import PrivacyService
from upcoach.routing.engine import HybridEngine
from upcoach.routing.policy import Target
from upcoach.security.acting import Acting, Use
from upcoach.security.auth import principal_of
from upcoach.security.limits import TokenBucketLimiter
from upcoach.storage.database import Database
from upcoach.storage.requests import RequestRepository

DEFAULT_ALIAS = "default"
AUTO_ALIAS = "auto"


@dataclass
class Services:
    settings: Settings
    db: Database
    requests: RequestRepository
    metrics: Metrics
    hybrid: HybridEngine
    local_model_id: str
    local: Backend | None = None
    local_problem: str | None = "local model is loading"
    audit: AuditLog | None = None
    limiter: TokenBucketLimiter | None = None
    # Background writer of request records: its backlog is part of readiness (#12)
    records: RecordWriter | None = None
    # Privacy settings, residency and data rights (#7)
    privacy: PrivacyService | None = None
    rights: DataRights | None = None
    # Who may act for whom: coach grants and the subject of each request (#12)
    grants: Grants | None = None
    acting: Acting | None = None
    # Model lifecycle (download, update, rollback, version A/B) and signed manifests for phones (#6)
    models: ModelManager | None = None
    model_signer: ManifestSigner | None = None
    # Voice journal, answer ratings and A/B experiments (#8 part B)
    journal: Journal | None = None
    ratings: Ratings | None = None
    experiments: Experiments | None = None
    # Suggestion chips, the strategies library and its signed offline bundle (#8 part A)
    coach: Coach | None = None
    # Phones: registration with their own keys, outbox sync and what changed since a cursor (#19)
    devices: Devices | None = None
    sync: SyncService | None = None
    changes: ChangeFeed | None = None
    # /v1/embeddings: the local model in an embedding context of its own, built on first use (llm/embeddings.py)
    embedder: LocalEmbedder | None = None

    def model_ids(self) -> list[str]:
        return [self.local_model_id, DEFAULT_ALIAS, AUTO_ALIAS]

    def pin_for(self, model: str) -> Target | None:
        """Which side a model id pins (None: ``auto``, the policy decides); unknown ids are a 404."""
        if model == AUTO_ALIAS:
            return None
        if model in (DEFAULT_ALIAS, self.local_model_id):
            return "local"
        if model in CATALOG:
            raise ModelNotFound(
                f"model {model!r} is in the catalog but this server serves {self.local_model_id!r}; "
                f"start it with UPCOACH_LOCAL_MODEL={model}",
                param="model",
            )
        raise ModelNotFound(f"model {model!r} does not exist; see GET /v1/models", param="model")

    async def subject(self, request: Request, use: Use, claimed: str | None = None, *, named: str | None = None) -> str:
        """Whose data this request is about: the caller, or the user it names (X-User-Id, ``named``, or
        ``claimed`` from the body) if security/acting.py lets the caller act for them for this ``use`` (else 403).
        Acting for someone else is audited before this returns."""
        if self.acting is None:
            raise RuntimeError("Services.acting is not set: create_app must build it")
        return await self.acting.subject(request, use, claimed, named=named)

    def token_cap(self, request: Request, requested: int | None) -> int:
        """The answer length this caller may ask for: their request, capped by their role's limit."""
        principal = principal_of(request)
        role = str(principal.role) if principal is not None else "user"
        cap = self.settings.max_tokens_by_role.get(role, self.settings.default_max_tokens)
        return min(requested or self.settings.default_max_tokens, cap)
