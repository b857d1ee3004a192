"""Sync: deliver the outbox (``POST /api/sync``), then take what changed since the cursor (``GET /api/sync``).

Conversation turns never leave the phone. Before each delivery they are turned into one ``usage`` item of counts
(generations on the device, answers from the library), each noised with Laplace noise of scale 1/epsilon (local
differential privacy): the server learns roughly how much the phone answered, never what, and not exactly.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from upcoach_client.client import Client
from upcoach_client.device.offline import StrategiesCache
from upcoach_client.device.store import LocalStore

DELIVERED_KINDS = ("journal", "rating", "usage")
BATCH = 200
CURSOR = "sync_cursor"
SETTINGS = "settings"
MODEL_OFFER = "model_update"


def laplace(scale: float, rng: random.Random) -> float:
    """A draw from Laplace(0, scale): the difference of two exponential draws."""
    return rng.expovariate(1 / scale) - rng.expovariate(1 / scale)


@dataclass
class SyncReport:
    accepted: int = 0
    duplicate: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (client id, why)
    retry_later: int = 0
    bundle_version: str | None = None
    settings_changed: bool = False
    model_update: dict[str, Any] | None = None


class Syncer:
    def __init__(
        self,
        client: Client,
        store: LocalStore,
        strategies: StrategiesCache | None = None,
        *,
        epsilon: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._store = store
        self._strategies = strategies
        self._epsilon = epsilon
        self._rng = rng or random.SystemRandom()

    def count_turns(self) -> str | None:
        """Replace the uncounted conversation turns with one noisy ``usage`` item (None when there were none)."""
        turns = self._store.items(kinds=("turn",))
        if not turns:
            return None
        by = Counter(turn.data.get("answeredBy") for turn in turns)
        scale = 1 / self._epsilon
        data = {
            "day": datetime.now(UTC).date().isoformat(),
            "localGenerations": round(by["device"] + laplace(scale, self._rng), 3),
            "libraryAnswers": round(by["library"] + laplace(scale, self._rng), 3),
            "epsilon": self._epsilon,
        }
        return self._store.replace([t.client_id for t in turns], "usage", data)

    def push(self, report: SyncReport, *, model_version: str | None = None) -> None:
        self.count_turns()
        pending = self._store.items(kinds=DELIVERED_KINDS)
        for start in range(0, len(pending), BATCH):
            batch = pending[start : start + BATCH]
            items = [i.wire() for i in batch]
            # The same request gives the same key: a batch resent after a cut is answered from the server's record.
            key = hashlib.sha256(json.dumps([items, model_version], sort_keys=True).encode()).hexdigest()
            result = self._client.sync(items, model_version=model_version, idempotency_key=key)
            done = [r.client_id for r in result.results if r.status in ("accepted", "duplicate")]
            self._store.mark(done, "delivered")
            report.accepted += result.accepted
            report.duplicate += result.duplicate
            for item in result.results:
                if item.status != "rejected":
                    continue
                if item.retryable:
                    report.retry_later += 1
                else:
                    self._store.mark([item.client_id], "failed", f"{item.code}: {item.reason}")
                    report.rejected.append((item.client_id, f"{item.code}: {item.reason}"))

    def pull(self, report: SyncReport) -> None:
        changes = self._client.changes(self._store.get(CURSOR))
        if changes.settings is not None:
            self._store.put(SETTINGS, changes.settings)
            report.settings_changed = True
        if changes.bundle is not None and self._strategies is not None:
            report.bundle_version = self._strategies.apply(self._client.strategies_bundle(self._strategies.version))
        if changes.model_update is not None:
            self._store.put(MODEL_OFFER, changes.model_update)
        report.model_update = changes.model_update
        self._store.put(CURSOR, changes.cursor)

    def sync(self, *, model_version: str | None = None) -> SyncReport:
        """Deliver, then pull. Raises ConnectionFailed when the server is unreachable: nothing is lost."""
        report = SyncReport()
        self.push(report, model_version=model_version)
        self.pull(report)
        return report
