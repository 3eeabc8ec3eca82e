"""The retry policy, without sockets or sleeps."""

from __future__ import annotations

import email.utils

import pytest

from claifd.retry import RETRY_STATUSES, RetryPolicy, retry_after_seconds, should_retry_status


def test_full_jitter_backoff_is_bounded_and_grows() -> None:
    p = RetryPolicy(max_attempts=10, base_delay=0.5, max_delay=4.0, deadline=1000)
    assert p.backoff(1, rand=lambda: 0.999) == pytest.approx(0.4995)
    assert p.backoff(2, rand=lambda: 1.0) == 1.0
    assert p.backoff(3, rand=lambda: 1.0) == 2.0
    assert p.backoff(8, rand=lambda: 1.0) == 4.0  # capped
    assert p.backoff(5, rand=lambda: 0.0) == 0.0  # full jitter reaches zero


def test_attempts_and_deadline_bound_retries() -> None:
    p = RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=10.0, deadline=5.0)
    assert p.next_delay(1, elapsed=0.0, retry_after=None, rand=lambda: 0.5) == 0.5
    assert p.next_delay(3, elapsed=0.0, retry_after=None) is None  # attempts spent
    assert p.next_delay(1, elapsed=4.5, retry_after=1.0) is None  # would pass the deadline
    assert p.next_delay(2, elapsed=1.0, retry_after=2.0) == 2.0  # the server's wait wins over backoff


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "-3"}) == 0.0
    assert retry_after_seconds({"retry-after-ms": "x", "retry-after": "2"}) == 2.0
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"retry-after": "soon"}) is None
    when = email.utils.formatdate(1_000_010, usegmt=True)
    assert retry_after_seconds({"retry-after": when}, now=lambda: 1_000_000.0) == 10.0


def test_which_statuses_retry() -> None:
    assert RETRY_STATUSES == {408, 409, 429, 500, 502, 503, 504, 529}
    assert should_retry_status(529, {}) and not should_retry_status(400, {})
    assert should_retry_status(400, {"x-should-retry": "true"})
    assert not should_retry_status(503, {"x-should-retry": "false"})
