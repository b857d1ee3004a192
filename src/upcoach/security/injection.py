"""Prompt-injection detection (OWASP LLM01) for every chat message, before routing.

Three layers, cheapest first:
1. normalisation (``textnorm``): NFKC, invisibles, homoglyphs, leetspeak; base64 and rot13 payloads decoded;
2. named multilingual rules (``injection_rules``) for the known attack families;
3. a small TF-IDF + logistic-regression classifier (``injection_model``) for everything phrased differently.

Evidence is combined as a noisy-OR: every rule weight and the calibrated classifier score is an independent
chance that the message is an injection. A strong rule alone blocks; a medium rule or a classifier score at its
tuned flag point flags; weak rules only count together with other evidence.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from upcoach.security.injection_model import InjectionModel
from upcoach.security.injection_rules import MEDIUM, match_rules
from upcoach.security.textnorm import clean, decoded_payloads, fold_leet, normalize

__all__ = ["BLOCK_THRESHOLD", "FLAG_THRESHOLD", "InjectionDetector", "InjectionResult", "normalize"]

Verdict = Literal["allow", "flag", "block"]

# The classifier is calibrated so that these are its validation-tuned flag and block points (see the model).
BLOCK_THRESHOLD = 0.9
FLAG_THRESHOLD = 0.5
# Longer messages are scanned at head and tail only, and flagged: a coaching message is never this long,
# and hiding a payload in the unscanned middle must not be a way through.
MAX_SCAN_CHARS = 32_000
_SCAN_TAIL = 8_000


@dataclass(frozen=True)
class InjectionResult:
    verdict: Verdict
    score: float  # 0..1
    signals: tuple[str, ...]  # "rule:<name>", "encoded:base64", "encoded:rot13", "classifier", "oversize"


@functools.cache
def _shipped_model() -> InjectionModel:
    return InjectionModel.load()


def _noisy_or(weights: list[float]) -> float:
    miss = 1.0
    for weight in weights:
        miss *= 1.0 - weight
    return 1.0 - miss


class InjectionDetector:
    """Scores one user message at a time; thread-safe (no state changes after construction)."""

    def __init__(
        self,
        block_threshold: float = BLOCK_THRESHOLD,
        flag_threshold: float = FLAG_THRESHOLD,
        *,
        model: InjectionModel | None = None,
    ) -> None:
        if not 0.0 < flag_threshold <= block_threshold <= 1.0:
            raise ValueError("need 0 < flag_threshold <= block_threshold <= 1")
        self.block_threshold = block_threshold
        self.flag_threshold = flag_threshold
        self._model = model if model is not None else _shipped_model()

    def scan(self, text: str) -> InjectionResult:
        evidence: dict[str, float] = {}
        if len(text) > MAX_SCAN_CHARS:
            text = text[: MAX_SCAN_CHARS - _SCAN_TAIL] + "\n" + text[-_SCAN_TAIL:]
            evidence["oversize"] = MEDIUM
        cleaned = clean(text)
        rules = match_rules(fold_leet(cleaned))
        classifier = self._model.score(cleaned)
        for kind, decoded in decoded_payloads(text, cleaned):
            decoded_clean = clean(decoded)
            hidden_rules = match_rules(fold_leet(decoded_clean))
            hidden_score = self._model.score(decoded_clean)
            if not hidden_rules and hidden_score < self.flag_threshold:
                continue
            # Encoding an instruction is itself a sign of intent, on top of what the payload says.
            evidence[f"encoded:{kind}"] = MEDIUM
            for name, weight in hidden_rules.items():
                rules[name] = max(weight, rules.get(name, 0.0))
            classifier = max(classifier, hidden_score)
        for name, weight in rules.items():
            evidence[f"rule:{name}"] = weight
        if classifier >= self.flag_threshold:
            evidence["classifier"] = classifier
        rule_weights = [w for key, w in evidence.items() if key != "classifier"]
        score = 1.0 - (1.0 - _noisy_or(rule_weights)) * (1.0 - classifier)
        verdict: Verdict = "allow"
        if score >= self.block_threshold:
            verdict = "block"
        elif score >= self.flag_threshold:
            verdict = "flag"
        signals = tuple(sorted(k for k in evidence if k.startswith("rule:"))) + tuple(
            k for k in ("oversize", "encoded:base64", "encoded:rot13", "classifier") if k in evidence
        )
        return InjectionResult(verdict=verdict, score=min(1.0, max(0.0, score)), signals=signals)
