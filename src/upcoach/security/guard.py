"""The security checks every chat request passes before routing, in one place, failing closed.

- prompt injection (OWASP LLM01): ``block`` refuses the request, ``flag`` records it;
- special-category data (GDPR art. 9) and signs of self-harm: the request stays local;
- PII: a private request may reach the cloud only through a per-conversation ``Redactor``.
If any detector raises, the inspection says so and the request is treated as sensitive (local only).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from upcoach.llm.base import ChatMessage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inspection:
    injection_verdict: str = "allow"
    injection_score: float = 0.0
    injection_signals: tuple[str, ...] = ()
    special_categories: tuple[str, ...] = ()
    self_harm: bool = False
    failure: str | None = None  # a detector raised: fail closed
    flags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def keep_local(self) -> str | None:
        """Why this request must not leave our side, or None."""
        if self.failure:
            return f"security check failed ({self.failure}): kept local"
        if self.self_harm:
            return "signs of self-harm: kept local, crisis resources added"
        if self.special_categories:
            return f"special-category data ({', '.join(self.special_categories)}): kept local"
        return None


class Guard:
    def __init__(self, injection: object | None = None, allow_special_categories: bool = False) -> None:
        if injection is None:
            from upcoach.security.injection import InjectionDetector

            injection = InjectionDetector()
        self.injection = injection
        self.allow_special_categories = allow_special_categories

    def inspect(self, messages: Sequence[ChatMessage]) -> Inspection:
        from upcoach.privacy.special_category import detect_special_categories

        user_texts = [m.content for m in messages if m.role not in ("system", "developer", "assistant")]
        try:
            verdict, score, signals = "allow", 0.0, []
            for text in user_texts:
                result = self.injection.scan(text)  # type: ignore[attr-defined]
                signals.extend(result.signals)
                if result.score > score:
                    score = result.score
                if _SEVERITY[result.verdict] > _SEVERITY[verdict]:
                    verdict = result.verdict
            categories: list[str] = []
            self_harm = False
            matches: list[str] = []
            for text in user_texts:
                special = detect_special_categories(text)
                categories.extend(c for c in special.categories if c not in categories)
                self_harm = self_harm or special.self_harm
                matches.extend(special.matches)
        except Exception as exc:  # fail closed: an unscanned request never goes to the cloud
            log.exception("security inspection failed")
            return Inspection(failure=type(exc).__name__)
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

    @staticmethod
    def redactor() -> object:
        from upcoach.security.pii import Redactor

        return Redactor()


_SEVERITY = {"allow": 0, "flag": 1, "block": 2}
_PLACEHOLDER_START = re.compile(r"\[[A-Z_]*\d*$")


class StreamRehydrator:
    """Rehydrates placeholders in streamed text, holding back a possibly unfinished ``[TYPE_N`` at the end."""

    def __init__(self, redactor: object) -> None:
        self._redactor = redactor
        self._held = ""

    def feed(self, text: str) -> str:
        buffer = self._held + text
        partial = _PLACEHOLDER_START.search(buffer[-24:])
        if partial is not None:
            cut = len(buffer) - (len(buffer[-24:]) - partial.start())
            buffer, self._held = buffer[:cut], buffer[cut:]
        else:
            self._held = ""
        return self._redactor.rehydrate(buffer) if buffer else ""  # type: ignore[attr-defined]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return self._redactor.rehydrate(held) if held else ""  # type: ignore[attr-defined]
