"""The hybrid engine: decide (pure policy), run on the chosen side, fall back, account, record.

Where a request may run and in which order is ``routing/sides.py``; what it produced (the outcome that is observed
and recorded) is ``routing/outcome.py``. A cloud answer that breaks off mid-stream is finished by the local model
from where it stopped ("hybrid").

Each request is decided with its user's privacy settings (looked up per request; a failed lookup refuses the
request, like any failed security check) and may only use the cloud endpoint of the user's residency region: the
legacy endpoint for users without a region, the region's own endpoint otherwise, and none (local) where the region
has no endpoint. Build it with ``routing/factory.py`` (what create_app uses), not by hand.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace

from upcoach.coaching.answer_checks import AnswerWatch
from upcoach.coaching.offline import offline_answer
from upcoach.coaching.prompts import PROMPT_VERSION, CoachingPrompts, Prepared
from upcoach.errors import BackendError, LocalUnavailable, Overloaded, PromptInjection, Unavailable, UpcoachError
from upcoach.llm.base import Backend, ChatMessage, ChatRequest, Chunk, follows_grammar
from upcoach.llm.structured import for_local, keeps_format
from upcoach.observability import tracing
from upcoach.observability.metrics import BREAKER_VALUES, Metrics
from upcoach.privacy.settings import PrivacySettings
from upcoach.routing import learned, sides
from upcoach.routing.answer_gate import AnswerRejected, gated
from upcoach.routing.costs import CloudBudget, PriceTable
from upcoach.routing.features import RequestFeatures, extract
from upcoach.routing.outcome import (
    WITHHELD,
    Event,
    HybridRequest,
    Outcome,
    ProcessingMode,
    Run,
    account,
    failed,
    finished,
    observe,
)
from upcoach.routing.policy import (
    Decision,
    LiveState,
    PolicyConfig,
    RoutingLog,
    Target,
    decide,
    special_categories_may_leave,
)
from upcoach.routing.sides import Breaker, Cloud, RegionalCloud, Side
from upcoach.security.canary import LeakWatch, guard_system_prompt, make_canary
from upcoach.security.guard import Guard, Inspection, Refusal, StreamRehydrator

# Re-exported: callers import the request and outcome types from the engine they use.
__all__ = ["Event", "HybridEngine", "HybridRequest", "Outcome", "ProcessingMode", "RegionalCloud"]

log = logging.getLogger(__name__)

DEFAULT_LOCAL_TTFT_MS = 300.0
DEFAULT_CLOUD_TTFT_MS = 800.0
DEFAULT_ANSWER_TOKENS = 150

PrivacyLookup = Callable[[str], Awaitable[PrivacySettings]]
RecordFn = Callable[[Outcome], Awaitable[None]]
FlagFn = Callable[[HybridRequest, list[str]], Awaitable[None]]


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
    def _cloud_for(self, user: PrivacySettings | None) -> Cloud:
        region = user.region if user is not None else None
        if region is None:
            return Cloud("cloud", self.cloud, self.cloud_breaker, self.cloud_model, None)
        regional = self.regions.get(region)
        if regional is None:
            return Cloud(f"cloud-{region}", None, None, self.cloud_model, region)
        return Cloud(f"cloud-{region}", regional.backend, regional.breaker, regional.model, region)

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

    async def live_state(self, cloud: Cloud | None = None) -> LiveState:
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

    async def _route(self, request: HybridRequest) -> tuple[Decision, RequestFeatures, LiveState, Inspection, Cloud]:
        with tracing.span("upcoach.routing", **{"upcoach.request_id": request.request_id}) as span:
            routed = await self._decide(request)
            if span is not None:
                decision = routed[0]
                span.set_attributes({"upcoach.decision": decision.target or "none", "upcoach.redact": decision.redact,
                                     "upcoach.privacy_level": request.hints.privacy_level})  # fmt: skip
            return routed

    async def _decide(self, request: HybridRequest) -> tuple[Decision, RequestFeatures, LiveState, Inspection, Cloud]:
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
        # The learned router and the exploration draw (issue 20): inputs of the policy's free step only.
        explorable = keep_local is None and not inspection.special_categories and not inspection.self_harm
        free = learned.for_request(self.policy, features, request.messages, request.device, explorable,
                                   request.user_id)  # fmt: skip
        decision = decide(features, hints, state, self.policy, request.device, user, free.free)
        self.metrics.decision_seconds.observe(time.perf_counter() - started)
        if decision.routing is not None:
            keep = user is not None and user.analytics_opt_in  # the vector serves learning: opted-in users only
            decision = replace(decision, routing=learned.with_inputs(decision.routing, free, request.messages, keep))
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
        run = Run(reasons=list(decision.reasons), flags=list(inspection.flags), coaching=_coaching(request))
        plan = sides.plan(decision, cloud, self.local)
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
                params = request.params if side.is_cloud else sides.local_params(request.params, side.backend)
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
                            help_ = _crisis_preamble(features.language, cloud.region) if inspection.self_harm else ""
                            if help_ and keeps_format(request.response_format, request.tools):
                                run.notice = help_.strip()  # JSON or tool calls stay valid: resources go beside
                                yield Event("admitted", notice=run.notice)
                            else:
                                yield Event("admitted")
                                run.preamble = help_
                                for index in range(request.params.n) if help_ else ():
                                    yield Event("text", help_, index=index)
                        if chunk.index:  # another choice of an n > 1 request, checked on its own
                            other = run.others.feed(chunk, rehydrator, lambda: self._watch(request.messages))
                            if other is not None:
                                if other.leaked:
                                    run.flags.append("system_prompt_leak_withheld")
                                yield Event("text", WITHHELD if other.leaked else other.text, index=chunk.index,
                                            logprobs=other.logprobs, finish=chunk.finish)  # fmt: skip
                            continue
                        piece = rehydrator.feed(chunk.text) if rehydrator and chunk.text else chunk.text
                        if chunk.final is not None and rehydrator is not None:
                            piece += rehydrator.flush()
                        if (piece or chunk.logprobs) and not run.withheld:
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
                                yield Event("text", piece, logprobs=chunk.logprobs)
                        if chunk.final is not None:
                            account(run, side, chunk.final, self.metrics)
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
                outcome, cloud_cost = finished(request, decision, features, run, started, cloud, self.prices)
                await self.budget.add(cloud_cost)
                await self._settle(outcome)
                if self.on_answer is not None and run.coaching and not inspection.self_harm:
                    self.on_answer(request, outcome)
                yield Event("final", outcome=outcome)
                return
            raise last_error or LocalUnavailable("; ".join(run.reasons))
        except UpcoachError as exc:
            if run.flags and self._on_flag is not None:
                await self._on_flag(request, run.flags)
            await self._settle(failed(request, decision, features, run, started, exc, cloud), failure=True)
            raise
        except BaseException:
            # Client gone (cancelled) or a bug: the row is still written, with what we know.
            if outcome is None:
                await self._settle(failed(request, decision, features, run, started, None, cloud), failure=True)
            raise

    async def _prepare(self, request: HybridRequest, language: str) -> Prepared:
        """Persona and retrieved material (coaching/prompts.py); retrieval is a local database search."""
        if self.prompts is None or not _coaching(request):
            return Prepared(request.messages)
        return await self.prompts.prepare(request.messages, language)

    def _checked(self, side: Side, chat: ChatRequest, prepared: Prepared, run: Run) -> AsyncIterator[Chunk]:
        """The side's stream, through the answer checks when it is a local model starting a new answer."""
        stream = side.backend.stream(chat)
        if side.is_cloud or not self.answer_checks or not run.coaching or chat.continuation or sides.constrained(chat):
            return stream
        if chat.params.n > 1 or chat.params.logprobs is not None:
            return stream  # n choices and token log probabilities pass as generated: the checks re-chunk text
        question = next((m.content for m in reversed(prepared.messages) if m.role == "user"), "")
        watch = AnswerWatch(question, prepared.topic)
        return gated(stream, watch, self.metrics, side.backend.info().model, run.cut)

    async def _library(self, request: HybridRequest, run: Run, self_harm: bool) -> str | None:
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

    def _redact(self, messages: tuple[ChatMessage, ...], run: Run) -> tuple[tuple[ChatMessage, ...], StreamRehydrator]:
        redactor = self.guard.redactor()
        redacted = redactor.redact_messages([m.content for m in messages])  # type: ignore[attr-defined]
        run.redactions = dict(redactor.counts)  # type: ignore[attr-defined]
        run.redacted = True
        return tuple(replace(m, content=text) for m, text in zip(messages, redacted, strict=True)), StreamRehydrator(
            redactor
        )

    def _leaked(self, run: Run, original: tuple[ChatMessage, ...], piece: str) -> bool:
        if run.leak_watch is None:
            run.leak_watch = self._watch(original)
        return run.leak_watch.feed(piece)

    def _watch(self, original: tuple[ChatMessage, ...]) -> LeakWatch:
        system = original[0].content if original and original[0].role in ("system", "developer") else ""
        return LeakWatch(self.canary, system)

    async def _settle(self, outcome: Outcome, *, failure: bool = False) -> None:
        """Observe and record a request's outcome; a failure's record may fail without hiding the failure."""
        observe(self.metrics, outcome)
        if not failure:
            await self._record(outcome)
            return
        try:
            await self._record(outcome)
        except Exception:  # recording must never turn one failure into another
            log.exception("could not record failed request %s", outcome.request_id)


def _forced(decision: Decision, target: Target, state: LiveState) -> Decision:
    reasons = (f"model pinned by the caller: {target}",)
    if target == "local" and not state.local_available:
        return Decision(None, (*reasons, state.local_unavailable_reason), False, decision.complexity,
                        error_code="local_unavailable")  # fmt: skip
    return Decision(target, reasons, False, decision.complexity, decision.on_device, decision.device_reasons,
                    routing=RoutingLog(target, forced=True, propensity=1.0))  # fmt: skip


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
