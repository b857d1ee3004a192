"""Per-user data keys for user text at rest (journal entries, rating comments): envelope encryption.

Every user gets a random AES-256 data key, stored only wrapped (AES-GCM) by a master key that never enters the
database: ``UPCOACH_JOURNAL_MASTER_KEY`` or ``<data_dir>/journal.key``. Deleting the user's wrapped key
(``shred``) makes every ciphertext of that user unreadable for good, including copies in backups and replicas:
crypto-shredding. Ciphertexts carry associated data (e.g. the row id) so a blob moved to another row, or another
user's row, fails to decrypt instead of showing the wrong text.

Blob layout: ``0x01 || nonce (12 bytes) || AES-GCM ciphertext+tag``.
"""

from __future__ import annotations

import hashlib
import logging
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from upcoach.config import Settings
from upcoach.errors import DataKeyUnavailable
from upcoach.security.keyfiles import create_key_file, decode_key
from upcoach.storage.database import Database
from upcoach.storage.tables import UserDataKeyRow

log = logging.getLogger(__name__)

KEY_FILE = "journal.key"
KEY_BYTES = 32
NONCE_BYTES = 12
FORMAT = b"\x01"


class DataKeyMissing(LookupError):
    """The user has no data key (never had one, or it was shredded): their ciphertexts are unrecoverable."""


def parse_master_key(value: str) -> bytes:
    """Hex (64 digits) or base64 of exactly 32 bytes: AES-256 needs the full key, nothing is stretched."""
    return decode_key(value, name="journal master key", size=KEY_BYTES)


def master_key_from_settings(settings: Settings) -> bytes:
    """UPCOACH_JOURNAL_MASTER_KEY, else ``<data_dir>/journal.key`` (generated 0600 on first use, with a warning)."""
    if settings.journal_master_key is not None:
        return parse_master_key(settings.journal_master_key.get_secret_value())
    path = settings.data_dir / KEY_FILE
    if not path.exists():
        create_key_file(path)
        log.warning(
            "generated the journal master key %s: back it up apart from the database (without it no journal entry "
            "can be read) or set UPCOACH_JOURNAL_MASTER_KEY",
            path,
        )
    return parse_master_key(path.read_text())


def master_key_id(key: bytes) -> str:
    """A fingerprint that tells "wrong master key" apart from "corrupt row" without revealing the key."""
    return hashlib.sha256(b"upcoach-journal-master-key\x00" + key).hexdigest()[:16]


def _wrap_aad(user_id: str) -> bytes:
    return b"upcoach-data-key\x00" + user_id.encode()


class UserCipher:
    """One user's unwrapped data key. Short-lived: get one per operation, never cache it across requests, so
    that a shredded key stops working everywhere at once."""

    def __init__(self, user_id: str, key: bytes) -> None:
        self.user_id = user_id
        self._aead = AESGCM(key)

    def _aad(self, context: str) -> bytes:
        return self.user_id.encode() + b"\x00" + context.encode()

    def encrypt(self, plaintext: bytes, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT + nonce + self._aead.encrypt(nonce, plaintext, self._aad(context))

    def decrypt(self, blob: bytes, context: str) -> bytes:
        """Raises ``InvalidTag`` when the blob was altered, moved to another row or encrypted under another key."""
        if blob[:1] != FORMAT or len(blob) < 1 + NONCE_BYTES + 16:
            raise InvalidTag()
        nonce, body = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
        return self._aead.decrypt(nonce, body, self._aad(context))


class UserKeyVault:
    """Creates, unwraps and shreds per-user data keys (table ``user_data_keys``)."""

    def __init__(self, db: Database, master_key: bytes) -> None:
        if len(master_key) != KEY_BYTES:
            raise ValueError(f"master key must have {KEY_BYTES} bytes")
        self._db = db
        self._master = AESGCM(master_key)
        self.master_key_id = master_key_id(master_key)

    async def cipher(self, user_id: str, *, create: bool = False) -> UserCipher:
        """The user's cipher; ``create`` makes a data key on first use, else a missing one raises DataKeyMissing."""
        async with self._db.sessions() as session:
            row = await session.get(UserDataKeyRow, user_id)
        if row is None:
            if not create:
                raise DataKeyMissing(user_id)
            row = await self._create(user_id)
        return UserCipher(user_id, self._unwrap(row))

    async def shred(self, user_id: str) -> int:
        """Delete the user's data key; returns 1 if there was one. Irreversible by design."""
        async with self._db.engine.begin() as conn:
            result = await conn.execute(delete(UserDataKeyRow).where(UserDataKeyRow.user_id == user_id))
            return int(result.rowcount or 0)

    async def has_key(self, user_id: str) -> bool:
        async with self._db.sessions() as session:
            found = await session.scalar(select(UserDataKeyRow.user_id).where(UserDataKeyRow.user_id == user_id))
        return found is not None

    async def _create(self, user_id: str) -> UserDataKeyRow:
        nonce = os.urandom(NONCE_BYTES)
        wrapped = nonce + self._master.encrypt(nonce, AESGCM.generate_key(bit_length=256), _wrap_aad(user_id))
        row = UserDataKeyRow(user_id=user_id, wrapped_key=wrapped, master_key_id=self.master_key_id)
        try:
            async with self._db.sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            # A concurrent first write for the same user won: use its key, or the two entries could not both be read.
            async with self._db.sessions() as session:
                existing = await session.get(UserDataKeyRow, user_id)
            if existing is None:
                raise
            return existing
        return row

    def _unwrap(self, row: UserDataKeyRow) -> bytes:
        if row.master_key_id != self.master_key_id:
            raise DataKeyUnavailable(
                "this server's journal master key is not the one that wrapped the user's data key: "
                "set UPCOACH_JOURNAL_MASTER_KEY to the original key"
            )
        wrapped = bytes(row.wrapped_key)
        try:
            return self._master.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_aad(row.user_id))
        except InvalidTag as exc:
            raise DataKeyUnavailable("a user's data key failed its integrity check and cannot be used") from exc
