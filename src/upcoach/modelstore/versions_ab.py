"""Model-version A/B: a share of local traffic goes to a candidate version, sticky per user, and each version's
latency and user ratings are kept side by side until an admin promotes the candidate or stops the test.

Assignment hashes ``salt:user`` (SHA-256) to a number in [0, 1): the same user always lands in the same arm for
the life of one experiment, a new experiment (new salt) reshuffles, and the share holds without any state per user.
Requests without a user are assigned by request id (not sticky, but they keep the share).

Ratings count only for a request this experiment answered, by the user it answered (the API also checks that the
user's request record says it was served, outcome ok), and once per request: a second rating of the same request
replaces the first. Rating a version by name is not possible, so the comparison cannot be stuffed.

The figures live in memory: an experiment is a short, supervised run on one server, and its result is acted on
(promote or stop) while it runs; the decision itself goes into the audit trail.
"""

from __future__ import annotations

import hashlib
import secrets
import statistics
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from upcoach.errors import InvalidRequest, NotFound
from upcoach.llm.base import ChatRequest, Completion
from upcoach.modelstore.swap import Arm

# Latency percentiles are computed over each version's most recent completions.
LATENCY_WINDOW = 2000
# Requests remembered for ratings (oldest forgotten first; a forgotten request's rating is final).
REQUEST_MEMORY = 50_000
MIN_RATING, MAX_RATING = 1, 5


def bucket(salt: str, key: str) -> float:
    """A stable number in [0, 1) for ``key`` within one experiment."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class VersionStats:
    requests: int = 0
    completion_tokens: int = 0
    first_token_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    total_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    # Ratings of requests still remembered (request id -> rating, replaceable), and of forgotten ones (final).
    open_ratings: dict[str, int] = field(default_factory=dict)
    final_ratings: list[int] = field(default_factory=lambda: [0] * (MAX_RATING - MIN_RATING + 1))

    @property
    def ratings(self) -> list[int]:
        """How many ratings of each value, 1 to 5: one per rated request."""
        counts = list(self.final_ratings)
        for rating in self.open_ratings.values():
            counts[rating - MIN_RATING] += 1
        return counts

    def close(self, request_id: str) -> None:
        """The request is forgotten: its rating (if any) can no longer change."""
        rating = self.open_ratings.pop(request_id, None)
        if rating is not None:
            self.final_ratings[rating - MIN_RATING] += 1

    def to_json(self) -> dict[str, object]:
        ratings = self.ratings
        count = sum(ratings)
        mean = sum((MIN_RATING + i) * n for i, n in enumerate(ratings)) / count if count else None
        return {
            "requests": self.requests,
            "completionTokens": self.completion_tokens,
            "firstTokenMs": _summary(self.first_token_ms),
            "totalMs": _summary(self.total_ms),
            "ratings": {
                "count": count,
                "mean": round(mean, 3) if mean is not None else None,
                "histogram": {str(MIN_RATING + i): n for i, n in enumerate(ratings)},
            },
        }


def _summary(values: deque[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "p95": None}
    ordered = sorted(values)
    return {
        "mean": round(statistics.fmean(ordered), 2),
        "p50": round(ordered[len(ordered) // 2], 2),
        "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 2),
    }


class VersionExperiment:
    """One running A/B test between the active version and a candidate; implements swap.Experiment."""

    def __init__(self, active_id: str, candidate_id: str, share: float, *, salt: str | None = None) -> None:
        if not 0.0 <= share <= 1.0:
            raise InvalidRequest("share must be between 0 and 1", param="share")
        self.active_id = active_id
        self.candidate_id = candidate_id
        self.share = share
        self.salt = salt or secrets.token_hex(8)
        self.started_at = datetime.now(UTC)
        self.stats = {active_id: VersionStats(), candidate_id: VersionStats()}
        # request id -> (version that answered, user it answered)
        self._requests: OrderedDict[str, tuple[str, str | None]] = OrderedDict()

    def arm_for(self, key: str) -> Arm:
        return "candidate" if bucket(self.salt, key) < self.share else "active"

    def arm(self, request: ChatRequest) -> Arm:
        return self.arm_for(request.user_id or request.request_id)

    def observe(self, version_id: str, request: ChatRequest, completion: Completion) -> None:
        stats = self.stats.get(version_id)
        if stats is None:
            return
        stats.requests += 1
        stats.completion_tokens += completion.usage.completion_tokens
        if completion.first_token_ms is not None:
            stats.first_token_ms.append(completion.first_token_ms)
        stats.total_ms.append(completion.total_ms)
        if request.request_id:
            self._requests[request.request_id] = (version_id, request.user_id)
            if len(self._requests) > REQUEST_MEMORY:
                forgotten, (version, _) = self._requests.popitem(last=False)
                self.stats[version].close(forgotten)

    def rate(self, rating: int, *, request_id: str, user_id: str) -> str:
        """Rate the answer to ``request_id``, which this experiment gave to ``user_id``; a second rating of the
        same request replaces the first. Returns the version that answered."""
        if not MIN_RATING <= rating <= MAX_RATING:
            raise InvalidRequest(f"rating must be between {MIN_RATING} and {MAX_RATING}", param="rating")
        served = self._requests.get(request_id)
        # Someone else's request answers exactly like one this experiment never saw.
        if served is None or served[1] != user_id:
            raise NotFound(f"request {request_id!r} was not answered for you in this experiment", param="requestId")
        version = served[0]
        self.stats[version].open_ratings[request_id] = rating
        return version

    def to_json(self) -> dict[str, object]:
        return {
            "activeId": self.active_id,
            "candidateId": self.candidate_id,
            "share": self.share,
            "startedAt": self.started_at.isoformat(),
            "versions": {version: stats.to_json() for version, stats in self.stats.items()},
        }
