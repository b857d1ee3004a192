"""SQLAlchemy tables. Rows hold metadata about requests (routing, outcome, cost), never message text."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Deterministic constraint and index names, so hand-written migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    PostgreSQL stores ``timestamptz``. SQLite has no zone-aware type, so values are stored as naive UTC and get
    their zone back on read. Naive input is refused: guessing its zone would misplace rows for filters and retention.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware value")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class RequestRecordRow(Base):
    """One routed request: where it ran and why, how it went, what it cost.

    Privacy rule: no column may ever hold message text (prompts, answers, system prompts). ``redactions`` counts
    what the PII guard removed by type; it never stores the removed values.
    """

    __tablename__ = "request_records"
    # (user_id, created_at) serves both "this user's requests" and "this user's requests since …"; a separate
    # user_id index would be redundant and only slow down writes.
    __table_args__ = (Index("ix_request_records_user_id_created_at", "user_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True, default=utc_now)
    endpoint: Mapped[str] = mapped_column(String(32))
    privacy_level: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str] = mapped_column(String(16))
    processing_mode: Mapped[str] = mapped_column(String(16))
    backend: Mapped[str] = mapped_column(String(128))
    reasons: Mapped[list[str]] = mapped_column(JSON)
    fallback_used: Mapped[bool] = mapped_column(Boolean)
    outcome: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(64))
    latency_ms: Mapped[float] = mapped_column(Float)
    first_token_ms: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cost_usd: Mapped[float] = mapped_column(Float)
    cloud_cost_equivalent_usd: Mapped[float] = mapped_column(Float)
    region: Mapped[str | None] = mapped_column(String(32))
    # none_as_null: "no redaction data" is SQL NULL, not the JSON value null.
    redactions: Mapped[dict[str, int] | None] = mapped_column(JSON(none_as_null=True))
    # How the side was chosen (issue 20, migration 0010): forced or free, propensity, the dense feature vector and
    # the text block's logit (routing/learned.py record_fields), never text. NULL for records from before.
    routing: Mapped[dict[str, object] | None] = mapped_column(JSON(none_as_null=True))
    finish_reason: Mapped[str | None] = mapped_column(String(32))


class ApiKeyRow(Base):
    """An API key. Only a SHA-256 digest of the secret is stored: the key itself is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    role: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditEventRow(Base):
    """One audit event, HMAC-chained to the previous one (observability/audit.py computes the chain).

    Ids are assigned by the writer as previous id + 1, not by the database, so a gap means a deleted row. The
    primary key and the unique ``prev_hmac`` make a forked chain impossible even if two writers race.
    ``details`` holds identifiers and counts, never message text or secrets.
    """

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(128), index=True)
    actor_role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(256))
    details: Mapped[dict[str, object]] = mapped_column(JSON)
    prev_hmac: Mapped[str] = mapped_column(String(64), unique=True)
    hmac: Mapped[str] = mapped_column(String(64))


# --- model registry (#6): tables below, migration 0003 ---


class ModelVersionRow(Base):
    """One installed (or installing) model version; the file itself is encrypted at ``path``.

    At most one row is ``active`` (a partial unique index, so two concurrent activations cannot both win) and at
    most one is ``previous``: the version that was active before, the rollback target.
    """

    __tablename__ = "model_versions"
    __table_args__ = (
        Index("ix_model_versions_name", "name"),
        Index("uq_model_versions_active", "active", unique=True, sqlite_where=text("active"),
              postgresql_where=text("active")),
    )  # fmt: skip

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(2048))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(BigInteger)
    quantization: Mapped[str | None] = mapped_column(String(32))
    licence: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    previous: Mapped[bool] = mapped_column(Boolean, default=False)
    device_tier: Mapped[str | None] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(String(1024))
    error: Mapped[str | None] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ModelJobRow(Base):
    """A model download (or update) job: progress the status endpoint reports while the pull runs."""

    __tablename__ = "model_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_id: Mapped[str | None] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16))
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_total: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


# --- privacy settings (#7): tables below, migration 0004 ---


class PrivacySettingsRow(Base):
    """A user's current privacy settings: the newest row of their history, kept apart so that routing reads one
    row by primary key and the retention job can join on it. Users without a row have the defaults."""

    __tablename__ = "privacy_settings"
    # The retention job groups users by their retention period.
    __table_args__ = (Index("ix_privacy_settings_retention_days", "retention_days"),)

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    processing_mode: Mapped[str] = mapped_column(String(16))
    special_category_cloud_opt_in: Mapped[bool] = mapped_column(Boolean)
    region: Mapped[str | None] = mapped_column(String(32))
    retention_days: Mapped[int] = mapped_column(Integer)
    analytics_opt_in: Mapped[bool] = mapped_column(Boolean)
    do_not_share: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PrivacySettingsHistoryRow(Base):
    """Every version of a user's privacy settings, and who set it. The primary key (user_id, version) refuses a
    second writer that read the same version: optimistic concurrency across processes without locks."""

    __tablename__ = "privacy_settings_history"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    processing_mode: Mapped[str] = mapped_column(String(16))
    special_category_cloud_opt_in: Mapped[bool] = mapped_column(Boolean)
    region: Mapped[str | None] = mapped_column(String(32))
    retention_days: Mapped[int] = mapped_column(Integer)
    analytics_opt_in: Mapped[bool] = mapped_column(Boolean)
    do_not_share: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(128))
    actor_role: Mapped[str] = mapped_column(String(16))


# --- coaching: strategies, feedback (#8): tables below, migration 0005 ---


class StrategyRow(Base):
    """One coaching strategy of the offline library (coaching/data/strategies.json and strategies/<lang>.json), as
    currently published.

    ``search_text`` is what full-text search indexes, the terms coaching/textsearch.py makes of the strategy in its
    language (title's on the first line): an FTS5 table mirrors it on SQLite (coaching_strategies_fts,
    kept in step by coaching/strategies.py) and a GIN expression index covers it on PostgreSQL; neither is a model
    here (see FTS_OBJECTS).
    """

    __tablename__ = "coaching_strategies"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    locale: Mapped[str] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(32), index=True)
    title: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(Text)
    steps: Mapped[list[str]] = mapped_column(JSON)
    tags: Mapped[list[str]] = mapped_column(JSON)
    chips: Mapped[list[str]] = mapped_column(JSON)
    search_text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class StrategyTagRow(Base):
    """Tag -> strategy, so ``?tag=`` filters with an index on every backend instead of scanning JSON."""

    __tablename__ = "coaching_strategy_tags"

    strategy_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("coaching_strategies.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class StrategyVersionRow(Base):
    """Every published library version with its manifest ({strategy id: content hash}): bundle deltas are
    computed against the manifest of the version the app already holds."""

    __tablename__ = "coaching_strategy_versions"

    version: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    manifest: Mapped[dict[str, str]] = mapped_column(JSON)


# Full-text search objects that are not SQLAlchemy models (created by migration 0005, rebuilt by 0012): the SQLite
# FTS5 virtual table with its shadow tables, and PostgreSQL's GIN expression index. Schema comparisons skip these.
FTS_TABLE = "coaching_strategies_fts"
FTS_INDEX = "ix_coaching_strategies_fts"
FTS_OBJECTS = frozenset(
    {FTS_TABLE, FTS_INDEX, *(f"{FTS_TABLE}_{shadow}" for shadow in ("data", "idx", "content", "docsize", "config"))}
)


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic ``include_name`` hook: everything except the full-text search objects above."""
    return name not in FTS_OBJECTS


# --- experiments, voice journal (#8): tables below, migration 0006 ---


class ExperimentRow(Base):
    """An A/B experiment. ``variants``: [{name, weight, config}], the first one is the control. ``metrics``:
    [{name, kind: rate|mean, min, max}]; min/max clip values for the differentially private export."""

    __tablename__ = "experiments"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(String(1000))
    variants: Mapped[list[dict[str, object]]] = mapped_column(JSON)
    metrics: Mapped[list[dict[str, object]]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ExperimentExposureRow(Base):
    """The first time an analytics-opted-in user was shown their variant: one row per (experiment, user), the
    unit every result is computed over. Users who did not opt in never get a row."""

    __tablename__ = "experiment_exposures"

    experiment_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True, index=True)
    variant: Mapped[str] = mapped_column(String(64))
    exposed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class ExperimentEventRow(Base):
    """An outcome (chip clicked, rating, session length...) of an opted-in user: a metric name and a number."""

    __tablename__ = "experiment_events"
    __table_args__ = (Index("ix_experiment_events_experiment_key_metric", "experiment_key", "metric"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    experiment_key: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    variant: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class UserDataKeyRow(Base):
    """A user's random AES-256 data key, wrapped (AES-GCM) by the master key that never enters the database.
    Deleting this row crypto-shreds everything encrypted with it, copies in backups included."""

    __tablename__ = "user_data_keys"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    master_key_id: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class JournalEntryRow(Base):
    """A voice-journal entry. Transcript, mood, sentiment, themes and insight live only inside ``payload``
    (nonce + AES-GCM ciphertext under the user's data key); the clear columns are what paging and filters need."""

    __tablename__ = "journal_entries"
    __table_args__ = (Index("ix_journal_entries_user_id_recorded_at", "user_id", "recorded_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    insight_status: Mapped[str] = mapped_column(String(16))
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class AnswerFeedbackRow(Base):
    """A user's 1-5 rating of one answer (request_records.id). ``comment`` is encrypted with the user's data key."""

    __tablename__ = "answer_feedback"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    rating: Mapped[int] = mapped_column(Integer)
    comment: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


# --- who may act for whom (#12): tables below, migration 0007 ---


class CoachGrantRow(Base):
    """A client's grant to a human coach: which of their data (``scopes``, a JSON list) the coach may read, until
    ``expires_at`` (None: until revoked). Revoked grants stay, with ``revoked_at``, so the client sees the history."""

    __tablename__ = "coach_grants"
    __table_args__ = (Index("ix_coach_grants_coach_id_user_id", "coach_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    coach_id: Mapped[str] = mapped_column(String(128))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ErasureFenceRow(Base):
    """When a user's data was last erased: writes of anything that started before then are refused (#12).

    One row per user, kept after the erasure: an in-flight request or another process's spooled record can arrive
    long after the delete, and without this row it would bring the erased user's data back.
    """

    __tablename__ = "erasure_fences"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- devices, offline sync, idempotent POSTs (#19): tables below, migration 0009 ---


class DeviceRow(Base):
    """A phone the user registered. ``key_id`` is the API key issued to it: revoking the device revokes the key."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    key_id: Mapped[str] = mapped_column(String(32), index=True)
    model: Mapped[str] = mapped_column(String(128))
    os: Mapped[str] = mapped_column(String(64))
    capabilities: Mapped[list[str]] = mapped_column(JSON)
    ram_mb: Mapped[int | None] = mapped_column(Integer)
    model_version: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    last_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SyncItemRow(Base):
    """One outbox item a device delivered, keyed by the user and the client's own id: a second delivery of the same
    id is a duplicate, never a second row. ``status`` is pending while it is applied, then accepted or rejected."""

    __tablename__ = "sync_items"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    result_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class DeviceUsageRow(Base):
    """On-device usage as counts only (never text), already noised on the phone (local differential privacy)."""

    __tablename__ = "device_usage"
    __table_args__ = (Index("ix_device_usage_user_id_day", "user_id", "day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(128))
    device_id: Mapped[str | None] = mapped_column(String(32))
    day: Mapped[str] = mapped_column(String(10))
    local_generations: Mapped[float] = mapped_column(Float)
    library_answers: Mapped[float] = mapped_column(Float)
    epsilon: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class IdempotencyRow(Base):
    """The answer to a POST sent with an Idempotency-Key, replayed to a retry of the same request. ``scope`` is a
    digest of the caller's credentials, so one caller can never see another's answer; ``status`` None: running.
    ``sealed`` is the answer encrypted with a key derived from those credentials (api/idempotency.py): a journal
    entry's answer holds its transcript, and this table must not be a clear copy of it."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[int | None] = mapped_column(Integer)
    media_type: Mapped[str | None] = mapped_column(String(128))
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Whose data the answer holds (the request's subject): an erasure of that user purges it.
    user_id: Mapped[str | None] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
