"""Rate limits of the API: token buckets, one per key (a source address, a user name, a token).

A bucket holds up to ``burst`` tokens and gains ``rate`` a second; a call takes one, and a call
that finds none is refused for as long as the next token takes to come.  A fresh bucket is a
full one, so forgetting a bucket is harmless.

On SQLite, with its one frontend, the buckets live in the process (``Limiter``).  Memory stays
bounded whatever keys callers make up: a bucket left alone long enough to fill up again is the
same as no bucket and is dropped, and past ``max_keys`` the least recently used buckets go first
even if not yet full.

On PostgreSQL every frontend serves the API, so the buckets live in the database, where all of
them take from the same ones (``SharedLimiter``, table ``rate_buckets``): one statement a take.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Protocol

import structlog
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert

from service.config import ApiSection

from ..db import Database
from ..db.models import RateBucket
from ..errors import TooManyRequests

__all__ = ["Buckets", "Limiter", "RateLimits", "SharedLimiter"]

log = structlog.get_logger("frontend.ratelimit")

#: most keys one limiter remembers: about 100 bytes each
MAX_KEYS = 100_000
#: seconds between deletions of full buckets from the database, per limiter and frontend
PRUNE_EVERY_S = 60.0


class Buckets(Protocol):
    def take(self, key: str) -> float: ...

    def give_back(self, key: str) -> None: ...


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


def _seconds(value: float) -> object:
    return func.make_interval(0, 0, 0, 0, 0, 0, value)


class SharedLimiter:
    """Token buckets in PostgreSQL, shared by every frontend of the database; thread-safe.

    A bucket is the moment it is full again (``full_at``; see ``RateBucket``).  A take moves it
    on by one call's worth of time (``1 / rate``) from now or from where it stands, whichever is
    later, unless that puts it more than ``burst`` calls' worth ahead: one INSERT ... ON
    CONFLICT DO UPDATE ... WHERE, which PostgreSQL runs atomically per row, so frontends taking
    at once never take the same token twice.  Only a refusal reads the bucket again, for how
    long to wait.
    """

    def __init__(self, db: Database, name: str, rate_per_s: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a limiter needs a positive rate and a burst of at least 1")
        if db.is_sqlite:
            raise ValueError("shared rate limits need PostgreSQL; SQLite's one frontend keeps them in memory")
        self.name = name
        self.rate = rate_per_s
        self.burst = burst
        self._clock = clock
        # Each take is one statement: autocommit spares it a BEGIN and a COMMIT round trip.
        self._engine = db.engine.execution_options(isolation_level="AUTOCOMMIT")
        step = _seconds(1 / rate_per_s)
        ahead = func.greatest(RateBucket.full_at, func.now()) + step
        limit = func.now() + _seconds(burst / rate_per_s)
        mine = RateBucket.limiter == name
        self._take = (insert(RateBucket)
                      .on_conflict_do_update(index_elements=[RateBucket.limiter, RateBucket.key],
                                             set_={"full_at": ahead}, where=ahead <= limit)
                      .returning(RateBucket.full_at))
        self._values = {"limiter": name, "full_at": func.now() + step}
        self._wait = select(func.extract("epoch", ahead - limit)).where(mine)
        self._give_back = update(RateBucket).where(mine).values(full_at=RateBucket.full_at - step)
        self._prune = delete(RateBucket).where(mine, RateBucket.full_at < func.now())
        self._lock = threading.Lock()
        self._pruned_at = clock()

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 if there was one, else the seconds until there will be."""
        key = key[:255]  # keys that long share a bucket: harmless, and no caller's key is refused
        with self._engine.connect() as conn:
            taken = conn.execute(self._take.values(key=key, **self._values)).first()
            wait = None if taken is not None else conn.execute(self._wait.where(RateBucket.key == key)).scalar()
        self._prune_now_and_then()
        if taken is not None:
            return 0.0
        # Refused, yet the bucket filled (or went) between the two statements: the next call gets a token.
        return max(float(wait or 0.0), 1e-3)

    def give_back(self, key: str) -> None:
        """Return a token taken for ``key`` (a call that turned out not to count)."""
        with self._engine.connect() as conn:
            conn.execute(self._give_back.where(RateBucket.key == key[:255]))

    def _prune_now_and_then(self) -> None:
        # Full buckets are the same as none; rows an attacker's made-up keys leave behind go here.
        now = self._clock()
        with self._lock:
            if now - self._pruned_at < PRUNE_EVERY_S:
                return
            self._pruned_at = now
        with self._engine.connect() as conn:
            count = conn.execute(self._prune).rowcount
        if count:
            log.debug("rate_buckets_pruned", limiter=self.name, count=count)


def _refuse(wait_s: float, what: str) -> TooManyRequests:
    retry_after = max(1, math.ceil(wait_s))
    return TooManyRequests(f"too many {what}; try again in {retry_after} s", retry_after)


@dataclass(frozen=True)
class RateLimits:
    """The API's limits: logins per source address (every attempt, as each costs a password hash),
    failed logins per user name (password guessing), and calls per token."""

    logins_by_address: Buckets
    failed_logins_by_name: Buckets
    calls_by_token: Buckets

    @classmethod
    def from_config(cls, api: ApiSection, db: Database | None = None) -> "RateLimits":
        """Shared by every frontend of ``db`` if it is PostgreSQL; else in this process."""
        limits = {"logins_by_address": (api.login_rate_per_min / 60, api.login_burst),
                  "failed_logins_by_name": (api.login_failures_per_min / 60, api.login_failures_burst),
                  "calls_by_token": (float(api.token_rate_per_s), api.token_burst)}
        if db is None or db.is_sqlite:
            return cls(**{name: Limiter(rate, burst) for name, (rate, burst) in limits.items()})
        return cls(**{name: SharedLimiter(db, name, rate, burst) for name, (rate, burst) in limits.items()})

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
