"""The learned router's serving side: a numpy scorer of "will the small local model answer this well enough".

A router version is a JSON artifact (``learned_train.py`` fits it with scikit-learn, ``learned_store.py`` signs and
stores it). Serving reproduces ``LogisticRegression.decision_function`` over two blocks of features:

- the dense vector (``dense``): the complexity features of routing/features.py, language, lengths, conversation
  depth, device tier and time-of-day bucket. This vector, and nothing of the text, is what request records keep
  (``RoutingLog.vector``), so outcomes logged later can train the next version;
- hashed word 1-2-grams of the latest ask (CRC-32 into ``buckets`` slots, binary, L2-normalised): the text signal,
  computed here and never stored. Their contribution is logged as one number, ``text_logit``.

The score is ``p_local``, the predicted chance that the local answer is good enough; the free step of the policy
sends the request to the cloud when ``p_local < threshold``. The threshold is the knob: ``learned_train`` sets it
from a target local share or a quality floor. The router never sees a request the privacy, settings, residency or
availability steps decided: it replaces only the complexity score (routing/policy.py, step 4).
"""

from __future__ import annotations

import datetime as dt
import math
import random
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.special import expit

from upcoach.llm.base import ChatMessage
from upcoach.routing.features import RequestFeatures, tables
from upcoach.routing.policy import ON_DEVICE_CAPABILITIES, Device, FreeStep, PolicyConfig, RoutingLog
from upcoach.security.textnorm import clean, fold_accents

FORMAT = 1
LANGUAGES = ("en", "de", "fr", "es", "it", "pt")
HOUR_BUCKETS = 4  # night, morning, afternoon, evening
_WORD = re.compile(r"\w+", re.UNICODE)


def dense_names() -> tuple[str, ...]:
    """The names of the dense vector's entries, in order (stored with every artifact: a version whose names differ
    from the running code's is refused rather than misread)."""
    signals = tuple(f"signal:{name}" for name, _, _ in tables().signals)
    return (
        "bias",
        "complexity",
        "words",
        "log_words",
        "asks",
        "user_turns",
        "log_prompt_tokens",
        "code",
        *(f"lang:{lang}" for lang in LANGUAGES),
        "lang:other",
        *signals,
        "device_on",
        *(f"hour:{i}" for i in range(HOUR_BUCKETS)),
    )


def dense(features: RequestFeatures, *, device_tier: int = 0, hour: int = 12) -> np.ndarray:
    """The dense feature vector of one request (no text): what is logged and what the router scores."""
    signal_names = [name for name, _, _ in tables().signals]
    lang = features.language if features.language in LANGUAGES else "other"
    bucket = (hour % 24) // (24 // HOUR_BUCKETS)
    values = [
        1.0,
        features.complexity,
        min(1.0, features.last_user_words / 250),
        math.log1p(features.last_user_words) / 6,
        min(1.0, (features.asks - 1) / 4),
        min(1.0, max(0, features.user_turns - 1) / 8),
        math.log1p(features.est_prompt_tokens) / 8,
        1.0 if features.has_code else 0.0,
        *(1.0 if lang == code else 0.0 for code in (*LANGUAGES, "other")),
        *(1.0 if name in features.signals else 0.0 for name in signal_names),
        1.0 if device_tier > 0 else 0.0,
        *(1.0 if i == bucket else 0.0 for i in range(HOUR_BUCKETS)),
    ]
    return np.asarray(values, dtype=np.float64)


def tokens(text: str) -> list[str]:
    """Word 1- and 2-grams of the normal form the complexity tables read (accents folded, look-alikes cleaned)."""
    words = _WORD.findall(fold_accents(clean(text)))
    return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]


def hashed(text: str, buckets: int) -> tuple[np.ndarray, float]:
    """The distinct hashed n-gram slots of ``text`` and the L2 weight of each (binary features, normalised)."""
    slots = np.unique(np.fromiter((zlib.crc32(t.encode()) % buckets for t in tokens(text)), dtype=np.int64))
    weight = 1.0 / math.sqrt(len(slots)) if len(slots) else 0.0
    return slots, weight


@dataclass(frozen=True)
class Score:
    p_local: float  # predicted chance that the local answer is good enough
    text_logit: float  # the text block's share of the logit (logged; the text itself never is)


class LearnedRouter:
    """One router version, loaded from its artifact; ``score`` costs a few tens of microseconds."""

    def __init__(self, payload: dict[str, Any]) -> None:
        if payload.get("format") != FORMAT:
            raise ValueError(f"unsupported router format {payload.get('format')!r}")
        if tuple(payload["dense_names"]) != dense_names():
            raise ValueError("router version was trained on other features than this code computes")
        self.version: str = payload["version"]
        self.buckets = int(payload["buckets"])
        self.dense_coef = np.asarray(payload["dense_coef"], dtype=np.float64)
        self.text_coef = np.asarray(payload["text_coef"], dtype=np.float64)
        self.text_scale = float(payload.get("text_scale", 1.0))
        # The weight of a logged text logit (computed by the version this one was trained on top of).
        self.logged_text_scale = float(payload.get("logged_text_scale", 1.0))
        self.intercept = float(payload["intercept"])
        self.threshold = float(payload["threshold"])
        self.meta: dict[str, Any] = dict(payload.get("meta", {}))
        if len(self.dense_coef) != len(dense_names()) or len(self.text_coef) not in (0, self.buckets):
            raise ValueError("router arrays disagree in length")

    def text_logit(self, text: str) -> float:
        if not len(self.text_coef):
            return 0.0
        slots, weight = hashed(text, self.buckets)
        return float(self.text_coef[slots].sum()) * weight * self.text_scale

    def score(self, vector: np.ndarray, text: str) -> Score:
        text_logit = self.text_logit(text)
        z = float(vector @ self.dense_coef) + text_logit + self.intercept
        return Score(float(expit(z)), text_logit)

    def score_logged(self, vector: np.ndarray, text_logit: float) -> float:
        """``p_local`` of a logged request (its vector and text logit, no text): what off-policy evaluation uses."""
        return float(expit(float(vector @ self.dense_coef) + self.logged_text_scale * text_logit + self.intercept))


@dataclass(frozen=True)
class Prepared:
    """The free step's inputs for one request and what its record keeps of them (no text)."""

    free: FreeStep
    vector: np.ndarray
    text_logit: float


def prepare(
    router: LearnedRouter | None,
    features: RequestFeatures,
    text: str,
    *,
    explore: float,
    draw: float,
    explorable: bool,
    device_tier: int = 0,
    hour: int = 12,
) -> Prepared:
    """The engine's and the simulator's one way to build the policy's ``FreeStep``."""
    vector = dense(features, device_tier=device_tier, hour=hour)
    if router is None:
        return Prepared(FreeStep(explore=explore, draw=draw, explorable=explorable), vector, 0.0)
    scored = router.score(vector, text)
    free = FreeStep(scored.p_local, router.threshold, router.version, explore, draw, explorable)
    return Prepared(free, vector, scored.text_logit)


def for_request(
    config: PolicyConfig,
    features: RequestFeatures,
    messages: Sequence[ChatMessage],
    device: Device | None,
    explorable: bool,
    user_id: str | None = None,
) -> Prepared:
    """The engine's free-step inputs: the router's score of the latest ask (the user's A/B arm while an A/B runs,
    else the active version) and a fresh exploration draw."""
    text = _latest_user(messages)
    tier = 1 if device is not None and device.capabilities & ON_DEVICE_CAPABILITIES else 0
    router = config.ab.pick(user_id) if config.ab is not None else config.router
    return prepare(router, features, text, explore=config.explore, draw=random.random(),
                   explorable=explorable, device_tier=tier, hour=dt.datetime.now(dt.UTC).hour)  # fmt: skip


def with_inputs(log: RoutingLog, prepared: Prepared, messages: Sequence[ChatMessage], keep_vector: bool) -> RoutingLog:
    """The decision's log with what its record keeps: the rephrase flag, and the vector only when ``keep_vector``."""
    asks = [m.content for m in messages if m.role == "user"]
    rephrase = len(asks) >= 2 and rephrases(asks[-2], asks[-1])
    if not keep_vector:
        return replace(log, rephrase=rephrase)
    vector = tuple(float(v) for v in prepared.vector)
    return replace(log, vector=vector, text_logit=prepared.text_logit, rephrase=rephrase)


def record_fields(log: RoutingLog | None) -> dict[str, Any] | None:
    """What a request record keeps of its routing (request_records.routing): numbers and flags, never text."""
    if log is None:
        return None
    fields: dict[str, Any] = {
        "side": log.side,
        "forced": log.forced,
        "propensity": round(log.propensity, 6),
        "explored": log.explored,
        "router": log.router,
        "score": None if log.score is None else round(log.score, 6),
        "rephrase": log.rephrase,
    }
    if log.vector:
        fields["vector"] = [round(v, 6) for v in log.vector]
        fields["text_logit"] = round(log.text_logit, 6)
    return fields


def _latest_user(messages: Sequence[ChatMessage]) -> str:
    asks = [m.content for m in messages if m.role == "user"]
    return asks[-1] if asks else (messages[-1].content if messages else "")


def rephrases(previous: str, latest: str) -> bool:
    """Whether the latest ask restates the previous one (the answer did not help): word-set overlap, computed
    locally on the conversation the request carries; only the flag is kept."""
    a, b = set(_WORD.findall(fold_accents(clean(previous)))), set(_WORD.findall(fold_accents(clean(latest))))
    if len(a) < 3 or len(b) < 3:
        return False
    return len(a & b) / len(a | b) >= 0.5
