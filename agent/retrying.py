"""One retry policy for every HTTP client: the served-model backends, the browser's pages and its searches.

What is worth another try is decided here, once:

- answers with a status in :data:`RETRYABLE_STATUSES` (408, 409, 425, 429 and every 5xx): the server
  was busy, restarting, or behind a proxy that gave up;
- the transport errors in :data:`RETRYABLE_ERRORS`, which happen before the server did any work worth
  keeping (no connection, a connection dropped or refused, no free connection in the pool). A read
  timeout is not among them: a server that stays silent is reported, not asked again.

Waits double from ``backoff`` up to ``max_backoff``; a ``Retry-After`` header wins, up to
``max_retry_after``. Each client keeps its own numbers (``max_retries`` of a backend, ``[browser] retries``).

>>> policy = RetryPolicy(retries=2, backoff=0.25)
>>> response = await policy.call(lambda: client.get("https://example.com/"))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, retry_if_result, stop_after_attempt

__all__ = ["RETRYABLE_ERRORS", "RETRYABLE_STATUSES", "RetryPolicy", "is_retryable", "retry_after_seconds"]

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))
RETRYABLE_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.RemoteProtocolError, httpx.ReadError,
    httpx.WriteError)


def is_retryable(outcome: object) -> bool:
    """Whether an attempt's result is an answer worth asking again for (a 429, a 503...)."""
    return isinstance(outcome, httpx.Response) and outcome.status_code in RETRYABLE_STATUSES


@dataclass(frozen=True)
class RetryPolicy:
    """How often one HTTP client tries again and how long it waits in between.

    Args:
        retries: tries after the first.
        backoff: the first wait in seconds, doubled after each try up to ``max_backoff``.
        max_retry_after: the longest a ``Retry-After`` header may make us wait.
    """

    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 20.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be 0 or more, got {self.retries}.")

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def wait(self, state: RetryCallState) -> float:
        """Seconds before the next try: the last answer's ``Retry-After`` (capped), else the backoff."""
        outcome = state.outcome
        if outcome is not None and not outcome.failed and isinstance(outcome.result(), httpx.Response):
            retry_after = retry_after_seconds(outcome.result())
            if retry_after is not None:
                return min(retry_after, self.max_retry_after)
        return min(self.backoff * 2 ** (state.attempt_number - 1), self.max_backoff)

    async def call(self, attempt: Callable[[], Awaitable[T]], *,
                   sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> T:
        """Run ``attempt()`` until its outcome is not worth retrying or the tries run out.

        An outcome is worth retrying when ``attempt`` raises one of :data:`RETRYABLE_ERRORS` or returns an
        ``httpx.Response`` with a status in :data:`RETRYABLE_STATUSES`. When the tries run out, the last
        answer is returned (the caller says what a 503 means to its user) or the last error raised. An
        answer given up on is closed before the wait, so its connection is not held while we sleep.
        """

        async def run() -> T:  # tenacity awaits only what is declared async; a lambda's coroutine is not
            return await attempt()

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts), wait=self.wait, sleep=sleep,
            retry=retry_if_exception_type(RETRYABLE_ERRORS) | retry_if_result(is_retryable),
            before_sleep=_close_answer,
            retry_error_callback=_last_outcome,
        )
        return await retrying(run)


async def _close_answer(state: RetryCallState) -> None:
    outcome = state.outcome
    if outcome is not None and not outcome.failed and isinstance(outcome.result(), httpx.Response):
        await outcome.result().aclose()


def retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds: either a number or an HTTP date."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _last_outcome(state: RetryCallState) -> Any:
    """When retries are used up: the last answer, or its error raised."""
    assert state.outcome is not None  # tenacity calls this only after an attempt
    return state.outcome.result()
