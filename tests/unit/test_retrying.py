"""Redis calls retried through an outage within one budget, attempts included."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.exceptions

import streams.runtime.retrying
from streams.runtime.retrying import REDIS_TRANSIENT, RetryBudgetSpent, within_budget


async def test_a_short_outage_is_waited_out() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise redis.exceptions.ConnectionError("refused")
        return "ok"

    assert await within_budget(flaky, seconds=5, what="read", transient=REDIS_TRANSIENT) == "ok"
    assert calls == 3


async def test_an_attempt_that_hangs_ends_with_the_budget() -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    started = time.monotonic()
    with pytest.raises(RetryBudgetSpent, match=r"read: still failing after 0.3 s"):
        await within_budget(hangs, seconds=0.3, what="read", transient=REDIS_TRANSIENT)
    assert time.monotonic() - started < 2


async def test_a_persistent_outage_ends_with_the_budget() -> None:
    async def down() -> None:
        raise redis.exceptions.ConnectionError("refused")

    started = time.monotonic()
    with pytest.raises((redis.exceptions.ConnectionError, RetryBudgetSpent)):
        await within_budget(down, seconds=0.5, what="read", transient=REDIS_TRANSIENT)
    assert time.monotonic() - started < 2


async def test_other_errors_are_not_retried_and_a_zero_budget_is_one_attempt() -> None:
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        await within_budget(broken, seconds=5, what="read", transient=REDIS_TRANSIENT)
    with pytest.raises(ValueError, match="a bug"):
        await within_budget(broken, seconds=0, what="read", transient=(ValueError,))
    assert calls == 2


async def test_each_retry_is_counted() -> None:
    calls, retries = 0, []

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise redis.exceptions.ConnectionError("refused")
        return "ok"

    result = await within_budget(
        flaky, seconds=5, what="read", transient=REDIS_TRANSIENT, on_retry=lambda: retries.append(1)
    )
    assert result == "ok" and len(retries) == 3


async def test_an_attempt_that_hangs_is_given_up_and_a_fresh_one_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A connection caught in a server's restart can hang; with budget left, the attempt
    is abandoned after ATTEMPT_SECONDS and the next one (a fresh connection) succeeds."""
    monkeypatch.setattr(streams.runtime.retrying, "ATTEMPT_SECONDS", 0.2)
    calls = 0

    async def hangs_once() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.Event().wait()
        return "ok"

    started = time.monotonic()
    assert (
        await within_budget(hangs_once, seconds=5, what="read", transient=REDIS_TRANSIENT) == "ok"
    )
    assert calls == 2 and time.monotonic() - started < 2


async def test_attempts_that_always_hang_end_with_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(streams.runtime.retrying, "ATTEMPT_SECONDS", 0.1)

    async def hangs() -> None:
        await asyncio.Event().wait()

    started = time.monotonic()
    with pytest.raises(RetryBudgetSpent, match=r"read: still failing after 0.5 s"):
        await within_budget(hangs, seconds=0.5, what="read", transient=REDIS_TRANSIENT)
    assert time.monotonic() - started < 2
