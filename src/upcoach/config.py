"""Service settings, read from the environment (prefix ``UPCOACH_``) and injected into ``create_app``."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import psutil
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def physical_cores() -> int:
    """Physical cores available to this process: llama.cpp decode is memory-bound, SMT siblings only add contention."""
    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="UPCOACH_", extra="ignore")

    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("upcoach", appauthor=False)),
        description="Models, keys and the default SQLite database live here.",
    )
    database_url: str | None = Field(
        default=None, description="sqlite:///path or postgresql://...; default: SQLite in data_dir."
    )
    redis_url: str | None = None

    host: str = "127.0.0.1"
    port: int = 8080

    local_model: str = Field(default="qwen2.5-0.5b-instruct", description="Catalog name or path to a GGUF file.")
    threads: int = Field(default_factory=physical_cores, ge=1)
    context_size: int = Field(default=4096, ge=256)
    batch_size: int = Field(default=512, ge=8)
    queue_depth: int = Field(default=16, ge=0, description="Requests allowed to wait behind the running one.")
    prefix_cache_mb: int = Field(default=256, ge=0, description="Memory for saved KV prefixes (LRU).")
    prefix_cache_min_tokens: int = Field(default=32, ge=1, description="Shorter prefixes are not worth saving.")
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    default_max_tokens: int = Field(default=512, ge=1)
    load_model: bool = Field(default=True, description="False serves without a local model (tests, cloud-only).")

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'upcoach.db'}"
