"""SQLAlchemy tables. Rows hold metadata about requests (routing, outcome, cost), never message text."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Index, Integer, MetaData, String
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


# --- privacy settings (#7): tables below, migration 0004 ---


# --- coaching: strategies, feedback (#8): tables below, migration 0005 ---


# --- experiments, voice journal (#8): tables below, migration 0006 ---
