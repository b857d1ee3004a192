"""A request to the hybrid engine and what it produced: the per-request run, its accounting, and the outcome that
is observed (metrics) and recorded, for an answer and for a failure alike."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from upcoach.coaching.answer_checks import Failure
from upcoach.coaching.offline import OFFLINE_BACKEND
from upcoach.errors import UpcoachError
from upcoach.llm.base import ChatMessage, Completion, GenerationParams, ResponseFormat, TokenLogprob, Tools, Usage
from upcoach.observability.metrics import Metrics
from upcoach.routing import learned
from upcoach.routing.choices import OtherChoices
from upcoach.routing.costs import PriceTable
from upcoach.routing.features import RequestFeatures
from upcoach.routing.policy import Decision, Device, Hints, Target
from upcoach.routing.sides import Cloud, Side
from upcoach.security.canary import LeakWatch

ProcessingMode = Literal["local", "cloud", "hybrid", "none"]
WITHHELD = "I can't share that. Let's get back to your coaching goals."


@dataclass(frozen=True)
class HybridRequest:
    messages: tuple[ChatMessage, ...]
    params: GenerationParams
    hints: Hints
    request_id: str
    endpoint: Literal["hybrid", "openai"] = "hybrid"
    user_id: str | None = None
    device: Device | None = None
    force: Target | None = None  # a caller that named a concrete model
    response_format: ResponseFormat | None = None
    tools: Tools | None = None
    # Legacy text completion: the last message's content is raw text to continue (llm/base.py ChatRequest.prompt).
    raw_prompt: bool = False


@dataclass
class Outcome:
    request_id: str
    text: str
    processing_mode: ProcessingMode
    decision: Target | None
    backend: str
    model: str
    reasons: list[str]
    fallback_used: bool
    finish_reason: str
    latency_ms: float
    first_token_ms: float | None
    usage: Usage
    cost_usd: float
    cloud_equivalent_usd: float
    privacy_level: str
    user_id: str | None = None
    endpoint: str = "hybrid"
    outcome: Literal["ok", "error", "cancelled"] = "ok"
    error_code: str | None = None
    complexity: float = 0.0
    redactions: dict[str, int] | None = None
    flags: list[str] = field(default_factory=list)
    region: str | None = None  # residency region of the cloud endpoint that served (part of) the answer
    started_at: datetime | None = None  # wall-clock start: erasure fences refuse records of earlier requests
    strategy_ids: list[str] = field(default_factory=list)  # library strategies given to the model as material
    prompt_version: str | None = None  # our built-in prompts' version, when persona or material was added
    # Crisis resources given beside a JSON or tool-call answer rather than prepended to it (api/openai_routes.py).
    notice: str = ""
    routing: dict[str, object] | None = None  # how the side was chosen, no text (routing/learned.py record_fields)


@dataclass
class Event:
    """What stream() yields: ``admitted`` once, then ``text`` pieces, then one ``final``."""

    kind: Literal["admitted", "text", "final"]
    text: str = ""
    outcome: Outcome | None = None
    index: int = 0  # the choice of an n > 1 request the text belongs to
    logprobs: tuple[TokenLogprob, ...] = ()
    finish: str | None = None  # a choice after the first ended (choice 0's ends with the outcome)
    notice: str = ""  # on ``admitted``: crisis resources to show beside a constrained answer


@dataclass
class Run:
    """What one request has done so far, across the sides it tried."""

    text: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    fallback_used: bool = False
    sides_used: list[Side] = field(default_factory=list)
    first_token_at: float | None = None
    cloud_usage: Usage = field(default_factory=Usage)
    local_usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"
    model: str = ""
    flags: list[str] = field(default_factory=list)
    redactions: dict[str, int] | None = None
    redacted: bool = False
    withheld: bool = False
    preamble: str = ""
    leak_watch: LeakWatch | None = None  # the answer so far, checked piece by piece for a system-prompt leak
    strategy_ids: list[str] = field(default_factory=list)
    rejected: list[Failure] = field(default_factory=list)  # failed answer checks so far
    cut: list[Failure] = field(default_factory=list)  # failures that ended a released answer early
    library: bool = False  # answered from the strategies library after failed checks
    prompt_version: str | None = None  # our built-in prompts' version, when any of their text was added
    coaching: bool = True  # persona, material and answer checks apply (engine's ``_coaching``)
    notice: str = ""
    others: OtherChoices = field(default_factory=OtherChoices)  # choices 1.. of an n > 1 request


def account(run: Run, side: Side, final: Completion, metrics: Metrics) -> None:
    """Count a side's final chunk: its usage, model and finish reason."""
    if side not in run.sides_used:
        run.sides_used.append(side)
    run.finish_reason = final.finish_reason
    run.model = final.model
    target = run.cloud_usage if side.is_cloud else run.local_usage
    if not side.is_cloud and final.queue_ms:
        metrics.queue_wait.observe(final.queue_ms / 1000)
    target.prompt_tokens += final.usage.prompt_tokens
    target.completion_tokens += final.usage.completion_tokens
    target.cached_tokens += final.usage.cached_tokens


def finished(
    request: HybridRequest,
    decision: Decision,
    features: RequestFeatures,
    run: Run,
    started: float,
    cloud: Cloud,
    prices: PriceTable,
) -> tuple[Outcome, float]:
    """The outcome of an answered request, and the cloud cost to charge to the budget."""
    ended = time.perf_counter()
    started_at = datetime.now(UTC) - timedelta(seconds=ended - started)
    if run.cut:
        run.reasons.append(
            f"answer check failed ({', '.join(map(str, run.cut))}): answer ended at the last sentence that passed"
        )
    used_cloud = any(s.is_cloud for s in run.sides_used)
    used_local = any(not s.is_cloud for s in run.sides_used)
    mode: ProcessingMode = (
        "hybrid" if (used_cloud and used_local) or (used_cloud and run.redacted) else "cloud" if used_cloud else "local"
    )
    # A cloud stream that broke off still produced tokens we pay for: count what reached the user.
    if used_local and run.fallback_used and used_cloud and run.cloud_usage.completion_tokens == 0:
        run.cloud_usage.completion_tokens = max(1, len("".join(run.text)) // 4)
    price = prices.cloud(cloud.model)
    cloud_cost = price.cost(run.cloud_usage.prompt_tokens, run.cloud_usage.completion_tokens)
    cost = cloud_cost + prices.local_cost(run.local_usage.prompt_tokens, run.local_usage.completion_tokens)
    prompt = max(run.cloud_usage.prompt_tokens, run.local_usage.prompt_tokens)
    completion = run.cloud_usage.completion_tokens + run.local_usage.completion_tokens
    usage = Usage(prompt, completion, run.local_usage.cached_tokens)
    outcome = Outcome(
        request_id=request.request_id,
        text=run.preamble + (WITHHELD if run.withheld else "".join(run.text)),
        processing_mode=mode,
        decision=decision.target,
        backend="+".join(
            dict.fromkeys([*(s.name for s in run.sides_used), *([OFFLINE_BACKEND] if run.library else [])])
        )
        or "none",
        model=run.model,
        reasons=run.reasons,
        fallback_used=run.fallback_used,
        finish_reason=run.finish_reason,
        latency_ms=(ended - started) * 1000,
        first_token_ms=(run.first_token_at - started) * 1000 if run.first_token_at else None,
        usage=usage,
        cost_usd=cost,
        cloud_equivalent_usd=price.cost(prompt, completion),
        privacy_level=request.hints.privacy_level,
        user_id=request.user_id,
        endpoint=request.endpoint,
        complexity=features.complexity,
        redactions=run.redactions if run.redacted else None,
        flags=list(run.flags),
        region=cloud.region if used_cloud else None,
        started_at=started_at,
        routing=learned.record_fields(decision.routing),
        strategy_ids=run.strategy_ids,
        prompt_version=run.prompt_version,
        notice=run.notice,
    )
    return outcome, cloud_cost


def failed(
    request: HybridRequest,
    decision: Decision,
    features: RequestFeatures,
    run: Run,
    started: float,
    exc: UpcoachError | None,
    cloud: Cloud,
) -> Outcome:
    """The outcome of a request that failed (``exc``) or whose client went away (``exc`` None)."""
    elapsed = time.perf_counter() - started
    return Outcome(
        request_id=request.request_id,
        text="",
        processing_mode="none" if not run.text else "hybrid" if run.fallback_used else "local",
        decision=decision.target,
        backend="+".join(dict.fromkeys(s.name for s in run.sides_used)) or "none",
        model=run.model,
        reasons=run.reasons + ([exc.message] if exc else ["client disconnected"]),
        fallback_used=run.fallback_used,
        finish_reason="error" if exc else "cancelled",
        latency_ms=elapsed * 1000,
        first_token_ms=(run.first_token_at - started) * 1000 if run.first_token_at else None,
        usage=Usage(run.local_usage.prompt_tokens, len(run.text)),
        cost_usd=0.0,
        cloud_equivalent_usd=0.0,
        privacy_level=request.hints.privacy_level,
        user_id=request.user_id,
        endpoint=request.endpoint,
        outcome="error" if exc else "cancelled",
        error_code=exc.code if exc else None,
        complexity=features.complexity,
        redactions=run.redactions if run.redacted else None,
        flags=list(run.flags),
        region=cloud.region if any(s.is_cloud for s in run.sides_used) else None,
        started_at=datetime.now(UTC) - timedelta(seconds=elapsed),
        routing=learned.record_fields(decision.routing),
    )


def observe(metrics: Metrics, outcome: Outcome) -> None:
    m = metrics
    mode = outcome.processing_mode
    m.requests.labels(mode=mode, decision=outcome.decision or "none", outcome=outcome.outcome).inc()
    m.latency.labels(mode=mode).observe(outcome.latency_ms / 1000)
    if outcome.first_token_ms is not None:
        m.first_token.labels(mode=mode).observe(outcome.first_token_ms / 1000)
    first_token_s = outcome.first_token_ms / 1000 if outcome.first_token_ms is not None else None
    m.observe_output_tokens(mode, outcome.latency_ms / 1000, first_token_s, outcome.usage.completion_tokens)
    m.tokens.labels(mode=mode, kind="prompt").inc(outcome.usage.prompt_tokens)
    m.tokens.labels(mode=mode, kind="completion").inc(outcome.usage.completion_tokens)
    m.cost.labels(mode=mode).inc(outcome.cost_usd)
    m.cost_avoided.inc(max(0.0, outcome.cloud_equivalent_usd - outcome.cost_usd))
