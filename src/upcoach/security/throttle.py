"""A brake on repeated failures per client address: refused credentials (the Authenticator) and failed dashboard
sign-ins. In memory, per process, bounded: the oldest addresses are forgotten first."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

MAX_THROTTLED_CLIENTS = 10_000


class FailureThrottle:
    """At most ``attempts`` failures per client address within ``window_seconds``; then the address waits."""

    def __init__(self, *, attempts: int, window_seconds: float, clock: Callable[[], float] = time.time) -> None:
        if attempts < 1 or window_seconds <= 0:
            raise ValueError("attempts must be >= 1 and the window positive")
        self.attempts = attempts
        self.window_seconds = window_seconds
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str) -> float | None:
        """Seconds until this address may try again, or None if it may try now."""
        failures = self._recent(client)
        if len(failures) < self.attempts:
            return None
        return max(1.0, failures[0] + self.window_seconds - self.clock())

    def failed(self, client: str) -> None:
        failures = self._recent(client)
        failures.append(self.clock())
        self._failures[client] = failures
        self._failures.move_to_end(client)
        while len(self._failures) > MAX_THROTTLED_CLIENTS:
            self._failures.popitem(last=False)

    def _recent(self, client: str) -> deque[float]:
        failures = self._failures.get(client, deque(maxlen=self.attempts))
        horizon = self.clock() - self.window_seconds
        while failures and failures[0] <= horizon:
            failures.popleft()
        return failures
