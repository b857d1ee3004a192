"""Everything the phone keeps: an SQLite file whose payloads are encrypted at rest (AES-256-GCM, ``cryptography``)
with a key that lives outside the database file (the platform keystore on a phone; a 0600 key file here).

The outbox holds what the phone did while offline (journal entries, ratings, conversation turns), each under a
client id that is its idempotency key on the server. Nothing in the clear columns says what the user wrote: kind,
state and timestamps only. Each ciphertext is bound to its row (the client id is the associated data), so a row
swapped into another place fails to decrypt.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from upcoach_client.errors import VerificationFailed

KEY_BYTES = 32
NONCE_BYTES = 12

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    client_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    reason TEXT,
    created_at TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (name TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


def load_or_create_key(path: Path) -> bytes:
    """The store key from ``path`` (created 0600 with a fresh random key if missing). Keep it out of the db's folder
    in production (keystore / keychain); a key next to the data protects nothing."""
    if path.exists():
        key = path.read_bytes()
        if len(key) != KEY_BYTES:
            raise ValueError(f"{path}: a store key is {KEY_BYTES} bytes")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = AESGCM.generate_key(bit_length=256)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


@dataclass(frozen=True)
class OutboxItem:
    client_id: str
    kind: str
    state: str
    created_at: str
    data: dict[str, Any]
    reason: str | None = None

    def wire(self) -> dict[str, Any]:
        return {"clientId": self.client_id, "kind": self.kind, "createdAt": self.created_at, "data": self.data}


class LocalStore:
    """The phone's encrypted SQLite store: the outbox and a small key-value area (cursor, bundle, settings)."""

    def __init__(self, path: Path, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"the store key must be {KEY_BYTES} bytes")
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._aead = AESGCM(key)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _seal(self, value: Any, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, json.dumps(value).encode(), context.encode())

    def _open(self, blob: bytes, context: str) -> Any:
        try:
            return json.loads(self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context.encode()))
        except InvalidTag as exc:
            raise VerificationFailed(f"stored record {context!r} failed authentication (wrong key or edited)") from exc

    # ---- outbox ----
    def add(self, kind: str, data: dict[str, Any], *, client_id: str | None = None) -> str:
        client_id = client_id or uuid.uuid4().hex
        created = datetime.now(UTC).isoformat()
        with self._lock:
            self._db.execute(
                "INSERT INTO outbox (client_id, kind, created_at, payload) VALUES (?, ?, ?, ?)",
                (client_id, kind, created, self._seal(data, f"outbox:{client_id}:{kind}")),
            )
        return client_id

    def items(self, *, state: str = "pending", kinds: tuple[str, ...] | None = None) -> list[OutboxItem]:
        with self._lock:
            rows = self._db.execute(
                "SELECT client_id, kind, state, created_at, payload, reason FROM outbox WHERE state = ? "
                "ORDER BY created_at, rowid",
                (state,),
            ).fetchall()
        return [
            OutboxItem(cid, kind, st, created, self._open(blob, f"outbox:{cid}:{kind}"), reason)
            for cid, kind, st, created, blob, reason in rows
            if kinds is None or kind in kinds
        ]

    def mark(self, client_ids: list[str], state: str, reason: str | None = None) -> None:
        with self._lock:
            self._db.executemany(
                "UPDATE outbox SET state = ?, reason = ? WHERE client_id = ?", [(state, reason, c) for c in client_ids]
            )

    def replace(self, counted: list[str], kind: str, data: dict[str, Any]) -> str:
        """Mark ``counted`` items as counted and add one item in their place, in one transaction."""
        client_id = uuid.uuid4().hex
        created = datetime.now(UTC).isoformat()
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("UPDATE outbox SET state = 'counted' WHERE client_id = ?", [(c,) for c in counted])
                self._db.execute(
                    "INSERT INTO outbox (client_id, kind, created_at, payload) VALUES (?, ?, ?, ?)",
                    (client_id, kind, created, self._seal(data, f"outbox:{client_id}:{kind}")),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return client_id

    # ---- key-value ----
    def put(self, name: str, value: Any) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO kv (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, self._seal(value, f"kv:{name}")),
            )

    def get(self, name: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE name = ?", (name,)).fetchone()
        return default if row is None else self._open(row[0], f"kv:{name}")
