"""Deadlines: the request's overall deadline and the requested model's share of it."""
from __future__ import annotations

from gateway.policy.config import DeadlineConfig
from gateway.policy.deadlines import attempt_deadline_ns, client_deadline_ns, expired

MS = 1_000_000


def test_the_client_deadline_wins_else_the_default_timeout_else_none():
    default = DeadlineConfig(default_timeout_ms=200)
    assert client_deadline_ns(default, 5_000 * MS, 1_000 * MS) == 5_000 * MS
    assert client_deadline_ns(default, 0, 1_000 * MS) == 1_200 * MS
    assert client_deadline_ns(DeadlineConfig(), 0, 1_000 * MS) == 0


def test_the_attempt_gets_the_overall_deadline_or_its_cap_whichever_is_sooner():
    capped = DeadlineConfig(attempt_timeout_ms=100)
    now = 1_000 * MS
    assert attempt_deadline_ns(DeadlineConfig(), 1_500 * MS, now) == 1_500 * MS
    assert attempt_deadline_ns(DeadlineConfig(), 0, now) == 0
    assert attempt_deadline_ns(capped, 1_500 * MS, now) == 1_100 * MS   # cap first: rest for the chain
    assert attempt_deadline_ns(capped, 1_050 * MS, now) == 1_050 * MS   # the client's is sooner
    assert attempt_deadline_ns(capped, 0, now) == 1_100 * MS            # no overall deadline


def test_expired_at_or_after_the_deadline_and_never_without_one():
    assert expired(10, 10) and expired(10, 11) and not expired(10, 9)
    assert not expired(0, 10**18)
