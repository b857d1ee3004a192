"""Service settings, read from the environment (prefix ``UPCOACH_``) and injected into ``create_app``."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

import platformdirs
import psutil
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def physical_cores() -> int:
    """Physical cores available to this process: llama.cpp decode is memory-bound, SMT siblings only add contention."""
    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


def default_parallel(threads: int, context_size: int) -> int:
    """Sequences one model serves at once: 4 per core (a CPU step over 8 tokens costs far less than 8 steps),
    at most 16, and no more than a fifth of the available memory holds as KV cells at a generous 128 KB/token."""
    available = psutil.virtual_memory().available
    by_memory = int(available * 0.2) // (context_size * (128 << 10))
    return max(1, min(16, 4 * threads, by_memory))


class CloudRegion(BaseModel):
    """One residency region's OpenAI-compatible cloud endpoint (#7)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(min_length=1)
    model: str = "gpt-4o-mini"
    api_key: str | None = None


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
    # API processes on the one port (docs/scaling.md). With more than one, the local model runs in one engine
    # process the workers reach over a Unix socket, and shared state (breakers, limits, sessions) needs Redis.
    workers: int = Field(default=1, ge=1, le=64)
    # Seconds running requests and streams get to finish after SIGTERM (below an orchestrator's usual 30 s); a stream
    # still running then ends with an SSE error event ``shutting_down`` (docs/reliability.md).
    shutdown_grace: float = Field(default=25.0, ge=0, le=600)
    engine_socket: Path | None = Field(
        default=None,
        description="Set by `upcoach serve` for its workers: the engine process's Unix socket (the local model).",
    )

    local_model: str = Field(default="qwen2.5-0.5b-instruct", description="Catalog name or path to a GGUF file.")
    threads: int = Field(default_factory=physical_cores, ge=1)
    context_size: int = Field(default=4096, ge=256)
    batch_size: int = Field(default=512, ge=8)
    queue_depth: int = Field(default=16, ge=0, description="Requests allowed to wait for a free sequence slot.")
    parallel: int | None = Field(
        default=None, ge=1, le=64, description="Sequences decoded together; default: from cores and memory."
    )
    prefill_chunk: int = Field(default=128, ge=16, le=4096, description="Prompt tokens prefilled per batch step.")
    prefix_cache_mb: int = Field(default=256, ge=0, description="Memory for saved KV prefixes (LRU).")
    prefix_cache_min_tokens: int = Field(default=32, ge=1, description="Shorter prefixes are not worth saving.")
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    default_max_tokens: int = Field(default=512, ge=1)
    load_model: bool = Field(default=True, description="False serves without a local model (tests, cloud-only).")

    # Cloud: any OpenAI-compatible API. No base URL = everything local.
    cloud_base_url: str | None = None
    cloud_api_key: str | None = None
    cloud_model: str = "gpt-4o-mini"
    cloud_connect_timeout: float = Field(default=3.0, gt=0)
    cloud_first_token_timeout: float = Field(default=10.0, gt=0)
    cloud_total_timeout: float = Field(default=60.0, gt=0)
    # Calls to the cloud in flight at once (per endpoint); one more is refused at once with a 429 and Retry-After
    # (or answered locally where the policy allows) instead of waiting for a connection until it times out.
    cloud_max_inflight: int = Field(default=512, ge=1)

    # Self-hosted OpenAI-compatible inference servers (vLLM, llama-server, Ollama), comma-separated base URLs.
    pool_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    pool_model: str = "default"
    pool_api_key: str | None = None
    pool_role: str = Field(default="beside", pattern="^(local|beside)$")
    pool_health_interval: float = Field(default=5.0, gt=0)
    # A self-hosted CPU server may wait behind other sequences and prefill for a while before its first token; a
    # pool in the "local" role stands where the in-process model (which has no such deadline) would.
    pool_first_token_timeout: float = Field(default=60.0, gt=0)
    pool_total_timeout: float = Field(default=300.0, gt=0)
    # Calls in flight at once per pool member (a self-hosted server batches far fewer sequences than a cloud).
    pool_max_inflight: int = Field(default=128, ge=1)

    # Coaching answer quality (coaching/prompts.py, coaching/answer_checks.py; docs/quality.md)
    coach_persona: bool = Field(
        default=True, description="Built-in coaching persona when a request has no system prompt."
    )
    grounding: bool = Field(
        default=True, description="Give the model the library's best strategies for the conversation."
    )
    answer_checks: bool = Field(
        default=True, description="Check local answers before release; regenerate or fall back."
    )

    # Routing
    complexity_threshold: float = Field(default=0.5, ge=0, le=1)
    # Share of free routing choices (public requests of analytics opt-in users) that take the other side, so the
    # logged outcomes support off-policy evaluation of router versions (issue 20). 0 turns exploration off.
    router_explore: float = Field(default=0.05, ge=0, le=0.5)
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_window_seconds: float = Field(default=30.0, gt=0)
    breaker_min_requests: int = Field(default=4, ge=1)
    breaker_cooldown_seconds: float = Field(default=15.0, gt=0)

    # Cost: USD per 1M tokens. JSON in the environment, e.g.
    # UPCOACH_PRICES='{"gpt-4o-mini": {"input": 0.15, "output": 0.6}}'
    prices: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {
            "gpt-4o-mini": {"input": 0.15, "output": 0.60},
            "gpt-4o": {"input": 2.50, "output": 10.00},
            "gpt-4.1-mini": {"input": 0.40, "output": 1.60},
        }
    )
    default_cloud_price: dict[str, float] = Field(default_factory=lambda: {"input": 0.15, "output": 0.60})
    local_cost_per_1m_tokens: float = Field(default=0.0, ge=0)
    cloud_budget_usd_per_day: float | None = Field(default=None, ge=0, description="None: no cap.")

    # Limits per API key (or JWT subject): a token bucket, shared through Redis when configured.
    rate_limit_per_minute: float = Field(default=120.0, gt=0)
    rate_limit_burst: int = Field(default=30, ge=1)
    max_tokens_by_role: dict[str, int] = Field(
        default_factory=lambda: {"user": 1024, "coach": 2048, "service": 2048, "admin": 4096, "auditor": 256}
    )

    # Operations (docs/deploy.md)
    tracing: Literal["off", "otlp"] = Field(
        default="off", description='"otlp": OpenTelemetry traces to OTEL_EXPORTER_OTLP_ENDPOINT (the otel extra).'
    )

    # Authentication and audit trail (docs/security.md)
    auth: Literal["on", "off"] = Field(
        default="on", description='"off" treats every request as the admin "dev" (local development only).'
    )
    audit_key: SecretStr | None = Field(
        default=None,
        description="HMAC key of the audit chain, hex or base64 (>= 16 bytes); default: <data_dir>/audit.key.",
    )
    jwt_secret: SecretStr | None = Field(default=None, description="Accept HS256 bearer tokens signed with it.")
    jwt_public_key: str | None = Field(
        default=None, description="PEM text or path to a PEM file: accept RS256 (RSA) or ES256 (EC P-256) tokens."
    )
    jwt_audience: str | None = Field(default=None, description="Required 'aud' of bearer tokens, if set.")
    jwt_issuer: str | None = Field(default=None, description="Required 'iss' of bearer tokens, if set.")
    auth_refusals_per_minute: int = Field(
        default=30, ge=1, description="Refused credentials per client address a minute; then 429 auth_throttled."
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Reverse proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For names the client; "
        "none by default: the client is the TCP peer.",
    )
    tls_certfile: Path | None = Field(default=None, description="Serve HTTPS directly (with tls_keyfile).")
    tls_keyfile: Path | None = None

    # Model store: encryption at rest (#6 part A)
    model_key: SecretStr | None = Field(
        default=None,
        description="AES-256 key of stored models: 64 hex characters or base64 of 32 bytes; "
        "default: <data_dir>/model.key (generated, mode 0600).",
    )

    # Model updates, device distribution, version A/B (#6 part B)
    model_signing_key: SecretStr | None = Field(
        default=None,
        description="Ed25519 key signing model manifests (PEM, or 32-byte seed hex/base64); "
        "default: <data_dir>/model_signing.key.",
    )
    model_source_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Non-public addresses model downloads may reach: IPs, CIDRs or host names, comma-separated.",
    )
    model_smoke_max_tokens: int = Field(default=16, ge=1, le=256, description="Tokens an update's smoke test makes.")

    # Suggestion chips, strategies library and its signed bundle (#8 part A)
    bundle_signing_key: SecretStr | None = Field(
        default=None,
        description="Ed25519 key signing the offline strategies bundle (PEM, or 32-byte seed hex/base64); "
        "default: <data_dir>/bundle-signing.key (generated, mode 0600).",
    )
    chips_budget_ms: float = Field(
        default=2000.0, gt=0, le=60_000, description="Chips wait this long for the local model, then use the library."
    )
    chips_ahead: bool = Field(
        default=True,
        description="Write the chips of every coaching answer in the background (low priority), so the suggestions "
        "request that follows is answered from that result.",
    )
    chips_ahead_ttl_seconds: float = Field(
        default=300.0, gt=0, le=3600, description="How long chips computed ahead are kept for their conversation."
    )

    # Experiments, voice journal, ratings (#8 part B)
    journal_master_key: SecretStr | None = Field(
        default=None,
        description="Wraps every user's data key (32 bytes, hex or base64); default: <data_dir>/journal.key.",
    )
    journal_insight_timeout: float = Field(default=30.0, gt=0, description="Seconds the local model may take.")
    experiments_dp_epsilon: float = Field(default=1.0, gt=0, description="Privacy budget of one DP results export.")
    experiments_min_group_size: int = Field(default=20, ge=1, description="Smaller variants are suppressed in DP.")

    # Transparency dashboard sign-in (#7 part B)
    dashboard_session_minutes: int = Field(default=480, ge=1, description="Sessions end this long after sign-in...")
    dashboard_idle_minutes: int = Field(default=30, ge=1, description="... or after this long without a request.")
    dashboard_signin_attempts: int = Field(
        default=5, ge=1, description="Failed dashboard sign-ins allowed per client address in 5 minutes."
    )

    # Privacy settings, residency, retention (#7 part A). Regions: JSON, e.g. UPCOACH_CLOUD_REGIONS=
    # '{"eu": {"base_url": "https://eu.example.com/v1", "model": "gpt-4o-mini", "api_key": "..."}}'
    cloud_regions: dict[str, CloudRegion] = Field(
        default_factory=dict, description="Cloud endpoint per residency region; users with a region use only theirs."
    )
    default_retention_days: int = Field(default=365, ge=1, le=3650, description="For users who never chose one.")
    retention_interval_seconds: float = Field(default=3600.0, gt=0, description="How often the retention job runs.")
    # An erasure's fence refuses writes that started before it (storage/fences.py); none can arrive this late.
    erasure_fence_days: int = Field(default=30, ge=1, le=3650, description="Days an erasure fence is kept.")
    privacy_cache_seconds: float = Field(default=5.0, ge=0, description="How long a worker trusts cached settings.")

    # Request records (observability/records.py): /readyz says "unavailable" while more than this many records
    # wait to be written (queued plus spooled to <data_dir>/spool/records.jsonl).
    records_backlog_max: int = Field(default=10_000, ge=1, description="Unwritten request records /readyz allows.")

    @field_validator("pool_urls", "trusted_proxies", "model_source_allow", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies", mode="after")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry)
            except ValueError as exc:
                raise ValueError(f"trusted proxy {entry!r}: use an IP address or a CIDR like 10.0.0.0/8") from exc
        return value

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("cloud_regions", mode="after")
    @classmethod
    def _region_names(cls, value: dict[str, CloudRegion]) -> dict[str, CloudRegion]:
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9-]{0,31}", name):
                raise ValueError(f"region {name!r}: use a lower-case code like 'eu' or 'us'")
        return value

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'upcoach.db'}"
