"""Retrying a Redis call (the feature store, the prediction store, the learner's checkpoint)
through a transient outage, within one budget: ``Settings.feature_store_retry_seconds``.

The budget is a bound on the whole wait, attempts included: an attempt still running when it
is spent is cancelled (redis-py's own connection retries alone took 5-11 s per attempt
against a refused port). Past it the error propagates, the batch fails, the worker stops
loudly (streams/runtime/lifecycle.py) and, since nothing was acked, the batch is consumed again
after a restart. Only idempotent calls go through here: a read, or a write that sets the
same values again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.exceptions
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from streams.errors import StreamscoreError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: What a Redis outage raises in redis-py (a refused or dropped connection, a timeout).
REDIS_TRANSIENT: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)


#: Longest one attempt may take while budget remains: one that hangs longer (a connection
#: caught in a server's restart: `make faults` saw one hold a whole 8 s budget) is given up
#: and tried again on a fresh one. Every call retried here is idempotent.
ATTEMPT_SECONDS = 2.0


class RetryBudgetSpent(StreamscoreError):
    """A transient failure lasted longer than the retry budget."""


class _AttemptTimedOut(Exception):
    """One attempt outlasted ``ATTEMPT_SECONDS`` with budget left: retried."""


async def within_budget(
    call: Callable[[], Awaitable[T]],
    *,
    seconds: float,
    what: str,
    transient: tuple[type[BaseException], ...],
    on_retry: Callable[[], object] | None = None,
) -> T:
    """``await call()``, retried with backoff on ``transient`` errors for at most ``seconds``
    in all; then the last error (or ``RetryBudgetSpent`` if an attempt was still waiting).
    A budget of 0 means one attempt. ``on_retry`` is called before each retry (a counter)."""
    if seconds <= 0:
        return await call()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    retrying = AsyncRetrying(
        retry=retry_if_exception_type((*transient, _AttemptTimedOut)),
        wait=wait_exponential(multiplier=0.1, max=1.0),  # an outage's end seen within 1 s
        stop=stop_after_delay(seconds),
        before_sleep=_before_retry(on_retry),
        reraise=True,  # the last transient error, once the budget is spent between attempts
    )
    spent = (
        f"{what}: still failing after {seconds:g} s of retries"
        " (STREAMSCORE_FEATURE_STORE_RETRY_SECONDS)"
    )
    try:
        async for attempt in retrying:
            with attempt:
                remaining = max(deadline - loop.time(), 0.0)
                try:
                    async with asyncio.timeout(min(remaining, ATTEMPT_SECONDS)):
                        return await call()
                except TimeoutError as exc:
                    if remaining > ATTEMPT_SECONDS:  # this attempt hung: try a fresh one
                        hung = f"{what}: an attempt hung"
                        raise _AttemptTimedOut(hung) from exc
                    raise RetryBudgetSpent(spent) from exc  # the budget ran out in an attempt
    except _AttemptTimedOut as exc:  # the budget ran out between attempts, the last one hung
        raise RetryBudgetSpent(spent) from exc
    msg = "unreachable: tenacity reraises the last error"
    raise AssertionError(msg)


def _before_retry(on_retry: Callable[[], object] | None) -> Callable[[RetryCallState], None]:
    logged = before_sleep_log(log, logging.WARNING)

    def before(state: RetryCallState) -> None:
        logged(state)
        if on_retry is not None:
            on_retry()

    return before
