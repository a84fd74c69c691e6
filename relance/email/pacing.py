"""Keep sends under a provider's maximum send rate (SES: N emails per second)."""

from __future__ import annotations

import time
from collections.abc import Callable


class Pacer:
    """Spaces calls 1/rate seconds apart, the first one too: n calls never take less than n/rate seconds,
    so the achieved rate stays at or just under the configured one, never above it."""

    def __init__(self, per_second: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if per_second <= 0:
            raise ValueError(f"a send rate must be positive (got {per_second})")
        self.interval, self.clock, self.sleep = 1.0 / per_second, clock, sleep
        self.next_at: float | None = None

    def wait(self) -> None:
        """Return when the next call may go."""
        now = self.clock()
        if self.next_at is None or self.next_at < now - self.interval:
            self.next_at = now + self.interval  # idle for a while: start a new run, without a burst
        if self.next_at > now:
            self.sleep(self.next_at - now)
        self.next_at += self.interval
