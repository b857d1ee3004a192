"""Offline answers from the cached strategies bundle, which is only ever used after its Ed25519 signature checked
out against the pinned bundle key (``GET /api/coach/strategies/signing-key``).

The bundle is a full copy or a delta (``full: false``, ``since``, ``changes``: added, updated, removed) from the
version the phone holds. A bundle with a bad signature, or a delta from a version the phone does not hold, is
refused and the cached copy stays as it was.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from upcoach_client.device.store import LocalStore
from upcoach_client.errors import VerificationFailed

KEY = "strategies_bundle"
_WORD = re.compile(r"[a-z]{3,}")


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def verify_bundle(bundle: dict[str, Any], public_key: bytes) -> None:
    signature = bundle.get("signature")
    unsigned = {key: value for key, value in bundle.items() if key != "signature"}
    try:
        if not isinstance(signature, str):
            raise ValueError("no signature")
        Ed25519PublicKey.from_public_bytes(public_key).verify(base64.b64decode(signature), canonical_json(unsigned))
    except (InvalidSignature, ValueError) as exc:
        raise VerificationFailed(f"strategies bundle {bundle.get('version')!r}: bad signature, refused") from exc


class StrategiesCache:
    """The verified strategies, kept encrypted in the phone's store."""

    def __init__(self, store: LocalStore, public_key: bytes) -> None:
        self._store = store
        self._public_key = public_key

    @property
    def version(self) -> str | None:
        held = self._store.get(KEY)
        return held["version"] if held else None

    @property
    def strategies(self) -> list[dict[str, Any]]:
        held = self._store.get(KEY)
        return list(held["strategies"].values()) if held else []

    def apply(self, bundle: dict[str, Any]) -> str:
        """Verify and take a full bundle or a delta; returns the version now held."""
        verify_bundle(bundle, self._public_key)
        if bundle.get("full", True):
            strategies = {s["id"]: s for s in bundle["strategies"]}
        else:
            held = self._store.get(KEY)
            if held is None or held["version"] != bundle.get("since"):
                raise VerificationFailed(f"bundle delta from {bundle.get('since')!r}, but this phone holds another")
            strategies = dict(held["strategies"])
            changes = bundle["changes"]
            for strategy in [*changes["added"], *changes["updated"]]:
                strategies[strategy["id"]] = strategy
            for removed in changes["removed"]:
                strategies.pop(removed, None)
        self._store.put(KEY, {"version": bundle["version"], "strategies": strategies})
        return str(bundle["version"])

    def answer(self, text: str) -> str | None:
        """The strategy that shares the most words with ``text``, as a short answer; None without a bundle."""
        words = set(_WORD.findall(text.lower()))
        best, best_score = None, -1
        for strategy in self.strategies:
            haystack = " ".join([strategy.get("title", ""), strategy.get("summary", ""), *strategy.get("tags", []),
                                 *strategy.get("steps", [])]).lower()  # fmt: skip
            score = len(words & set(_WORD.findall(haystack)))
            if score > best_score:
                best, best_score = strategy, score
        if best is None:
            return None
        steps = " ".join(f"{n}. {step}" for n, step in enumerate(best.get("steps", [])[:3], 1))
        return f"{best['title']}: {best['summary']} {steps}".strip()
