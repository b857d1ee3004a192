"""The shipped prompt-injection classifier: TF-IDF character n-grams and a logistic regression, numpy only.

``scripts/train_injection.py`` fits the model with scikit-learn, using ``features`` below as its analyzer, and
exports vocabulary, idf, coefficients and a calibration into ``data/injection_model.json``. Inference reproduces
``TfidfVectorizer(sublinear_tf=True)`` (tf → 1 + ln tf, times idf, L2-normalised) and ``decision_function``;
the calibration then maps the logit so that 0.5 is the flag point and 0.9 the block point tuned on validation.

At runtime the n-grams are not built as strings (≈6 000 slices and dict lookups cost ~2 ms on a long message):
each n-gram is a 64-bit polynomial hash of its code points (``textnorm.ngram_hashes``), computed for the whole
message at once with numpy and looked up by binary search among the hashes of the vocabulary.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from upcoach.security.textnorm import codepoints, ngram_hashes, string_hashes

ARTIFACT = "injection_model.json"
FORMAT_VERSION = 2

# Injections sit at the start or the end of a message (padding attacks put theirs after pages of filler), so
# a very long message is read at its head and tail only; 2 000 characters cover 98 % of Tensor Trust attacks.
CHAR_HEAD = 1500
CHAR_TAIL = 500
NGRAM_MIN = 3
NGRAM_MAX = 5


def _window(cleaned: str) -> str:
    if len(cleaned) > CHAR_HEAD + CHAR_TAIL:
        cleaned = cleaned[:CHAR_HEAD] + " " + cleaned[-CHAR_TAIL:]
    return " " + cleaned + " "


def features(cleaned: str) -> list[str]:
    """Character 3-5-grams of a ``clean``-form message (head and tail): the training analyzer."""
    text = _window(cleaned)
    return [text[i : i + n] for n in range(NGRAM_MIN, NGRAM_MAX + 1) for i in range(len(text) - n + 1)]


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class InjectionModel:
    """Scores a ``clean``-form message in [0, 1]; ≥ 0.5 is suspicious, ≥ 0.9 is a confident injection."""

    def __init__(self, payload: dict[str, Any]) -> None:
        if payload.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported injection model format {payload.get('format')!r}")
        vocabulary: list[str] = payload["vocabulary"]
        idf = np.asarray(payload["idf"], dtype=np.float64)
        coef = np.asarray(payload["coef"], dtype=np.float64)
        if not (len(vocabulary) == len(idf) == len(coef)):
            raise ValueError("injection model arrays disagree in length")
        hashes = string_hashes(vocabulary)
        order = np.argsort(hashes, kind="stable")
        self._hashes = hashes[order]
        if len(self._hashes) > 1 and bool(np.any(self._hashes[1:] == self._hashes[:-1])):
            raise ValueError("n-gram hash collision in the vocabulary")
        self._idf = idf[order]
        self._coef = coef[order]
        self._intercept = float(payload["intercept"])
        calibration = payload["calibration"]
        self._scale = float(calibration["scale"])
        self._shift = float(calibration["shift"])

    @classmethod
    def load(cls, path: Path | None = None) -> InjectionModel:
        if path is None:
            raw = resources.files("upcoach.security").joinpath("data", ARTIFACT).read_text(encoding="utf-8")
        else:
            raw = path.read_text(encoding="utf-8")
        return cls(json.loads(raw))

    def decision(self, cleaned: str) -> float:
        """The raw logit, equal to scikit-learn's ``decision_function`` on the same text."""
        grams = ngram_hashes(codepoints(_window(cleaned)), range(NGRAM_MIN, NGRAM_MAX + 1))
        if not len(self._hashes) or not len(grams):
            return self._intercept
        # Deduplicating first sorts the needles, which also makes the binary searches cache-friendly.
        grams, counts = np.unique(grams, return_counts=True)
        pos = np.searchsorted(self._hashes, grams)
        pos[pos == len(self._hashes)] = 0
        known = self._hashes[pos] == grams
        if not known.any():
            return self._intercept
        unique, counts = pos[known], counts[known]
        weights = (1.0 + np.log(counts)) * self._idf[unique]
        norm = math.sqrt(float(weights @ weights))
        return float(weights @ self._coef[unique]) / norm + self._intercept

    def calibrate(self, decision: float) -> float:
        return _sigmoid(self._scale * (decision - self._shift))

    def score(self, cleaned: str) -> float:
        return self.calibrate(self.decision(cleaned))
