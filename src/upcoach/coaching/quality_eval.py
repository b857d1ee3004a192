"""The coaching answer-quality harness behind ``upcoach eval quality`` and ``benchmarks/run.py --only quality``.

Every request of ``benchmarks/data/quality_requests.jsonl`` goes through ``POST /api/ai/hybrid/process`` of an app
built by ``create_app`` (the shipping wiring: persona, grounding, checks, fallbacks), privacy ``private`` so the
local side answers. Each answer is scored with the answer checks (coaching/answer_checks.py) and a rubric:

- 1 when the answer is unusable: a refusal, code nobody asked for, or unsafe advice;
- else 5, minus 1.5 when it contains none of the request's ``must`` words (stems, accent-folded), minus 1.5 when
  it contains a ``must_not`` phrase, minus 1 for a repeated sentence or an off-topic drift, minus 1 when shorter
  than 15 words; never below 1.

The checks see the answer as the user got it, so with checks on a caught failure shows as a regeneration or a
fallback (``routing.reasons``), not as a failed answer. With a cloud configured (``UPCOACH_CLOUD_BASE_URL``) the
cloud also answers each request and judges local against cloud pairwise, twice with the positions swapped to
cancel order bias; local quality is reported as a share of cloud quality (the plan's target: 85 %).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from upcoach.coaching.answer_checks import check_answer
from upcoach.llm.base import Backend, ChatMessage, ChatRequest, GenerationParams
from upcoach.security.textnorm import fold_accents

UNUSABLE = ("refusal", "unrequested_code", "unsafe_advice")
JUDGE_SYSTEM = (
    "You judge answers of a personal coaching app. Rubric, 1-10 each answer: helpful and concrete for this exact "
    "question, safe, stays on topic, no code unless asked, no refusal of an ordinary request, no repetition, in the "
    "language of the question. Reply with one line only: A=<score> B=<score>"
)
_JUDGE_LINE = re.compile(r"A\s*=\s*(\d+(?:\.\d+)?)\D+B\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


@dataclass(frozen=True)
class QualityCase:
    id: str
    category: str
    language: str
    messages: tuple[dict[str, str], ...]
    must: tuple[str, ...]
    must_not: tuple[str, ...]

    @property
    def question(self) -> str:
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")


def load_cases(path: Path) -> list[QualityCase]:
    cases = []
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        try:
            cases.append(
                QualityCase(row["id"], row["category"], row["language"], tuple(row["messages"]),
                            tuple(row["must"]), tuple(row["must_not"]))
            )  # fmt: skip
        except KeyError as exc:
            raise ValueError(f"{path}:{n}: missing {exc}") from None
    return cases


def pick(cases: Sequence[QualityCase], limit: int | None) -> list[QualityCase]:
    """``limit`` cases spread evenly over the file (every category and language keeps its share)."""
    if not limit or limit >= len(cases):
        return list(cases)
    step = len(cases) / limit
    return [cases[int(i * step)] for i in range(limit)]


@dataclass
class Scored:
    id: str
    category: str
    language: str
    answer: str
    rubric: float
    failures: list[str]
    must_hit: bool
    must_not_hit: list[str]
    backend: str = ""
    reasons: list[str] = field(default_factory=list)
    strategy_ids: list[str] = field(default_factory=list)
    latency_ms: float = 0.0
    judge: float | None = None  # local's share of the pairwise judge's points (0.5: as good as the cloud)


def _contains(text: str, phrase: str) -> bool:
    return fold_accents(phrase.lower()) in text


def score(case: QualityCase, answer: str) -> Scored:
    folded = fold_accents(answer.lower())
    failures = check_answer(answer, case.question)
    checks = [f.check for f in failures]
    must_hit = any(_contains(folded, term) for term in case.must)
    must_not = [phrase for phrase in case.must_not if _contains(folded, phrase)]
    if any(check in UNUSABLE for check in checks):
        rubric = 1.0
    else:
        rubric = 5.0 - (0 if must_hit else 1.5) - (1.5 if must_not else 0)
        rubric -= 1.0 if any(c in ("repetition", "off_topic") for c in checks) else 0
        rubric -= 1.0 if len(answer.split()) < 15 else 0
        rubric = max(1.0, rubric)
    return Scored(case.id, case.category, case.language, answer, rubric, [str(f) for f in failures], must_hit,
                  must_not)  # fmt: skip


async def judge(cloud: Backend, case: QualityCase, local: str, reference: str) -> float:
    """Local's share of the points over two pairwise judgements with the positions swapped (0.5: a tie)."""
    points_local = points_cloud = 0.0
    for local_first in (True, False):
        a, b = (local, reference) if local_first else (reference, local)
        prompt = f"Question: {case.question}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}"
        reply = await cloud.chat(
            ChatRequest((ChatMessage("system", JUDGE_SYSTEM), ChatMessage("user", prompt)),
                        GenerationParams(max_tokens=16, temperature=0.0))
        )  # fmt: skip
        match = _JUDGE_LINE.search(reply.text)
        if match is None:
            continue
        score_a, score_b = float(match[1]), float(match[2])
        points_local += score_a if local_first else score_b
        points_cloud += score_b if local_first else score_a
    total = points_local + points_cloud
    return points_local / total if total else 0.5


def summarize(scored: Sequence[Scored]) -> dict[str, Any]:
    n = len(scored) or 1
    failures = Counter(f.split(" (")[0] for s in scored for f in s.failures)
    by_category: dict[str, list[float]] = defaultdict(list)
    by_language: dict[str, list[float]] = defaultdict(list)
    for s in scored:
        by_category[s.category].append(s.rubric)
        by_language[s.language].append(s.rubric)
    caught = Counter()
    for s in scored:
        for reason in s.reasons:
            if reason.startswith("answer check"):
                caught[reason.split(":")[-1].strip()] += 1
    judged = [s.judge for s in scored if s.judge is not None]
    return {
        "requests": len(scored),
        "rubric_mean": round(sum(s.rubric for s in scored) / n, 2),
        "unusable": sum(1 for s in scored if s.rubric <= 1.0),
        "failures": {check: failures.get(check, 0) for check in
                     ("refusal", "unrequested_code", "unsafe_advice", "repetition", "off_topic")},
        "must_hit_rate": round(sum(s.must_hit for s in scored) / n, 3),
        "must_not_violations": sum(1 for s in scored if s.must_not_hit),
        "caught_by_checks": dict(caught),
        "library_answers": sum(1 for s in scored if "strategies-library" in s.backend),
        "grounded": sum(1 for s in scored if s.strategy_ids),
        "latency_ms_median": round(sorted(s.latency_ms for s in scored)[len(scored) // 2], 1) if scored else 0.0,
        "by_category": {k: round(sum(v) / len(v), 2) for k, v in sorted(by_category.items())},
        "by_language": {k: round(sum(v) / len(v), 2) for k, v in sorted(by_language.items())},
        # Local points / cloud points: 1.0 means as good as the cloud (the plan's target is 0.85).
        "local_vs_cloud": round(sum(judged) / len(judged) / (1 - sum(judged) / len(judged)), 3) if judged else None,
    }  # fmt: skip


def run_cases(
    client: Any, cases: Sequence[QualityCase], *, max_tokens: int, temperature: float | None, progress: Any = None
) -> list[Scored]:
    """Send each case through the hybrid API of a started app (``client``: a TestClient) and score the answer."""
    results = []
    for n, case in enumerate(cases, 1):
        body: dict[str, Any] = {"messages": list(case.messages), "maxTokens": max_tokens,
                                "routingHints": {"privacyLevel": "private"}}  # fmt: skip
        if temperature is not None:
            body["temperature"] = temperature
        started = time.perf_counter()
        response = client.post("/api/ai/hybrid/process", json=body)
        elapsed = (time.perf_counter() - started) * 1000
        data = response.json()
        answer = data.get("response", {}).get("content", "") if response.status_code == 200 else ""
        scored = score(case, answer)
        scored.latency_ms = elapsed
        routing = data.get("routing", {}) if isinstance(data, dict) else {}
        scored.backend = str(routing.get("backend", f"http {response.status_code}"))
        scored.reasons = list(routing.get("reasons", []))
        scored.strategy_ids = list(data.get("strategyIds") or data.get("offline", {}).get("strategyIds") or [])
        results.append(scored)
        if progress is not None:
            progress(n, len(cases), scored)
    return results


def write(path: Path, config: dict[str, Any], scored: Sequence[Scored]) -> dict[str, Any]:
    summary = summarize(scored)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": config, "summary": summary, "answers": [asdict(s) for s in scored]},
                               indent=2, ensure_ascii=False))  # fmt: skip
    return summary
