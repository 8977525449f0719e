"""Fixed-window rate limits counted in Redis (Redis holds counters, never records)."""

from __future__ import annotations

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
