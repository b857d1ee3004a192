"""``Idempotency-Key`` on the POSTs that create something, as a pure ASGI middleware.

The first request with a key runs and, when it succeeds (2xx), its answer is stored; a retry with the same key and
the same request gets that answer again (``Idempotent-Replayed: true``) and creates nothing. The same key with a
different request is refused (422 ``idempotency_key_reused``); a retry while the first still runs gets 409
``idempotency_in_progress``. A failed request (4xx, 5xx) stores nothing, so a retry runs again.

Keys are scoped to the caller's credentials (a digest of the Authorization header and X-User-Id): one caller can
never replay another's answer. The stored answer is AES-256-GCM encrypted under a key derived (HMAC-SHA256) from
those credentials and the Idempotency-Key, which the server holds only while the caller's request runs: a journal
entry's answer carries its transcript, and a copy of the table reveals none of it. A caller whose token changes (a
refreshed JWT) starts a new scope: the mobile SDK uses its device key, which does not change. Answers are kept for
``RETENTION``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from datetime import timedelta
from typing import Annotated

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi import Depends, Header
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from upcoach.api.errors import error_response
from upcoach.errors import IdempotencyInProgress, IdempotencyKeyReused, InvalidIdempotencyKey, UpcoachError
from upcoach.storage.devices import IdempotencyRepository
from upcoach.storage.tables import IdempotencyRow, utc_now

HEADER = b"idempotency-key"
MAX_KEY_LENGTH = 255
RETENTION = timedelta(hours=24)
STALE_CLAIM = timedelta(minutes=5)  # longer than any creating POST runs
MAX_STORED_BYTES = 1 << 20

# The POSTs that create something: the only ones where a retry could create a second thing.
IDEMPOTENT_POSTS = tuple(
    re.compile(pattern)
    for pattern in (
        r"/api/journal/entries",
        r"/api/ai/feedback",
        r"/api/experiments/[^/]+/events",
        r"/api/sync",
        r"/api/devices",
    )
)


def idempotency_key(
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=MAX_KEY_LENGTH,
            description="a retry with the same key and request gets the first answer and creates nothing",
        ),
    ] = None,
) -> None:
    """Declares the header in the spec of a creating POST (``dependencies=[Depends(idempotency_key)]``); the
    middleware below does the work, before the route runs."""


IDEMPOTENT = [Depends(idempotency_key)]


def _answer_key(who: bytes, key: str) -> bytes:
    return hmac.new(who, b"upcoach idempotent answer\0" + key.encode(), hashlib.sha256).digest()


def _seal(who: bytes, key: str, answer: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(_answer_key(who, key)).encrypt(nonce, answer, None)


def _unseal(who: bytes, key: str, sealed: bytes) -> bytes | None:
    try:
        return AESGCM(_answer_key(who, key)).decrypt(sealed[:12], sealed[12:], None)
    except (InvalidTag, ValueError):
        return None


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope["headers"] if key == name), None)


class Idempotency:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key_header = _header(scope, HEADER) if scope["type"] == "http" and scope["method"] == "POST" else None
        if key_header is None or not any(p.fullmatch(scope["path"]) for p in IDEMPOTENT_POSTS):
            await self.app(scope, receive, send)
            return
        try:
            key = key_header.decode("ascii").strip()
            if not key or len(key) > MAX_KEY_LENGTH:
                raise ValueError
        except ValueError:
            problem = InvalidIdempotencyKey(
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} ASCII characters", param="Idempotency-Key"
            )
            await _answer(problem, scope, receive, send)
            return
        body, more = b"", True
        while more:  # BodySizeLimit, outside this middleware, bounds what can arrive here
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        await self._run(scope, receive, send, key, body)

    async def _run(self, scope: Scope, receive: Receive, send: Send, key: str, body: bytes) -> None:
        repository = IdempotencyRepository(scope["app"].state.services.db)
        who = (_header(scope, b"authorization") or b"") + b"\0" + (_header(scope, b"x-user-id") or b"")
        caller = hashlib.sha256(who).hexdigest()
        fingerprint = hashlib.sha256(scope["path"].encode() + b"?" + scope["query_string"] + b"\0" + body).hexdigest()
        now = utc_now()
        row = IdempotencyRow(scope=caller, key=key, fingerprint=fingerprint, created_at=now)
        held = await repository.claim(row, now - RETENTION, now - STALE_CLAIM)
        if held is not None:
            await _replay(held, fingerprint, _unseal(who, key, held.sealed or b""), scope, send)
            return
        replayed = False

        async def replay_body() -> Message:
            nonlocal replayed
            if replayed:  # the body was read: what comes next is the client's disconnect
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        status, content_type, chunks = 0, None, []

        async def capture(message: Message) -> None:
            nonlocal status, content_type
            if message["type"] == "http.response.start":
                status = message["status"]
                content_type = (_header(message, b"content-type") or b"").decode("latin-1") or None
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay_body, capture)
        finally:
            answer = b"".join(chunks)
            if 200 <= status < 300 and len(answer) <= MAX_STORED_BYTES:
                sealed = (status, content_type, _seal(who, key, answer))
                await repository.complete(caller, key, sealed, user_id=_subject(scope), started_at=now)
            else:
                await repository.release(caller, key)


def _subject(scope: Scope) -> str | None:
    """Whose data the answer holds: the subject the route acted on (security/acting.py), else the caller."""
    state = scope.get("state") or {}
    subject = state.get("subject")
    if isinstance(subject, str):
        return subject
    return getattr(state.get("principal"), "user_id", None)


async def _replay(held: IdempotencyRow, fingerprint: str, answer: bytes | None, scope: Scope, send: Send) -> None:
    if held.fingerprint != fingerprint:
        problem: UpcoachError = IdempotencyKeyReused(
            "this Idempotency-Key was used for a different request; use a new key", param="Idempotency-Key"
        )
        await _answer(problem, scope, None, send)
        return
    if held.status is None:
        problem = IdempotencyInProgress(
            "the first request with this Idempotency-Key is still running", param="Idempotency-Key", retry_after=1
        )
        await _answer(problem, scope, None, send)
        return
    if answer is None:  # cannot happen with the same credentials; never replay what does not authenticate
        problem = IdempotencyKeyReused("the stored answer for this Idempotency-Key cannot be read; use a new key",
                                       param="Idempotency-Key")  # fmt: skip
        await _answer(problem, scope, None, send)
        return
    headers = [(b"idempotent-replayed", b"true"), (b"content-length", str(len(answer)).encode())]
    if held.media_type:
        headers.append((b"content-type", held.media_type.encode("latin-1")))
    await send({"type": "http.response.start", "status": held.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


async def _answer(problem: UpcoachError, scope: Scope, receive: Receive | None, send: Send) -> None:
    response = error_response(
        problem.status, problem.message, code=problem.code, type_=problem.type, param=problem.param,
        retry_after=problem.retry_after,
    )  # fmt: skip
    await response(scope, receive or _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}
