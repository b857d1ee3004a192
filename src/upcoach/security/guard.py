"""The security checks every text passes before it reaches a model, in one place, failing closed.

- special-category data (GDPR art. 9) and signs of self-harm, in EVERY message of every role (system, developer,
  assistant, user, tool): the request stays local (self-harm: crisis resources first). Each message is read as its
  role (privacy/special_category.py): a system prompt's "do not diagnose" or "if the user mentions suicide, ..." is
  an instruction, not data, while "context about this client: diagnosed with ..." is data in any role;
- prompt injection (OWASP LLM01), with a policy per role (``INJECTION_POLICY``): user and tool messages are what
  an attacker writes, so ``block`` refuses and ``flag`` records; an assistant turn comes back from the client and may
  be forged, so it can flag but never block alone; system and developer messages are the integrator's own
  instructions (they legitimately say "you are ...", "ignore ..."), protected by the canary instead;
- PII: a private request may reach the cloud only through a per-conversation ``Redactor`` over every message.
If any check raises, the request is refused (``SecurityCheckFailed``, 503 ``security_check_failed``), counted in
``upcoach_security_check_failures_total{check}`` and written to the audit trail: nothing is sent unchecked.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from upcoach.errors import SecurityCheckFailed
from upcoach.llm.base import ChatMessage
from upcoach.observability import tracing
from upcoach.observability.metrics import Metrics

log = logging.getLogger(__name__)

# Which messages the injection detector reads, and the strongest verdict each role can produce.
INJECTION_POLICY = {"user": "block", "tool": "block", "assistant": "flag"}
CHECKS = ("injection", "special_category", "pii", "settings")


@dataclass(frozen=True)
class Refusal:
    """What the audit trail records about a refused request: never the text."""

    check: str
    error: str
    request_id: str
    user_id: str | None
    endpoint: str


FailureFn = Callable[[Refusal], Awaitable[None]]


@dataclass(frozen=True)
class Inspection:
    injection_verdict: str = "allow"
    injection_score: float = 0.0
    injection_signals: tuple[str, ...] = ()
    special_categories: tuple[str, ...] = ()
    self_harm: bool = False
    failure: str | None = None  # the check that raised (see CHECKS): the request must be refused
    failure_error: str | None = None  # the exception's class name, never its message (it could quote the text)
    flags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def keep_local(self) -> str | None:
        """Why this request must not leave our side, or None."""
        if self.failure:
            return f"security check failed ({self.failure}): refused"
        if self.self_harm:
            return "signs of self-harm: kept local, crisis resources added"
        if self.special_categories:
            return f"special-category data ({', '.join(self.special_categories)}): kept local"
        return None


class Guard:
    def __init__(
        self,
        injection: object | None = None,
        allow_special_categories: bool = False,
        *,
        metrics: Metrics | None = None,
        on_failure: FailureFn | None = None,
    ) -> None:
        if injection is None:
            from upcoach.security.injection import InjectionDetector

            injection = InjectionDetector()
        self.injection = injection
        self.allow_special_categories = allow_special_categories
        self.metrics = metrics
        self._on_failure = on_failure

    def inspect(self, messages: Sequence[ChatMessage]) -> Inspection:
        """Every check over every message; a check that raises is named in ``failure`` (callers refuse)."""
        from upcoach.privacy.special_category import detect_special_categories

        check = "injection"
        try:
            verdict, score, signals = "allow", 0.0, []
            for message in messages:
                ceiling = INJECTION_POLICY.get(message.role)
                if ceiling is None:
                    continue
                result = self.injection.scan(message.content)  # type: ignore[attr-defined]
                signals.extend(result.signals)
                score = max(score, result.score)
                capped = min(_SEVERITY[result.verdict], _SEVERITY[ceiling])
                if capped > _SEVERITY[verdict]:
                    verdict = _VERDICTS[capped]
            check = "special_category"
            categories: list[str] = []
            self_harm = False
            for message in messages:
                special = detect_special_categories(message.content, message.role)
                categories.extend(c for c in special.categories if c not in categories)
                self_harm = self_harm or special.self_harm
        except Exception as exc:  # fail closed: an unscanned request is refused
            log.exception("security check %s failed", check)
            return Inspection(failure=check, failure_error=type(exc).__name__)
        flags: list[str] = []
        if verdict == "flag":
            flags.append("prompt_injection_suspected")
        if self_harm:
            flags.append("self_harm")
        return Inspection(
            injection_verdict=verdict,
            injection_score=score,
            injection_signals=tuple(dict.fromkeys(signals)),
            special_categories=() if self.allow_special_categories and not self_harm else tuple(categories),
            self_harm=self_harm,
            flags=tuple(flags),
        )

    async def check(
        self, messages: Sequence[ChatMessage], *, request_id: str, user_id: str | None, endpoint: str
    ) -> Inspection:
        """``inspect``, raising ``SecurityCheckFailed`` (counted and audited) when a check could not run."""
        with tracing.span("upcoach.guard") as span:
            inspection = self.inspect(messages)
            if span is not None:
                span.set_attributes({
                    "upcoach.guard.injection": inspection.injection_verdict,
                    "upcoach.guard.keep_local": bool(inspection.keep_local),
                    "upcoach.guard.flags": len(inspection.flags),
                    "upcoach.guard.failed": inspection.failure or "",
                })  # fmt: skip
        if inspection.failure is not None:
            failure = Refusal(inspection.failure, inspection.failure_error or "", request_id, user_id, endpoint)
            raise await self.refuse(failure)
        return inspection

    async def refuse(self, refusal: Refusal) -> SecurityCheckFailed:
        """Count and audit a failed check; the caller raises what this returns."""
        if self.metrics is not None:
            self.metrics.security_check_failures.labels(check=refusal.check).inc()
        if self._on_failure is not None:
            try:
                await self._on_failure(refusal)
            except Exception:  # the refusal stands even if the trail cannot be written
                log.exception("could not audit the refused request %s", refusal.request_id)
        return SecurityCheckFailed(refusal.check)

    @staticmethod
    def redactor() -> object:
        from upcoach.security.pii import Redactor

        return Redactor()


_SEVERITY = {"allow": 0, "flag": 1, "block": 2}
_VERDICTS = {level: verdict for verdict, level in _SEVERITY.items()}
# The end of a streamed piece that may be the start of a placeholder the next piece completes, in any form
# ``Redactor.rehydrate`` accepts: "[PERSON_1]", "[person_1]", "PERSON_1", "PERSON\\_1" (bracketed anywhere, bare only
# after a non-word character).
_TAIL = re.compile(r"(?:\[|(?<![\w\]]))(?P<fragment>(?:[A-Za-z][A-Za-z_]{0,31}(?:\\_?)?\d{0,12})?)(?P<close>\]?)$")


@lru_cache(maxsize=1)
def _placeholder_prefixes() -> tuple[frozenset[str], re.Pattern[str]]:
    from upcoach.security.pii import TYPES

    heads = {f"{kind}_"[:n] for kind in TYPES for n in range(len(kind) + 2)}
    return frozenset(heads), re.compile(rf"(?:{'|'.join(TYPES)})_\d+")


def _may_change(tail: re.Match[str]) -> bool:
    """Whether this end of the text may still become, or stop being, a placeholder once more text follows."""
    text = tail.group("fragment").upper().replace("\\_", "_")
    if text.endswith("\\"):
        text = text[:-1] + "_"
    heads, numbered = _placeholder_prefixes()
    if tail.group("close"):
        # "[PERSON_1]" is complete; a bare "PERSON_1]" keeps its "]" only if a word character follows.
        return not tail.group().startswith("[") and numbered.fullmatch(text) is not None
    return text in heads or numbered.fullmatch(text) is not None


class StreamRehydrator:
    """Rehydrates placeholders in streamed text as ``Redactor.rehydrate`` would on the whole answer: the end of a
    piece that may be an unfinished placeholder is held back for the next, and whether the text before a piece ends
    in a word character (after which no bare placeholder starts) is remembered. Each character is looked at a
    bounded number of times, so the cost is linear in the answer."""

    def __init__(self, redactor: object) -> None:
        self._redactor = redactor
        self._held = ""
        self._glued = False  # the text so far ends in a word character or "]"

    def feed(self, text: str) -> str:
        buffer = self._held + text
        # A word character standing in for the one before the buffer: it blocks a bare placeholder at its start
        # exactly as the real one does, and no placeholder starts with it.
        lead = "x" if self._glued else ""
        tail = _TAIL.search(lead + buffer)
        if tail is not None and tail.start() >= len(lead) and _may_change(tail):
            cut = tail.start() - len(lead)
            buffer, self._held = buffer[:cut], buffer[cut:]
        else:
            self._held = ""
        return self._rehydrate(lead, buffer)

    def flush(self) -> str:
        held, self._held = self._held, ""
        return self._rehydrate("x" if self._glued else "", held)

    def fresh(self) -> StreamRehydrator:
        """A rehydrator of the same redaction for another stream (another choice of the same answer)."""
        return StreamRehydrator(self._redactor)

    def _rehydrate(self, lead: str, text: str) -> str:
        if not text:
            return ""
        self._glued = _GLUE.match(text[-1]) is not None
        return self._redactor.rehydrate(lead + text)[len(lead) :]  # type: ignore[attr-defined,no-any-return]


_GLUE = re.compile(r"[\w\]]")
