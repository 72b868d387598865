"""Rate limits of the API: token buckets in memory, one per key (a source address, a user name, a token).

A bucket holds up to ``burst`` tokens and gains ``rate`` a second; a call takes one, and a call
that finds none is refused for as long as the next token takes to come.  The buckets live in
this process only: a restart forgets them, which is harmless, as a fresh bucket is a full one.

Memory stays bounded whatever keys callers make up: a bucket left alone long enough to fill up
again is the same as no bucket and is dropped, and past ``max_keys`` the least recently used
buckets go first even if not yet full.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from service.config import ApiSection

from ..errors import TooManyRequests

__all__ = ["Limiter", "RateLimits"]

#: most keys one limiter remembers: about 100 bytes each
MAX_KEYS = 100_000


class Limiter:
    """Token buckets keyed by a string; thread-safe."""

    def __init__(self, rate_per_s: float, burst: int, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a limiter needs a positive rate and a burst of at least 1")
        self.rate = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        #: seconds after which an untouched bucket is full again, i.e. forgettable
        self._refill_s = burst / rate_per_s
        #: key -> (tokens, when they were counted); least recently touched first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 if there was one, else the seconds until there will be."""
        with self._lock:
            now = self._clock()
            tokens = self._tokens(key, now)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1 - tokens) / self.rate
            self._buckets.move_to_end(key)
            self._forget_idle(now)
            return wait

    def give_back(self, key: str) -> None:
        """Return a token taken for ``key`` (a call that turned out not to count)."""
        with self._lock:
            now = self._clock()
            if key in self._buckets:
                self._buckets[key] = (min(self.burst, self._tokens(key, now) + 1), now)
                self._buckets.move_to_end(key)

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        held = self._buckets.get(key)
        if held is None:
            return float(self.burst)
        tokens, stamp = held
        return min(float(self.burst), tokens + (now - stamp) * self.rate)

    def _forget_idle(self, now: float) -> None:
        # Oldest first, so this stops at the first bucket still in use: amortised O(1) a call.
        while self._buckets:
            key, (_tokens, stamp) = next(iter(self._buckets.items()))
            if now - stamp < self._refill_s and len(self._buckets) <= self.max_keys:
                return
            del self._buckets[key]


def _refuse(wait_s: float, what: str) -> TooManyRequests:
    retry_after = max(1, math.ceil(wait_s))
    return TooManyRequests(f"too many {what}; try again in {retry_after} s", retry_after)


@dataclass(frozen=True)
class RateLimits:
    """The API's limits: logins per source address (every attempt, as each costs a password hash),
    failed logins per user name (password guessing), and calls per token."""

    logins_by_address: Limiter
    failed_logins_by_name: Limiter
    calls_by_token: Limiter

    @classmethod
    def from_config(cls, api: ApiSection) -> "RateLimits":
        return cls(Limiter(api.login_rate_per_min / 60, api.login_burst),
                   Limiter(api.login_failures_per_min / 60, api.login_failures_burst),
                   Limiter(api.token_rate_per_s, api.token_burst))

    def admit_login(self, address: str, user_name: str) -> None:
        """Count a login attempt; TooManyRequests if its address or its user name is over the limit.

        The user name's token is taken now and given back by :meth:`login_succeeded`, so that
        concurrent guesses cannot all pass before the first failure is counted.
        """
        wait = self.logins_by_address.take(address)
        if wait:
            raise _refuse(wait, "logins from this address")
        wait = self.failed_logins_by_name.take(user_name)
        if wait:
            raise _refuse(wait, "failed logins as this user")

    def login_succeeded(self, user_name: str) -> None:
        self.failed_logins_by_name.give_back(user_name)

    def admit_call(self, token_id: str) -> None:
        wait = self.calls_by_token.take(token_id)
        if wait:
            raise _refuse(wait, "calls with this token")
