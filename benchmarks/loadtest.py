"""Load test: simulated users with think time against a running `upcoach serve`, streaming chat completions.

Each user loops for ``duration`` seconds: a new conversation or the next turn of its own (behind the coaching
system prompt), streamed; some users leave mid-answer (the client closes the stream); then they think for a while.
The verdict is about behaviour, not speed: no 5xx, every 429 carries Retry-After, every stream either completes
(a finish reason and ``[DONE]``) or was closed by its own client.

    .venv/bin/python -m benchmarks.loadtest --users 40 --duration 180
    .venv/bin/python -m benchmarks.loadtest --url http://127.0.0.1:8080 --users 40 --duration 180

Without ``--url`` it starts `upcoach serve` itself (the default catalog model, a fresh data folder, auth off) and
also reports the server's peak resident memory. The report: requests by status (5xx among them), 429s with and
without Retry-After, streams completed, closed by their client, or broken, and the time to first token P50/P95.

tests/api/test_load.py runs a short variant of the same simulation against a live server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.common import COACH_SYSTEM_PROMPT, USER_MESSAGES, free_port, pct, python, start_server


@dataclass
class LoadReport:
    requests: int = 0
    completed: int = 0
    cancelled_by_client: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    refused_without_retry_after: int = 0
    broken_streams: list[str] = field(default_factory=list)  # neither completed nor closed by the client
    ttft_ms: list[float] = field(default_factory=list)
    peak_rss_mb: float | None = None  # the server's, when this run started it

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)

    def ok(self) -> bool:
        return not self.server_errors and not self.refused_without_retry_after and not self.broken_streams

    def to_json(self) -> dict[str, object]:
        return {
            "requests": self.requests, "completed": self.completed, "cancelled_by_client": self.cancelled_by_client,
            "statuses": dict(self.statuses), "refused_without_retry_after": self.refused_without_retry_after,
            "server_errors": self.server_errors,
            "refused_with_retry_after": self.statuses.get(429, 0) - self.refused_without_retry_after,
            "broken_streams": self.broken_streams[:10], "ttft_ms_count": len(self.ttft_ms),
            "ttft_ms_p50": round(pct(self.ttft_ms, 50)) if self.ttft_ms else None,
            "ttft_ms_p95": round(pct(self.ttft_ms, 95)) if self.ttft_ms else None,
            "peak_rss_mb": round(self.peak_rss_mb) if self.peak_rss_mb else None, "ok": self.ok(),
        }  # fmt: skip


async def _turn(client: httpx.AsyncClient, messages: list[dict[str, str]], max_tokens: int, leave_after: int | None,
                report: LoadReport) -> str | None:  # fmt: skip
    """One streamed request; the assistant's text when it completed, None otherwise."""
    report.requests += 1
    body = {"model": "default", "messages": messages, "max_tokens": max_tokens, "temperature": 0.7, "stream": True}
    started = time.perf_counter()
    pieces: list[str] = []
    finished = done = False
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            report.statuses[response.status_code] += 1
            if response.status_code != 200:
                await response.aread()
                if response.status_code == 429 and not response.headers.get("retry-after"):
                    report.refused_without_retry_after += 1
                return None
            async for line in response.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                    break
                if not line.startswith("data: {"):
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    report.broken_streams.append(f"error event: {event['error']}")
                    return None
                for choice in event.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        if not pieces:
                            report.ttft_ms.append((time.perf_counter() - started) * 1000)
                        pieces.append(content)
                    finished = finished or choice.get("finish_reason") is not None
                if leave_after is not None and len(pieces) >= leave_after:
                    report.cancelled_by_client += 1
                    return None  # leaving the block closes the connection mid-stream
    except httpx.HTTPError as exc:
        report.broken_streams.append(f"{type(exc).__name__}: {exc}")
        return None
    if finished and done:
        report.completed += 1
        return "".join(pieces)
    report.broken_streams.append(f"ended without finish reason/[DONE] after {len(pieces)} pieces")
    return None


async def _user(client: httpx.AsyncClient, index: int, deadline: float, think_s: float, max_tokens: int,
                report: LoadReport) -> None:  # fmt: skip
    rng = random.Random(index)
    messages: list[dict[str, str]] = [{"role": "system", "content": COACH_SYSTEM_PROMPT}]
    while time.monotonic() < deadline:
        if len(messages) > 5 or rng.random() < 0.3:
            messages = messages[:1]  # a new conversation
        messages.append({"role": "user", "content": rng.choice(USER_MESSAGES)})
        leave_after = rng.randint(1, 4) if rng.random() < 0.15 else None
        answer = await _turn(client, messages, rng.randint(max_tokens // 2, max_tokens), leave_after, report)
        if answer is None:
            messages = messages[:1]
        else:
            messages.append({"role": "assistant", "content": answer})
        await asyncio.sleep(rng.uniform(0.5, 1.5) * think_s)


async def simulate(base_url: str, users: int, duration_s: float, think_s: float = 3.0, max_tokens: int = 48,
                   headers: dict[str, str] | None = None) -> LoadReport:  # fmt: skip
    report = LoadReport()
    deadline = time.monotonic() + duration_s
    limits = httpx.Limits(max_connections=users + 4, max_keepalive_connections=users + 4)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits, headers=headers) as client:
        await asyncio.gather(*(_user(client, i, deadline, think_s, max_tokens, report) for i in range(users)))
    return report


def _against_own_server(users: int, duration_s: float, think_s: float, max_tokens: int) -> LoadReport:
    from upcoach.config import Settings
    from upcoach.modelstore.catalog import DEFAULT_MODEL, get_entry
    from upcoach.modelstore.fetch import fetch

    model = fetch(get_entry(DEFAULT_MODEL), Settings().models_dir)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "models").mkdir()
        (Path(tmp) / "models" / model.name).symlink_to(model)
        env = {"UPCOACH_DATA_DIR": tmp, "UPCOACH_PORT": str(port), "UPCOACH_AUTH": "off"}
        server = start_server("loadtest", [python(), "-m", "upcoach.cli", "serve"], port, "/readyz", env)
        try:
            report = asyncio.run(simulate(server.base_url, users, duration_s, think_s, max_tokens))
            report.peak_rss_mb = server.rss_mb()[1]
        finally:
            server.stop()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="a running server (default: start `upcoach serve` here)")
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--duration", type=float, default=180)
    parser.add_argument("--think", type=float, default=3.0, help="mean seconds between a user's requests")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else None
    if args.url is not None:
        report = asyncio.run(simulate(args.url, args.users, args.duration, args.think, args.max_tokens, headers))
    else:
        report = _against_own_server(args.users, args.duration, args.think, args.max_tokens)
    print(json.dumps(report.to_json(), indent=2))
    raise SystemExit(0 if report.ok() else 1)


if __name__ == "__main__":
    main()
