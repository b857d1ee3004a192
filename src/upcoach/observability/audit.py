"""Tamper-evident audit trail: append-only events, each HMAC-SHA256-chained to the one before.

``hmac = HMAC(key, canonical JSON of [id, created_at, actor, actor_role, action, target, details, prev_hmac])``
with ``prev_hmac`` the previous row's ``hmac`` (64 zeros for row 1) and ids 1, 2, 3, ... without gaps. Editing
a row breaks its own HMAC; deleting or reordering rows breaks the id sequence or the ``prev_hmac`` links; forging
a row needs the key, which never enters the database. Deleting rows from the end cannot be seen from inside the
chain: keep the head printed by ``upcoach audit verify`` somewhere else to catch that.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from upcoach.config import Settings
from upcoach.security.keyfiles import create_key_file, decode_key
from upcoach.storage.audit import GENESIS_HMAC, AuditEvent, AuditFilter, AuditRepository
from upcoach.storage.tables import utc_now

log = logging.getLogger(__name__)

KEY_FILE = "audit.key"
MIN_KEY_BYTES = 16
MAX_DETAILS_BYTES = 16_384
SYSTEM = "system"

# The actions this service writes; the format check below lets new areas add their own.
ACTIONS = (
    "key.created",
    "key.revoked",
    "auth.refused",
    "request.blocked",
    "model.changed",
    "settings.changed",
    "data.exported",
    "data.erased",
    "audit.read",
    "data.viewed",
    "data.acted_for",
    "privacy.grant.created",
    "privacy.grant.revoked",
    "dashboard.session_ended",
)
# "area.verb", or "area.thing.verb" (e.g. privacy.settings.update).
_ACTION_FORMAT = re.compile(r"[a-z][a-z_]*(?:\.[a-z][a-z_]*){1,2}")

# details are for identifiers, counts and reason codes. A key with one of these names suggests that message text
# or a credential is about to be written into a log that can never be edited (and so never erased).
FORBIDDEN_DETAIL_KEYS = frozenset(
    {"content", "message", "messages", "prompt", "text", "answer", "secret", "token", "password", "api_key"}
)


@dataclass(frozen=True)
class VerifyResult:
    """``rows``: rows found intact before the first bad one (all rows when ``ok``). ``head_hmac``: the last
    intact row's HMAC, to be kept elsewhere so that rows deleted from the end can be noticed."""

    ok: bool
    rows: int
    first_bad_id: int | None
    reason: str
    head_hmac: str | None = None


def parse_audit_key(value: str) -> bytes:
    """Hex is tried first (so a hex key is never misread as base64), then standard or URL-safe base64."""
    return decode_key(value, name="audit key", minimum=MIN_KEY_BYTES)


def audit_key_from_settings(settings: Settings, *, create: bool = True) -> bytes | None:
    """UPCOACH_AUDIT_KEY, else ``<data_dir>/audit.key`` (generated when missing and ``create``; else None)."""
    if settings.audit_key is not None:
        return parse_audit_key(settings.audit_key.get_secret_value())
    path = settings.data_dir / KEY_FILE
    if not path.exists():
        if not create:
            return None
        create_key_file(path)
        log.info("generated the audit trail key %s", path)
    if settings.effective_database_url.startswith("postgres"):
        # Each host would otherwise generate its own key and the others' rows would fail verification.
        log.warning("audit key read from %s: servers sharing a PostgreSQL database must share UPCOACH_AUDIT_KEY", path)
    return parse_audit_key(path.read_text())


def canonical(
    id: int,
    created_at: datetime,
    actor: str,
    actor_role: str,
    action: str,
    target: str | None,
    details: dict[str, object],
    prev_hmac: str,
) -> bytes:
    """The bytes an event's HMAC covers: a JSON array in fixed order, object keys sorted, no whitespace."""
    fields = [id, created_at.isoformat(timespec="microseconds"), actor, actor_role, action, target, details, prev_hmac]
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_hmac(key: bytes, event: AuditEvent) -> str:
    message = canonical(
        event.id,
        event.created_at,
        event.actor,
        event.actor_role,
        event.action,
        event.target,
        event.details,
        event.prev_hmac,
    )
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _check_details(value: object, path: str = "details") -> None:
    if isinstance(value, dict):
        for name, item in value.items():
            if str(name).lower() in FORBIDDEN_DETAIL_KEYS:
                raise ValueError(f"{path}.{name}: audit details must not hold message text or secrets")
            _check_details(item, f"{path}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_details(item, f"{path}[{index}]")


def _normalise_details(details: dict[str, object] | None) -> dict[str, object]:
    """Return details exactly as they will read back from the JSON column (tuples become lists, ...), so that the
    HMAC computed now equals the one recomputed at verification."""
    try:
        encoded = json.dumps(details or {}, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"audit details must be plain JSON: {exc}") from exc
    if len(encoded.encode()) > MAX_DETAILS_BYTES:
        raise ValueError(f"audit details exceed {MAX_DETAILS_BYTES} bytes")
    normalised: dict[str, object] = json.loads(encoded)
    _check_details(normalised)
    return normalised


def _check_length(name: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise ValueError(f"{name} is longer than {limit} characters")


class AuditLog:
    """The audit trail. ``append`` is safe to call concurrently from any number of tasks and processes."""

    def __init__(self, repository: AuditRepository, key: bytes, *, clock: Callable[[], datetime] = utc_now) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"audit key has {len(key)} bytes, at least {MIN_KEY_BYTES} are needed")
        self._repository = repository
        self._key = key
        self._clock = clock
        # Tasks of this process queue here rather than on the database lock, which would hold a connection each.
        self._lock = asyncio.Lock()

    async def append(
        self,
        actor: str,
        role: str,
        action: str,
        target: str | None = None,
        details: dict[str, object] | None = None,
    ) -> AuditEvent:
        """Add an event at the end of the chain. ``actor`` is a user id or ``"system"``; ``role`` the actor's role."""
        if not _ACTION_FORMAT.fullmatch(action):
            raise ValueError(f"action {action!r} must look like 'area.verb'")
        _check_length("actor", actor, 128)
        _check_length("role", str(role), 16)
        _check_length("action", action, 64)
        _check_length("target", target, 256)
        clean = _normalise_details(details)

        def make(event_id: int, prev_hmac: str) -> AuditEvent:
            unsigned = AuditEvent(
                id=event_id,
                created_at=self._clock(),
                actor=actor,
                actor_role=str(role),
                action=action,
                target=target,
                details=clean,
                prev_hmac=prev_hmac,
                hmac="",
            )
            return replace(unsigned, hmac=event_hmac(self._key, unsigned))

        async with self._lock:
            return await self._repository.append(make)

    async def query(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_id: int | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """Matching events, oldest first. Page with ``after_id`` = the last id of the previous page."""
        filters = AuditFilter(
            actor=actor, action=action, since=since, until=until, after_id=after_id, before_id=before_id
        )
        return await self._repository.query(filters, limit)

    async def latest_about(self, target: str, actions: Sequence[str], limit: int = 20) -> list[AuditEvent]:
        """The newest events about ``target`` with one of ``actions``, newest first (a user's access history)."""
        return await self._repository.latest_about(target, actions, limit)

    def stream(self, filters: AuditFilter | None = None) -> AsyncIterator[AuditEvent]:
        """Every matching event, oldest first, read in batches (exports)."""
        return self._repository.scan(filters)

    async def verify(self) -> VerifyResult:
        """Walk the whole chain and report the first row that was edited, deleted or moved."""
        expected_id = 1
        prev_hmac = GENESIS_HMAC
        head: str | None = None
        async for event in self._repository.scan():
            if event.id != expected_id:
                after = f"row {expected_id - 1}" if expected_id > 1 else "the start"
                return VerifyResult(
                    False,
                    expected_id - 1,
                    expected_id,
                    f"row {expected_id} is missing: row {event.id} follows {after} (rows deleted)",
                    head,
                )
            if not hmac.compare_digest(event.prev_hmac, prev_hmac):
                return VerifyResult(
                    False,
                    expected_id - 1,
                    event.id,
                    f"row {event.id} does not link to row {event.id - 1} (rows deleted, inserted or reordered)",
                    head,
                )
            if not hmac.compare_digest(event_hmac(self._key, event), event.hmac):
                return VerifyResult(
                    False,
                    expected_id - 1,
                    event.id,
                    f"row {event.id} fails its HMAC (row edited, or a different audit key)",
                    head,
                )
            prev_hmac = head = event.hmac
            expected_id += 1
        rows = expected_id - 1
        return VerifyResult(True, rows, None, f"{rows} row{'' if rows == 1 else 's'} intact", head)
