"""What the API layer talks to: engines, repositories and settings, built once per app by create_app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from upcoach.config import Settings
from upcoach.errors import ModelNotFound
from upcoach.llm.base import Backend
from upcoach.modelstore.catalog import CATALOG
from upcoach.observability.metrics import Metrics
from upcoach.routing.engine import HybridEngine
from upcoach.routing.policy import Target
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
    extra: dict[str, object] = field(default_factory=dict)

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

    def user_of(self, request: Request, claimed: str | None = None) -> str | None:
        """The caller's user id. Until authentication lands this is the X-User-Id header or the body's user."""
        return request.headers.get("x-user-id") or claimed
