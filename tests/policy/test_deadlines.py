"""Deadlines: the request's overall deadline and the requested model's share of it."""
from __future__ import annotations

from gateway.policy.config import DeadlineConfig
from gateway.policy.deadlines import (
    DEADLINE_SLACK_MIN_NS,
    attempt_deadline_ns,
    client_deadline_ns,
    deadline_slack_ns,
    expired,
    ran_out,
)

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


def test_the_slack_is_25_ms_at_least_and_one_percent_of_long_timeouts():
    assert deadline_slack_ns(1_005 * MS, 1_000 * MS) == DEADLINE_SLACK_MIN_NS == 25 * MS
    assert deadline_slack_ns(2_000 * MS, 1_000 * MS) == 25 * MS      # 1 s: still the least
    assert deadline_slack_ns(31_000 * MS, 1_000 * MS) == 300 * MS   # 30 s: 100 ms units, 1%


def test_a_cancellation_within_the_slack_of_the_deadline_ran_out_and_sooner_was_a_cancel():
    received, deadline = 1_000 * MS, 1_100 * MS                     # a 100 ms deadline
    assert ran_out(deadline, received, deadline) and ran_out(deadline, received, deadline + 50 * MS)
    assert ran_out(deadline, received, deadline - 25 * MS)          # the client's RST, before ours
    assert not ran_out(deadline, received, deadline - 25 * MS - 1)
    assert not ran_out(0, received, 10**18)                         # no deadline: always a cancel
    received, deadline = 1_000 * MS, 31_000 * MS                    # 30 s: 300 ms of slack
    assert ran_out(deadline, received, deadline - 300 * MS) and not ran_out(deadline, received, 30_000 * MS)
