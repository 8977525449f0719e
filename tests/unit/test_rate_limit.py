"""The in-process token bucket behind the per-terminal POS limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalition.platform.errors import RateLimited
from coalition.platform.ratelimit import LocalRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refused_with_retry_after_then_refilled() -> None:
    clock = Clock()
    limiter = LocalRateLimiter(per_minute=60, burst=3, clock=clock)
    for _ in range(3):
        limiter.hit("t1")
    with pytest.raises(RateLimited) as refused:
        limiter.hit("t1")
    assert refused.value.headers["Retry-After"] == "1"
    limiter.hit("t2")  # every key has its own bucket
    clock.now += 1.0  # one token a second
    limiter.hit("t1")
    with pytest.raises(RateLimited):
        limiter.hit("t1")


def test_retry_after_is_the_wait_for_one_token() -> None:
    clock = Clock()
    limiter = LocalRateLimiter(per_minute=6, burst=1, clock=clock)  # one token per 10 s
    limiter.hit("t")
    clock.now += 2.5
    with pytest.raises(RateLimited) as refused:
        limiter.hit("t")
    assert refused.value.headers["Retry-After"] == "8"  # ceil(7.5)


def test_idle_full_buckets_are_forgotten() -> None:
    clock = Clock()
    limiter = LocalRateLimiter(per_minute=60, burst=2, clock=clock)
    for key in range(100):
        limiter.hit(f"t{key}")
    clock.now += 10
    limiter.hit("fresh")
    assert set(limiter._buckets) == {"fresh"}


@given(
    st.integers(1, 600),
    st.integers(1, 50),
    st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=200),
)
def test_never_more_than_burst_plus_earned(per_minute: int, burst: int, gaps: list[float]) -> None:
    clock = Clock()
    limiter = LocalRateLimiter(per_minute=per_minute, burst=burst, clock=clock)
    allowed = 0
    for gap in gaps:
        clock.now += gap
        try:
            limiter.hit("k")
            allowed += 1
        except RateLimited:
            pass
    assert allowed <= burst + sum(gaps) * per_minute / 60 + 1e-9
