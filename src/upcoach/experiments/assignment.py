"""Deterministic sticky assignment: a user's variant is a pure function of (experiment key, user id, variants).

``u = first 8 bytes of SHA-256(key NUL user_id) / 2**64`` is uniform on [0, 1) and independent between experiments
(a different key is a different hash), so adding, changing or stopping one experiment never moves anyone in
another. Nothing is stored to make it sticky and it does not depend on Python's per-process ``hash()`` seed:
every server, every restart, gives the same answer. Changing an experiment's weights would move users, which is
why variants cannot be edited after creation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Variant:
    name: str
    weight: float
    config: dict[str, object] = field(default_factory=dict)


def bucket(experiment_key: str, user_id: str) -> float:
    digest = hashlib.sha256(experiment_key.encode() + b"\x00" + user_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(experiment_key: str, user_id: str, variants: Sequence[Variant]) -> Variant:
    """The variant whose slice of [0, 1), proportional to its weight, holds the user's bucket."""
    if not variants:
        raise ValueError("an experiment needs at least one variant")
    total = sum(variant.weight for variant in variants)
    point = bucket(experiment_key, user_id) * total
    upper = 0.0
    for variant in variants:
        upper += variant.weight
        if point < upper:
            return variant
    return variants[-1]  # only reachable through float rounding at the very top of the range
