"""The fault suite's parts: a live `upcoach serve` on FaultServer peers, a steady mixed load, and the checks after
healing (every answered request has its record, the audit chain verifies).

The load is what a coaching app sends: chats through /v1 (streamed and not) and the plan API, journal entries and
privacy-settings changes. Each answer is sorted into 2xx, deliberate refusals (429/503 carrying Retry-After) and
other errors; the ids of answered chats are kept, so the records they must have left can be looked up afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from tests.conftest import LiveServer, start_server
from upcoach.config import Settings
from upcoach.observability.audit import AuditLog, audit_key_from_settings
from upcoach.storage.audit import AuditRepository
from upcoach.storage.database import Database
from upcoach.storage.requests import RequestRepository

QUESTIONS = (
    "How do I keep a morning routine?",
    # Complex enough for the policy to send it to the cloud (with personal data redacted): the cloud faults matter.
    "Compare the GROW, OKR and SMART goal frameworks, explain the trade-offs of each, and build me a "
    "12-week plan with weekly milestones to become a better team lead.",
    "One small step to sleep better tonight?",
    "I keep procrastinating on my report; what helps?",
)
PER_REQUEST_TIMEOUT = 30.0


@dataclass
class Tally:
    """One scenario's figures (docs/reliability.md)."""

    name: str
    sent: int = 0
    ok: int = 0
    deliberate: int = 0
    other: int = 0
    answered_ids: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    missing_records: int | None = None
    unfinished: int = 0  # still running when the load stopped and given up on (not counted as sent)
    audit_ok: bool | None = None

    @property
    def availability(self) -> float:
        return (self.ok + self.deliberate) / self.sent if self.sent else 1.0

    def row(self) -> str:
        return (
            f"| {self.name} | {self.sent} | {self.ok} | {self.deliberate} | {self.other} | "
            f"{self.availability * 100:.2f} % | {self.missing_records} | {'yes' if self.audit_ok else 'no'} |"
        )

    def note(self, status: int | None, headers: httpx.Headers | None, kind: str) -> None:
        self.sent += 1
        if status is not None and 200 <= status < 300:
            self.ok += 1
        elif status in (429, 503) and headers is not None and "retry-after" in headers:
            self.deliberate += 1
        else:
            self.other += 1
            self.errors[f"{kind}:{status}"] += 1


def peer_env(local_url: str, cloud_url: str, *, local_model: str = "ok", cloud_model: str = "ok") -> dict[str, str]:
    """A server whose local side is a self-hosted OpenAI-compatible pool (the FaultServer) and whose cloud is another:
    the suite measures the service's behaviour under faults, not the model's speed on a shared CPU."""
    return {
        "UPCOACH_LOAD_MODEL": "false",
        "UPCOACH_POOL_URLS": local_url,
        "UPCOACH_POOL_ROLE": "local",
        "UPCOACH_POOL_MODEL": local_model,
        "UPCOACH_POOL_HEALTH_INTERVAL": "0.5",
        "UPCOACH_CLOUD_BASE_URL": cloud_url,
        "UPCOACH_CLOUD_API_KEY": "k",
        "UPCOACH_CLOUD_MODEL": cloud_model,
        "UPCOACH_CLOUD_FIRST_TOKEN_TIMEOUT": "2",
        "UPCOACH_CLOUD_TOTAL_TIMEOUT": "5",
        "UPCOACH_BREAKER_COOLDOWN_SECONDS": "2",
        "UPCOACH_RATE_LIMIT_PER_MINUTE": "100000",
        "UPCOACH_RATE_LIMIT_BURST": "100000",
    }


def serve(tmp: Path, env: dict[str, str], extra_args: list[str] | None = None) -> LiveServer:
    (tmp / "data").mkdir(parents=True, exist_ok=True)
    return start_server(tmp, env, timeout=120, extra_args=extra_args)


def server_env(server: LiveServer, tmp: Path, env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "UPCOACH_DATA_DIR": str(tmp / "data"), **env}


class Load:
    """A steady mixed load on ``base_url`` until ``stop()``; ``concurrency`` callers, each one request at a time."""

    def __init__(
        self,
        base_url: str,
        tally: Tally,
        *,
        concurrency: int = 4,
        timeout: float = PER_REQUEST_TIMEOUT,
        max_tokens: int | None = None,
        settle: float | None = None,
    ) -> None:
        self.base_url = base_url
        self.tally = tally
        self.concurrency = concurrency
        self.timeout = timeout
        self.limit = {"max_tokens": max_tokens} if max_tokens else {}
        self.settle = settle  # at the end, how long requests still running may take (None: as long as they need)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._counter = itertools.count()

    async def __aenter__(self) -> Load:
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout)
        self._tasks = [asyncio.create_task(self._caller(i)) for i in range(self.concurrency)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        _, pending = await asyncio.wait(self._tasks, timeout=self.settle)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self.tally.unfinished = len(pending)
        await self._client.aclose()

    async def _caller(self, index: int) -> None:
        kinds = ("chat", "stream", "plan", "chat", "stream", "journal", "settings")
        for step in itertools.count(index):
            if self._stop.is_set():
                return
            await self.one(kinds[step % len(kinds)], f"load-user-{index}")

    async def one(self, kind: str, user: str) -> None:
        question = QUESTIONS[next(self._counter) % len(QUESTIONS)]
        headers = {"X-User-Id": user}
        try:
            if kind == "chat":
                body = {"model": "auto", "messages": [{"role": "user", "content": question}], **self.limit}
                response = await self._client.post("/v1/chat/completions", json=body, headers=headers)
                if response.status_code == 200:
                    self.tally.answered_ids.append(response.json()["id"])
            elif kind == "plan":
                body = {"messages": [{"role": "user", "content": question}], **self.limit}
                response = await self._client.post("/api/ai/hybrid/process", json=body, headers=headers)
                if response.status_code == 200:
                    self.tally.answered_ids.append(response.json()["requestId"])
            elif kind == "stream":
                await self._stream(question, headers)
                return
            elif kind == "journal":
                body = {"transcript": f"Today I noticed: {question}", "recordedAt": datetime.now(UTC).isoformat()}
                response = await self._client.post("/api/journal/entries", json=body, headers=headers)
            else:
                body = {"analyticsOptIn": next(self._counter) % 2 == 0}
                response = await self._client.put("/api/privacy/settings", json=body, headers=headers)
        except httpx.HTTPError as exc:
            self.tally.note(None, None, f"{kind}:{type(exc).__name__}")
            await asyncio.sleep(0.1)  # a server that is down refuses at once: no busy loop against it
            return
        self.tally.note(response.status_code, response.headers, kind)

    async def _stream(self, question: str, headers: dict[str, str]) -> None:
        body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": question}], **self.limit}
        try:
            async with self._client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    self.tally.note(response.status_code, response.headers, "stream")
                    return
                completion_id, finished, failed = None, False, None
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        failed = chunk["error"].get("code")
                        continue
                    completion_id = chunk.get("id", completion_id)
                    finished = finished or any(c.get("finish_reason") for c in chunk.get("choices", []))
        except httpx.HTTPError as exc:
            self.tally.note(None, None, f"stream:{type(exc).__name__}")
            await asyncio.sleep(0.1)
            return
        if failed is not None or not finished:
            self.tally.note(None, None, f"stream-error:{failed or 'unfinished'}")
            return
        self.tally.note(200, None, "stream")
        if completion_id:
            self.tally.answered_ids.append(completion_id)


async def missing_records(database_url: str, ids: list[str]) -> list[str]:
    """The answered requests that left no record (must be none once the service has healed)."""
    db = Database(database_url)
    try:
        repository = RequestRepository(db)
        return [request_id for request_id in ids if await repository.get(request_id) is None]
    finally:
        await db.dispose()


async def audit_chain_intact(env: dict[str, str]) -> bool:
    """The audit chain verifies: what `upcoach audit verify` runs, in process (no interpreter start per scenario)."""
    settings = settings_for(env)
    key = audit_key_from_settings(settings, create=False)
    db = Database(settings.effective_database_url)
    try:
        return key is not None and (await AuditLog(AuditRepository(db), key).verify()).ok
    finally:
        await db.dispose()


def audit_verifies(env: dict[str, str]) -> bool:
    """`upcoach audit verify` exits 0."""
    done = subprocess.run([sys.executable, "-m", "upcoach.cli", "audit", "verify"], env=env, capture_output=True,
                          timeout=120)  # fmt: skip
    return done.returncode == 0


def settings_for(env: dict[str, str]) -> Settings:
    return Settings(data_dir=Path(env["UPCOACH_DATA_DIR"]), database_url=env.get("UPCOACH_DATABASE_URL"))
