"""What the API layer talks to: the backends and storage, built once per app by create_app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

from upcoach.config import Settings
from upcoach.errors import ModelNotFound, Unavailable
from upcoach.llm.base import Backend
from upcoach.modelstore.catalog import CATALOG
from upcoach.storage.database import Database

DEFAULT_ALIAS = "default"


@dataclass
class Services:
    settings: Settings
    db: Database
    local_model_id: str
    local: Backend | None = None
    local_problem: str | None = "local model is loading"
    extra: dict[str, object] = field(default_factory=dict)

    def model_ids(self) -> list[str]:
        return [self.local_model_id, DEFAULT_ALIAS]

    def backend_for(self, model: str) -> tuple[str, Backend]:
        """The backend serving ``model`` (a served id or the ``default`` alias), with the id to report."""
        if model in (DEFAULT_ALIAS, self.local_model_id):
            if self.local is None:
                raise Unavailable(self.local_problem or "local model is not loaded")
            return self.local_model_id, self.local
        if model in CATALOG:
            raise ModelNotFound(
                f"model {model!r} is in the catalog but this server serves {self.local_model_id!r}; "
                f"start it with UPCOACH_LOCAL_MODEL={model}",
                param="model",
            )
        raise ModelNotFound(f"model {model!r} does not exist; see GET /v1/models", param="model")
