"""Rate limits: fixed windows counted in Redis (logins, OTPs: shared by every process; Redis
holds counters, never records), and in-process token buckets for the hot paths that must not
depend on Redis at all (POS calls per terminal)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from coalition.platform.errors import RateLimited

log = structlog.get_logger("coalition.ratelimit")


async def hit(redis: Redis, key: str, *, limit: int, window_seconds: int) -> None:
    """Count one attempt against `key`; raise `RateLimited` past `limit` in the window.

    If Redis cannot be reached the attempt is allowed (and logged): a limiter outage must not
    take logins or redemptions down with it.
    """
    redis_key = f"rl:{key}"
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.set(redis_key, 0, ex=window_seconds, nx=True)  # opens the window once
            pipe.incr(redis_key)
            pipe.ttl(redis_key)
            _, count, ttl = await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("rate_limit_unavailable", key=key, error=str(exc))
        return
    if int(count) > limit:
        raise RateLimited(retry_after=max(int(ttl), 1))


class LocalRateLimiter:
    """Token buckets kept in this process's memory: no network call, nothing to fail.

    Each key may spend `burst` requests at once and earns `per_minute / 60` back a second.
    With several API processes each keeps its own buckets, so a key gets between the limit and
    (processes x the limit): meant for abuse (a stuck or scripted terminal), not for billing.
    Buckets idle long enough to be full again are forgotten, so memory stays bounded by the
    keys seen in the last few minutes.
    """

    def __init__(self, *, per_minute: int, burst: int, clock: Callable[[], float] | None = None):
        if per_minute < 1 or burst < 1:
            raise ValueError("per_minute and burst must be at least 1")
        self.rate = per_minute / 60.0  # tokens a second
        self.burst = float(burst)
        self.clock = clock or time.monotonic
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._next_sweep = 0.0

    def hit(self, key: str) -> None:
        """Spend one token of `key`; `RateLimited` (with the seconds until one is back) if
        there is none."""
        now = self.clock()
        if now >= self._next_sweep:
            self._sweep(now)
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise RateLimited(retry_after=max(1, math.ceil((1.0 - tokens) / self.rate)))
        self._buckets[key] = (tokens - 1.0, now)

    def _sweep(self, now: float) -> None:
        refill = self.burst / self.rate  # seconds for an empty bucket to be full again
        self._buckets = {
            k: v for k, v in self._buckets.items() if v[0] + (now - v[1]) * self.rate < self.burst
        }
        self._next_sweep = now + max(refill, 1.0)
