"""Routing quality of the rules on labelled coaching requests: simple ones kept local, hard ones sent to the cloud.

Each request of benchmarks/data/routing_requests.jsonl (coaching requests written for this in six languages, each
labelled "the small local model answers this well enough" or not, with the reason; split dev/held) is routed
as a public request with both sides healthy, behind each of the operator system prompts below, by the engine
create_app serves with (routing/factory.py: guard, features, policy). Nothing is generated: ``route`` decides only.

    .venv/bin/python -m benchmarks.routing --errors    # prints the table and the misrouted requests
    benchmarks/run.py --only routing                    # writes the docs/benchmarks.md section
                                                        # (with the learned router's: benchmarks/routing_learned.py)

Goal (issue 20): on held-out requests, simple kept local >= 0.90 and hard sent to the cloud >= 0.90.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks import routing_learned
from benchmarks.common import COACH_SYSTEM_PROMPT, machine
from upcoach.config import Settings
from upcoach.llm.base import BackendInfo, ChatMessage, ChatRequest, Chunk, Completion, GenerationParams, Health
from upcoach.observability.audit import AuditLog, audit_key_from_settings
from upcoach.observability.metrics import Metrics
from upcoach.privacy.settings import PrivacySettings
from upcoach.routing.breaker import MemoryBreakerStore
from upcoach.routing.engine import HybridRequest, Outcome
from upcoach.routing.factory import build_hybrid_engine
from upcoach.routing.policy import Hints
from upcoach.storage.audit import AuditRepository
from upcoach.storage.database import Database

DATA = Path(__file__).resolve().parent / "data" / "routing_requests.jsonl"
HEADING = "## Routing quality:"
GOAL = 0.90
# What integrators put in front of the user's words: nothing special, the long coaching rules the other benchmarks
# use, and the instructions issue 20 quotes (which the guard used to read as mental-health data and self-harm).
SYSTEM_PROMPTS = {
    "plain": "You are a concise coach.",
    "coaching rules": COACH_SYSTEM_PROMPT,
    "not a therapist": (
        "You are a coach, not a therapist. Do not diagnose. If the user mentions depression or suicide, refer them "
        "to a professional."
    ),
}


# How the set and the rules grew (issue 20), so the held-out figure is read for what it is: each round's misses on a
# fresh held-out split drove the next changes, then that split joined the tuning data and a new one was written.
HISTORY = """\
| round | tuned on | fresh held-out split | simple kept local | hard sent to the cloud |
|---|---|---|---|---|
| before (main, 39a8743) | - | the final split below | 1.00 | 0.00 (120 of 180 kept local as special-category) |
| 1 | 160 requests | 160 requests | 1.00 | 0.75 |
| 2 | 320 | 160 | 1.00 | 0.85 |
| 3 | 480 | 120 | 1.00 | 0.82 |
| 4 (final rules) | 600 (`dev`) | 120 (`held`), not used for any change | 1.00 | 0.85 |"""


@dataclass(frozen=True)
class Request:
    id: str
    split: str
    lang: str
    local_ok: bool
    reason: str
    text: str


@dataclass(frozen=True)
class Routed:
    request: Request
    prompt: str
    target: str | None
    kept_local_by_privacy: bool
    complexity: float
    reasons: tuple[str, ...]

    @property
    def correct(self) -> bool:
        return self.target == ("local" if self.request.local_ok else "cloud")


def load(path: Path = DATA) -> list[Request]:
    return [Request(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class _HealthyLocal:
    """The local side as ``route`` sees it: healthy, nothing queued. ``route`` never asks it for an answer."""

    def info(self) -> BackendInfo:
        return BackendInfo(name="local", kind="local", model="local")

    async def health(self) -> Health:
        return Health(ok=True)

    async def chat(self, request: ChatRequest) -> Completion:
        raise NotImplementedError("route() only decides")

    def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        raise NotImplementedError("route() only decides")


async def _discard(outcome: Outcome) -> None:
    return None


async def _defaults(user_id: str) -> PrivacySettings:
    return PrivacySettings()


async def route_all(requests: list[Request]) -> list[Routed]:
    with tempfile.TemporaryDirectory() as tmp:
        # Cloud at a closed loopback port: healthy as far as routing knows, and never called by route().
        settings = Settings(
            data_dir=Path(tmp), load_model=False, redis_url=None, cloud_base_url="http://127.0.0.1:9/v1",
            cloud_api_key="unused", cloud_model="cloud",
        )  # fmt: skip
        db = Database(settings.effective_database_url)
        await db.migrate()
        key = audit_key_from_settings(settings)
        assert key is not None
        engine = build_hybrid_engine(
            settings, local=[_HealthyLocal()], metrics=Metrics(), record=_discard,
            audit=AuditLog(AuditRepository(db), key), privacy=_defaults, breaker_store=MemoryBreakerStore(),
        )  # fmt: skip
        routed = []
        try:
            for name, system in SYSTEM_PROMPTS.items():
                for request in requests:
                    messages = (ChatMessage("system", system), ChatMessage("user", request.text))
                    hybrid = HybridRequest(messages, GenerationParams(), Hints("public"), f"bench-{request.id}")
                    decision, features, _, inspection = await engine.route(hybrid)
                    routed.append(
                        Routed(request, name, decision.target, inspection.keep_local is not None,
                               features.complexity, decision.reasons)
                    )  # fmt: skip
        finally:
            await engine.aclose()
            await db.dispose()
        return routed


def _share(hits: int, total: int) -> str:
    return f"{hits / total:.2f} ({hits}/{total})" if total else "-"


def _scores(routed: list[Routed]) -> tuple[int, int, int, int, int]:
    simple = [r for r in routed if r.request.local_ok]
    hard = [r for r in routed if not r.request.local_ok]
    return (
        sum(r.target == "local" for r in simple),
        len(simple),
        sum(r.target == "cloud" for r in hard),
        len(hard),
        sum(r.kept_local_by_privacy for r in hard),
    )


def table(routed: list[Routed]) -> str:
    rows = [
        "| split | system prompt | simple kept local | hard sent to the cloud | hard kept local as special-category |",
        "|---|---|---|---|---|",
    ]
    for split in ("dev", "held"):
        for prompt in (*SYSTEM_PROMPTS, "all"):
            subset = [r for r in routed if r.request.split == split and prompt in ("all", r.prompt)]
            if not subset:
                continue
            local, simple, cloud, hard, privacy = _scores(subset)
            label = f"**{prompt}**" if prompt == "all" else prompt
            rows.append(f"| {split} | {label} | {_share(local, simple)} | {_share(cloud, hard)} | {privacy} |")
    return "\n".join(rows)


def by_language(routed: list[Routed], split: str = "held") -> str:
    rows = ["| language | simple kept local | hard sent to the cloud |", "|---|---|---|"]
    for lang in dict.fromkeys(r.request.lang for r in routed):
        local, simple, cloud, hard, _ = _scores(
            [r for r in routed if r.request.split == split and r.request.lang == lang]
        )
        rows.append(f"| {lang} | {_share(local, simple)} | {_share(cloud, hard)} |")
    return "\n".join(rows)


def misrouted(routed: list[Routed], split: str) -> Iterator[str]:
    seen: set[str] = set()
    for r in routed:
        if r.request.split != split or r.correct or r.request.id in seen:
            continue
        seen.add(r.request.id)
        prompts = ", ".join(x.prompt for x in routed if x.request.id == r.request.id and not x.correct)
        expected = "local" if r.request.local_ok else "cloud"
        yield f"{r.request.id} ({prompts}): {r.target}, expected {expected} ({r.complexity:.2f}) | {r.request.text}"


def goal_met(routed: list[Routed]) -> bool:
    local, simple, cloud, hard, _ = _scores([r for r in routed if r.request.split == "held"])
    return local / simple >= GOAL and cloud / hard >= GOAL


def section(command: str) -> str:
    requests = load()
    routed = asyncio.run(route_all(requests))
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    held = [r for r in routed if r.request.split == "held"]
    local, simple, cloud, hard, _ = _scores(held)
    verdict = "met" if goal_met(routed) else "**missed**"
    return "\n".join(
        [
            f"{HEADING} simple requests kept local, hard ones sent to the cloud (public, both sides healthy)",
            "",
            f"- command: `{command}` (benchmarks/routing.py); date: {when}",
            f"- machine: {machine()}",
            f"- set: benchmarks/data/routing_requests.jsonl, {len(requests)} coaching requests written for this "
            f'({", ".join(dict.fromkeys(r.lang for r in requests))}), each labelled "the small local model answers '
            'this well enough" or not, with the reason; dev/held split. Every request is routed behind each system '
            f"prompt ({', '.join(SYSTEM_PROMPTS)}) by the engine create_app builds (`route`: guard, features, policy)",
            f"- goal on held-out requests: simple kept local >= {GOAL:.2f} and hard sent to the cloud >= {GOAL:.2f}: "
            f"{local / simple:.2f} and {cloud / hard:.2f}, {verdict}",
            "",
            table(routed),
            "",
            "Held-out, all system prompts, by language:",
            "",
            by_language(routed),
            "",
            "How the figures moved: the rules score 1.00 on everything they were tuned on and 0.82-0.85 on requests "
            "written after the last change, so the phrase tables do not generalise to the 0.90 goal; the misses are "
            'phrasings the tables do not know yet (number words such as "seven", "a book ... ten chapters", '
            '"a thorough analysis of whether to ..."), which is what the learned router of issue 20 is for.',
            "",
            HISTORY,
            "",
            *routing_learned.section_lines(),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("dev", "held"), help="route only this split")
    parser.add_argument("--errors", action="store_true", help="list the misrouted requests")
    args = parser.parse_args()
    requests = [r for r in load() if args.split in (None, r.split)]
    routed = asyncio.run(route_all(requests))
    print(table(routed))
    if args.errors:
        for split in ("dev", "held"):
            print(f"\nmisrouted ({split}):")
            print("\n".join(misrouted(routed, split)) or "none")
    if args.split is None:
        sys.exit(0 if goal_met(routed) else 1)


if __name__ == "__main__":
    main()
