"""The hybrid engine: decide (pure policy), run on the chosen side, fall back, account, record.

Fallback directions are asymmetric on purpose: the cloud may always fall back to our local side (nothing
leaves), but local falls back to the cloud only when the decision said the content may go there. A cloud
answer that breaks off mid-stream is finished by the local model from where it stopped ("hybrid").

Each request is decided with its user's privacy settings (looked up per request; a failed lookup refuses the
request, like any failed security check) and may only use the cloud endpoint of the user's residency region: the
legacy endpoint for users without a region, the region's own endpoint otherwise, and none (local) where the region
has no endpoint. Build it with ``routing/factory.py`` (what create_app uses), not by hand.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from upcoach.coaching.answer_checks import AnswerWatch, Failure
from upcoach.coaching.offline import OFFLINE_BACKEND, offline_answer
from upcoach.coaching.prompts import PROMPT_VERSION, CoachingPrompts, Prepared
from upcoach.errors import BackendError, LocalUnavailable, Overloaded, PromptInjection, Unavailable, UpcoachError
from upcoach.llm.base import (
    Backend,
    ChatMessage,
    ChatRequest,
    Chunk,
    Completion,
    GenerationParams,
    ResponseFormat,
    Tools,
    Usage,
    follows_grammar,
)
from upcoach.llm.structured import for_local
from upcoach.modelstore.catalog import decoding_for
from upcoach.observability import tracing
from upcoach.observability.metrics import BREAKER_VALUES, Metrics
from upcoach.privacy.settings import PrivacySettings
from upcoach.routing.answer_gate import AnswerRejected, gated
from upcoach.routing.costs import CloudBudget, PriceTable
from upcoach.routing.features import RequestFeatures, extract
from upcoach.routing.policy import (
    Decision,
    Device,
    Hints,
    LiveState,
    PolicyConfig,
    Target,
    decide,
    special_categories_may_leave,
)
from upcoach.security.canary import LeakWatch, guard_system_prompt, make_canary
from upcoach.security.guard import Guard, Inspection, Refusal, StreamRehydrator

log = logging.getLogger(__name__)

ProcessingMode = Literal["local", "cloud", "hybrid", "none"]
DEFAULT_LOCAL_TTFT_MS = 300.0
DEFAULT_CLOUD_TTFT_MS = 800.0
DEFAULT_ANSWER_TOKENS = 150


class Breaker(Protocol):
    async def allow(self) -> bool: ...
    async def record_success(self) -> None: ...
    async def record_failure(self) -> None: ...
    async def state(self) -> object: ...


@dataclass(frozen=True)
class RegionalCloud:
    """The cloud endpoint of one residency region, with its own breaker (one region failing leaves others)."""

    backend: Backend
    breaker: Breaker | None
    model: str


@dataclass(frozen=True, eq=False)
class _Cloud:
    """The cloud a request may use: ``backend`` None when the user's region has no endpoint."""

    name: str
    backend: Backend | None
    breaker: Breaker | None
    model: str
    region: str | None


PrivacyLookup = Callable[[str], Awaitable[PrivacySettings]]


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


@dataclass
class Event:
    """What stream() yields: ``admitted`` once, then ``text`` pieces, then one ``final``."""

    kind: Literal["admitted", "text", "final"]
    text: str = ""
    outcome: Outcome | None = None


@dataclass(eq=False)
class _Side:
    name: str
    backend: Backend
    is_cloud: bool
    strict: bool = False  # the one regeneration after a failed answer check, with a stricter prompt


@dataclass
class _Run:
    text: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    fallback_used: bool = False
    sides_used: list[_Side] = field(default_factory=list)
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
    coaching: bool = True  # persona, material and answer checks apply (``_coaching``)


RecordFn = Callable[[Outcome], Awaitable[None]]
FlagFn = Callable[["HybridRequest", list[str]], Awaitable[None]]
WITHHELD = "I can't share that. Let's get back to your coaching goals."


def _crisis_preamble(language: str, region: str | None) -> str:
    """The crisis resources of the user's country (their region setting), in the language they wrote in."""
    from upcoach.privacy.crisis import crisis_resources

    return crisis_resources(language, region) + "\n\n"


class HybridEngine:
    def __init__(
        self,
        *,
        local: Sequence[Backend],
        cloud: Backend | None,
        cloud_breaker: Breaker | None,
        cloud_model: str,
        prices: PriceTable,
        budget: CloudBudget,
        policy: PolicyConfig,
        metrics: Metrics,
        record: RecordFn,
        guard: Guard,
        on_flag: FlagFn | None = None,
        regions: Mapping[str, RegionalCloud] | None = None,
        privacy: PrivacyLookup | None = None,
        prompts: CoachingPrompts | None = None,
        answer_checks: bool = True,
    ) -> None:
        self.local = list(local)
        self.cloud = cloud
        self.cloud_breaker = cloud_breaker
        self.cloud_model = cloud_model
        self.prices = prices
        self.budget = budget
        self.policy = policy
        self.metrics = metrics
        self._record = record
        self.guard = guard
        self._on_flag = on_flag
        self.regions = dict(regions or {})
        self._privacy = privacy
        self.prompts = prompts
        self.answer_checks = answer_checks
        # One canary per process, not per request: a per-request token would change the system prompt every
        # time and defeat the prefix cache.
        self.canary = make_canary()
        # Called with every coaching answer that reached its user (not for self-harm, where chips come from the
        # library): create_app hooks the chips computed ahead here (coaching/chips_ahead.py). Must not block.
        self.on_answer: Callable[[HybridRequest, Outcome], None] | None = None

    async def aclose(self) -> None:
        """Close the cloud clients (the legacy endpoint and every region's); local backends belong to the caller."""
        for backend in (self.cloud, *(regional.backend for regional in self.regions.values())):
            close = getattr(backend, "aclose", None)
            if close is not None:
                await close()

    # ---- state and decision ------------------------------------------------------------------------------------
    def _cloud_for(self, user: PrivacySettings | None) -> _Cloud:
        region = user.region if user is not None else None
        if region is None:
            return _Cloud("cloud", self.cloud, self.cloud_breaker, self.cloud_model, None)
        regional = self.regions.get(region)
        if regional is None:
            return _Cloud(f"cloud-{region}", None, None, self.cloud_model, region)
        return _Cloud(f"cloud-{region}", regional.backend, regional.breaker, regional.model, region)

    async def _settings_for(self, request: HybridRequest) -> PrivacySettings | None:
        """The user's settings (anonymous requests have the defaults); a failed lookup refuses the request."""
        if request.user_id is None or self._privacy is None:
            return None
        try:
            return await self._privacy(request.user_id)
        except Exception as exc:  # fail closed: without the user's settings nothing may be decided
            log.exception("privacy settings lookup failed for a request")
            raise await self.guard.refuse(
                Refusal("settings", type(exc).__name__, request.request_id, request.user_id, request.endpoint)
            ) from None

    async def live_state(self, cloud: _Cloud | None = None) -> LiveState:
        cloud = cloud or self._cloud_for(None)
        available, full, reason = False, True, "no local backend configured"
        ttft = DEFAULT_LOCAL_TTFT_MS
        for index, backend in enumerate(self.local):
            health = await backend.health()
            if health.ok or health.reason == "queue full":
                if not available:
                    ttft = _estimate_local_ttft(backend, health.queue_depth)
                available = True
                full = full and not health.ok
                if index == 0:
                    self.metrics.queue_depth.set(health.queue_depth)
            elif index == 0:
                reason = health.reason or "local model unavailable"
        breaker_open = False
        if cloud.breaker is not None:
            raw = await cloud.breaker.state()
            state = str(getattr(raw, "value", raw))
            self.metrics.breaker_state.labels(backend=cloud.name).set(BREAKER_VALUES.get(state, 0))
            breaker_open = state == "open"
        cloud_ttft = DEFAULT_CLOUD_TTFT_MS
        if cloud.backend is not None:
            measured = cloud.backend.info().details.get("ttft_ms_ewma")
            cloud_ttft = float(measured) if isinstance(measured, int | float) else DEFAULT_CLOUD_TTFT_MS
        return LiveState(
            local_available=available,
            local_queue_full=available and full,
            local_ttft_ms=ttft,
            cloud_configured=cloud.backend is not None,
            cloud_breaker_open=breaker_open,
            cloud_over_budget=await self.budget.over(),
            cloud_ttft_ms=cloud_ttft,
            local_unavailable_reason=reason,
            cloud_region=cloud.region,
        )

    async def route(self, request: HybridRequest) -> tuple[Decision, RequestFeatures, LiveState, Inspection]:
        decision, features, state, inspection, _ = await self._route(request)
        return decision, features, state, inspection

    async def _route(self, request: HybridRequest) -> tuple[Decision, RequestFeatures, LiveState, Inspection, _Cloud]:
        with tracing.span("upcoach.routing", **{"upcoach.request_id": request.request_id}) as span:
            routed = await self._decide(request)
            if span is not None:
                decision = routed[0]
                span.set_attributes({"upcoach.decision": decision.target or "none", "upcoach.redact": decision.redact,
                                     "upcoach.privacy_level": request.hints.privacy_level})  # fmt: skip
            return routed

    async def _decide(self, request: HybridRequest) -> tuple[Decision, RequestFeatures, LiveState, Inspection, _Cloud]:
        inspection = await self.guard.check(
            request.messages, request_id=request.request_id, user_id=request.user_id, endpoint=request.endpoint
        )
        user = await self._settings_for(request)
        cloud = self._cloud_for(user)
        hints = request.hints
        keep_local = inspection.keep_local
        opted_in = None
        if (
            keep_local
            and inspection.special_categories
            and not inspection.self_harm
            and special_categories_may_leave(user)
        ):
            categories = ", ".join(inspection.special_categories)
            opted_in = (
                f"special-category data ({categories}): cloud allowed (user setting: special_category_cloud_opt_in)"
            )
            keep_local = None
        if keep_local and hints.privacy_level != "sensitive":
            hints = replace(hints, privacy_level="sensitive")
        features = extract(request.messages)
        state = await self.live_state(cloud)
        started = time.perf_counter()
        decision = decide(features, hints, state, self.policy, request.device, user)
        self.metrics.decision_seconds.observe(time.perf_counter() - started)
        if keep_local or opted_in:
            decision = replace(decision, reasons=(keep_local or opted_in or "", *decision.reasons))
        # A pin never overrides a user's "no cloud" (only local pins exist on the API today).
        user_refuses_cloud = user is not None and user.cloud_refusal is not None
        if request.force is not None and not (request.force == "cloud" and user_refuses_cloud):
            decision = _forced(decision, request.force, state)
        return decision, features, state, inspection, cloud

    # ---- execution ---------------------------------------------------------------------------------------------
    async def process(self, request: HybridRequest) -> Outcome:
        async for event in self.stream(request):
            if event.outcome is not None:
                return event.outcome
        raise Unavailable("no answer was produced")

    async def stream(self, request: HybridRequest) -> AsyncIterator[Event]:
        started = time.perf_counter()
        decision, features, _, inspection, cloud = await self._route(request)
        run = _Run(reasons=list(decision.reasons), flags=list(inspection.flags), coaching=_coaching(request))
        plan = self._plan(decision, cloud)
        admitted = False
        outcome: Outcome | None = None
        last_error: UpcoachError | None = None
        prepared = await self._prepare(request, features.language)
        run.strategy_ids = list(prepared.strategy_ids)
        run.prompt_version = PROMPT_VERSION if prepared.persona or prepared.strategy_ids else None
        messages = self._guarded_messages(prepared.messages)
        try:
            if inspection.injection_verdict == "block":
                run.flags.append("prompt_injection_blocked")
                raise PromptInjection("the request looks like a prompt injection and was refused", param="messages")
            if inspection.injection_verdict == "flag":
                run.reasons.append(f"possible prompt injection (score {inspection.injection_score:.2f}): flagged")
            if decision.target is None:
                raise LocalUnavailable("; ".join(decision.reasons), param="routingHints.privacyLevel")
            for position, side in enumerate(plan):
                last_side = position == len(plan) - 1
                if side.is_cloud and cloud.breaker is not None and not await cloud.breaker.allow():
                    run.reasons.append("cloud circuit breaker open: answered locally")
                    run.fallback_used = True
                    continue
                continuation = "".join(run.text)
                rehydrator: StreamRehydrator | None = None
                side_messages = messages
                if side.strict:
                    # Before redaction: a stricter retry on a cloud side is redacted like any other cloud call.
                    side_messages = self._guarded_messages(prepared.stricter(", ".join(str(f) for f in run.rejected)))
                if side.is_cloud and decision.redact:
                    try:
                        side_messages, rehydrator = self._redact(side_messages, run)
                    except Exception as exc:  # fail closed: what could not be redacted is refused, not sent
                        log.exception("redaction failed")
                        run.reasons.append(f"redaction failed ({type(exc).__name__}): refused")
                        raise await self.guard.refuse(
                            Refusal("pii", type(exc).__name__, request.request_id, request.user_id, request.endpoint)
                        ) from None
                params = request.params if side.is_cloud else _local_params(request.params, side.backend)
                chat = ChatRequest(
                    side_messages, params, request.request_id, continuation, request.user_id,
                    response_format=request.response_format, tools=request.tools,
                    prompt=side_messages[-1].content if request.raw_prompt else None,
                )  # fmt: skip
                if follows_grammar(side.backend):
                    chat = for_local(chat)
                trace = tracing.start_span(
                    "upcoach.backend", **{"upcoach.backend": side.name, "upcoach.cloud": side.is_cloud}
                )
                side_outcome = "incomplete"  # cancelled, or an error no backend raises
                try:
                    async for chunk in self._checked(side, chat, prepared, run):
                        if not admitted:
                            admitted = True
                            yield Event("admitted")
                            if inspection.self_harm:
                                run.preamble = _crisis_preamble(features.language, cloud.region)
                                yield Event("text", run.preamble)
                        piece = rehydrator.feed(chunk.text) if rehydrator and chunk.text else chunk.text
                        if chunk.final is not None and rehydrator is not None:
                            piece += rehydrator.flush()
                        if piece and not run.withheld:
                            if run.first_token_at is None:
                                run.first_token_at = time.perf_counter()
                            if side not in run.sides_used:
                                run.sides_used.append(side)
                            run.text.append(piece)
                            if self._leaked(run, request.messages, piece):
                                run.withheld = True
                                run.flags.append("system_prompt_leak_withheld")
                                run.reasons.append("answer withheld: it revealed the system prompt")
                                yield Event("text", WITHHELD)
                            else:
                                yield Event("text", piece)
                        if chunk.final is not None:
                            self._account(run, side, chunk.final)
                    side_outcome = "ok"
                except AnswerRejected as exc:
                    run.rejected += exc.failures
                    run.fallback_used = True
                    if not side.strict:
                        plan.insert(position + 1, replace(side, strict=True))
                        run.reasons.append(f"answer check failed ({exc.summary}): regenerated with a stricter prompt")
                    elif not last_side:
                        nxt = plan[position + 1]
                        run.reasons.append(f"answer check failed again ({exc.summary}): answered by {nxt.name}")
                    if position < len(plan) - 1:
                        continue
                    if not admitted:
                        admitted = True
                        yield Event("admitted")
                    text = await self._library(request, run, inspection.self_harm)
                    if text is None:
                        raise LocalUnavailable(
                            "the local answer failed its checks and no other answer was possible"
                        ) from None
                    yield Event("text", text)
                except (BackendError, Overloaded, Unavailable) as exc:
                    last_error = exc
                    side_outcome = exc.code
                    # Overloaded is our own in-flight limit refusing the call, not the cloud failing.
                    if side.is_cloud and cloud.breaker is not None and not isinstance(exc, Overloaded):
                        await cloud.breaker.record_failure()
                    if last_side or (run.text and side.is_cloud is False):
                        raise
                    nxt = plan[position + 1]
                    where = "finished locally" if run.text else "answered locally"
                    if not nxt.is_cloud:
                        run.reasons.append(f"{side.name} failed ({exc.code}): {where}")
                    else:
                        run.reasons.append(f"{side.name} failed ({exc.code}): answered by the cloud")
                    run.fallback_used = True
                    self.metrics.fallbacks.labels(
                        source="cloud" if side.is_cloud else "local",
                        target="cloud" if nxt.is_cloud else "local",
                        reason=exc.code,
                    ).inc()
                    continue
                finally:
                    if trace is not None:
                        trace.set_attribute("upcoach.backend.outcome", side_outcome)
                        trace.end()
                if side.is_cloud and cloud.breaker is not None:
                    await cloud.breaker.record_success()
                if run.flags and self._on_flag is not None:
                    await self._on_flag(request, run.flags)
                outcome = await self._finish(request, decision, features, run, started, cloud)
                if self.on_answer is not None and run.coaching and not inspection.self_harm:
                    self.on_answer(request, outcome)
                yield Event("final", outcome=outcome)
                return
            raise last_error or LocalUnavailable("; ".join(run.reasons))
        except UpcoachError as exc:
            if run.flags and self._on_flag is not None:
                await self._on_flag(request, run.flags)
            await self._record_failure(request, decision, features, run, started, exc, cloud)
            raise
        except BaseException:
            # Client gone (cancelled) or a bug: the row is still written, with what we know.
            if outcome is None:
                await self._record_failure(request, decision, features, run, started, None, cloud)
            raise

    async def _prepare(self, request: HybridRequest, language: str) -> Prepared:
        """Persona and retrieved material (coaching/prompts.py); retrieval is a local database search."""
        if self.prompts is None or not _coaching(request):
            return Prepared(request.messages)
        return await self.prompts.prepare(request.messages, language)

    def _checked(self, side: _Side, chat: ChatRequest, prepared: Prepared, run: _Run) -> AsyncIterator[Chunk]:
        """The side's stream, through the answer checks when it is a local model starting a new answer."""
        stream = side.backend.stream(chat)
        if side.is_cloud or not self.answer_checks or not run.coaching or chat.continuation or _constrained(chat):
            return stream
        question = next((m.content for m in reversed(prepared.messages) if m.role == "user"), "")
        watch = AnswerWatch(question, prepared.topic)
        return gated(stream, watch, self.metrics, side.backend.info().model, run.cut)

    async def _library(self, request: HybridRequest, run: _Run, self_harm: bool) -> str | None:
        """The strategies library's answer after the checks failed everywhere (None: no library here)."""
        if self.prompts is None or self.prompts.strategies is None:
            return None
        answer = await offline_answer(self.prompts.strategies, request.messages, self_harm=self_harm)
        # The crisis resources, when due, were already sent as the preamble (the reach-out strategy stays first).
        text = answer.text.removeprefix(_crisis_preamble()) if self_harm else answer.text
        run.library = True
        run.strategy_ids = list(answer.strategy_ids)
        run.reasons.append("answer checks failed: answered from the strategies library")
        run.text.append(text)
        if run.first_token_at is None:
            run.first_token_at = time.perf_counter()
        return text

    def _guarded_messages(self, messages: tuple[ChatMessage, ...]) -> tuple[ChatMessage, ...]:
        if not messages or messages[0].role not in ("system", "developer"):
            return messages
        first = messages[0]
        return (ChatMessage(first.role, guard_system_prompt(first.content, self.canary)), *messages[1:])

    def _redact(self, messages: tuple[ChatMessage, ...], run: _Run) -> tuple[tuple[ChatMessage, ...], StreamRehydrator]:
        redactor = self.guard.redactor()
        redacted = redactor.redact_messages([m.content for m in messages])  # type: ignore[attr-defined]
        run.redactions = dict(redactor.counts)  # type: ignore[attr-defined]
        run.redacted = True
        return tuple(replace(m, content=text) for m, text in zip(messages, redacted, strict=True)), StreamRehydrator(
            redactor
        )

    def _leaked(self, run: _Run, original: tuple[ChatMessage, ...], piece: str) -> bool:
        if run.leak_watch is None:
            system = original[0].content if original and original[0].role in ("system", "developer") else ""
            run.leak_watch = LeakWatch(self.canary, system)
        return run.leak_watch.feed(piece)

    def _plan(self, decision: Decision, cloud: _Cloud) -> list[_Side]:
        local_sides = [_Side(_backend_name(b), b, False) for b in self.local]
        cloud_side = [_Side(cloud.name, cloud.backend, True)] if cloud.backend is not None else []
        if decision.target == "cloud":
            return cloud_side + local_sides
        return local_sides + (cloud_side if decision.cloud_allowed else [])

    def _account(self, run: _Run, side: _Side, final: Completion) -> None:
        if side not in run.sides_used:
            run.sides_used.append(side)
        run.finish_reason = final.finish_reason
        run.model = final.model
        target = run.cloud_usage if side.is_cloud else run.local_usage
        if not side.is_cloud and final.queue_ms:
            self.metrics.queue_wait.observe(final.queue_ms / 1000)
        target.prompt_tokens += final.usage.prompt_tokens
        target.completion_tokens += final.usage.completion_tokens
        target.cached_tokens += final.usage.cached_tokens

    async def _finish(
        self,
        request: HybridRequest,
        decision: Decision,
        features: RequestFeatures,
        run: _Run,
        started: float,
        cloud: _Cloud,
    ) -> Outcome:
        ended = time.perf_counter()
        started_at = datetime.now(UTC) - timedelta(seconds=ended - started)
        if run.cut:
            run.reasons.append(
                f"answer check failed ({', '.join(map(str, run.cut))}): answer ended at the last sentence that passed"
            )
        used_cloud = any(s.is_cloud for s in run.sides_used)
        used_local = any(not s.is_cloud for s in run.sides_used)
        mode: ProcessingMode = (
            "hybrid"
            if (used_cloud and used_local) or (used_cloud and run.redacted)
            else "cloud"
            if used_cloud
            else "local"
        )
        # A cloud stream that broke off still produced tokens we pay for: count what reached the user.
        if used_local and run.fallback_used and used_cloud and run.cloud_usage.completion_tokens == 0:
            run.cloud_usage.completion_tokens = max(1, len("".join(run.text)) // 4)
        price = self.prices.cloud(cloud.model)
        cost = price.cost(run.cloud_usage.prompt_tokens, run.cloud_usage.completion_tokens)
        cost += self.prices.local_cost(run.local_usage.prompt_tokens, run.local_usage.completion_tokens)
        prompt = max(run.cloud_usage.prompt_tokens, run.local_usage.prompt_tokens)
        completion = run.cloud_usage.completion_tokens + run.local_usage.completion_tokens
        usage = Usage(prompt, completion, run.local_usage.cached_tokens)
        await self.budget.add(price.cost(run.cloud_usage.prompt_tokens, run.cloud_usage.completion_tokens))
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
            strategy_ids=run.strategy_ids,
            prompt_version=run.prompt_version,
        )
        self._observe(outcome)
        await self._record(outcome)
        return outcome

    async def _record_failure(
        self,
        request: HybridRequest,
        decision: Decision,
        features: RequestFeatures,
        run: _Run,
        started: float,
        exc: UpcoachError | None,
        cloud: _Cloud,
    ) -> None:
        elapsed = time.perf_counter() - started
        outcome = Outcome(
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
        )
        self._observe(outcome)
        try:
            await self._record(outcome)
        except Exception:  # recording must never turn one failure into another
            log.exception("could not record failed request %s", request.request_id)

    def _observe(self, outcome: Outcome) -> None:
        m = self.metrics
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


def _forced(decision: Decision, target: Target, state: LiveState) -> Decision:
    reasons = (f"model pinned by the caller: {target}",)
    if target == "local" and not state.local_available:
        return Decision(None, (*reasons, state.local_unavailable_reason), False, decision.complexity,
                        error_code="local_unavailable")  # fmt: skip
    return Decision(target, reasons, False, decision.complexity, decision.on_device, decision.device_reasons)


def _estimate_local_ttft(backend: Backend, queue_depth: int) -> float:
    details = backend.info().details
    estimate = details.get("estimated_ttft_ms")
    if isinstance(estimate, int | float):
        # The batching engine's own estimate from its live batch: slot wait, prompt tokens ahead, step time.
        return float(estimate)
    ttft = details.get("ttft_ms_ewma")
    wait = details.get("estimated_wait_ms")
    if isinstance(wait, int | float):
        # A batching engine (llm/scheduler.py) knows its own queue: its prefill plus the wait for a free slot.
        return (float(ttft) if isinstance(ttft, int | float) else DEFAULT_LOCAL_TTFT_MS) + float(wait)
    service = details.get("service_ms_ewma")
    decode = details.get("decode_tps_ewma")
    ttft_ms = float(ttft) if isinstance(ttft, int | float) else DEFAULT_LOCAL_TTFT_MS
    if isinstance(service, int | float):
        per_job = float(service)
    else:
        rate = float(decode) if isinstance(decode, int | float) and decode > 0 else 30.0
        per_job = ttft_ms + DEFAULT_ANSWER_TOKENS / rate * 1000
    return ttft_ms + queue_depth * per_job


def _coaching(request: HybridRequest) -> bool:
    """Whether our coaching layer (persona, library material, answer checks) applies. Not to JSON, tool calls or a
    raw text continuation (the caller shaped the output), nor to a caller that named a model (``/v1`` with the
    model's id or ``default``): they asked for that model as it is, like any OpenAI-compatible server serves it."""
    structured = request.response_format is not None or request.tools is not None or request.raw_prompt
    return not structured and request.force is None


def _constrained(chat: ChatRequest) -> bool:
    """Answers a grammar or the caller's format shapes are not coaching prose: the answer checks do not apply."""
    return (
        chat.grammar is not None
        or chat.prompt is not None
        or chat.response_format is not None
        or (chat.tools is not None and chat.tools.active)
    )


def _local_params(params: GenerationParams, backend: Backend) -> GenerationParams:
    """The serving model's decoding settings from the catalog (temperature only when the caller chose none)."""
    decoding = decoding_for(backend.info().model)
    temperature = decoding.temperature if params.model_temperature else params.temperature
    return replace(params, temperature=temperature, repeat_penalty=decoding.repeat_penalty)


def _backend_name(backend: Backend) -> str:
    return backend.info().name
