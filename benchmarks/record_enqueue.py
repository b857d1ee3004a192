"""Cost of queueing one request record (``RecordWriter.submit``), the only part of recording on the request path.

Run: ``.venv/bin/python -m benchmarks.record_enqueue`` (prints the median of 5 rounds of 50,000 submits).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from upcoach.llm.base import Usage
from upcoach.observability.metrics import Metrics
from upcoach.observability.records import RecordWriter
from upcoach.observability.spool import Spool
from upcoach.routing.engine import Outcome
from upcoach.storage.database import Database
from upcoach.storage.requests import RequestRepository

ROUNDS, PER_ROUND = 5, 50_000


def _outcome(n: int) -> Outcome:
    return Outcome(request_id=f"r{n}", text="answer", processing_mode="local", decision="local", backend="llamacpp",
                   model="qwen", reasons=["short"], fallback_used=False, finish_reason="stop", latency_ms=40.0,
                   first_token_ms=5.0, usage=Usage(10, 5), cost_usd=0.0, cloud_equivalent_usd=0.001,
                   privacy_level="standard", user_id="u1")  # fmt: skip


async def main() -> None:
    folder = Path(tempfile.mkdtemp())
    db = Database(f"sqlite:///{folder / 'bench.db'}")
    rounds = []
    for _ in range(ROUNDS):
        # Never started: the writer only queues, so the figure is the request path's share alone.
        writer = RecordWriter(RequestRepository(db), Spool(folder / "spool"), Metrics(), max_queued=PER_ROUND + 1)
        outcomes = [_outcome(n) for n in range(PER_ROUND)]
        started = time.perf_counter()
        for outcome in outcomes:
            await writer.submit(outcome)
        rounds.append((time.perf_counter() - started) / PER_ROUND * 1e6)
    await db.dispose()
    print(f"RecordWriter.submit: median {statistics.median(rounds):.2f} us per record over {ROUNDS} rounds")


if __name__ == "__main__":
    asyncio.run(main())
