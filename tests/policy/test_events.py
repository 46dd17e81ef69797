"""The breaker transition's log line: rates where the window has enough calls for them, and
no made-up percentage (the breaker's -1) where it has not."""
from __future__ import annotations

import logging

from gateway.policy.breaker import CircuitBreaker
from gateway.policy.config import CircuitBreakerConfig


def test_transition_lines_state_rates_only_when_there_are_some(caplog):
    clock = [1000.0]
    b = CircuitBreaker(CircuitBreakerConfig(enabled=True, sliding_window_size=10, minimum_number_of_calls=4,
                                            failure_rate_threshold=50, wait_duration_in_open_state_ms=5000,
                                            permitted_number_of_calls_in_half_open_state=2), "m@1", lambda: clock[0])
    with caplog.at_level(logging.INFO, logger="gateway.policy"):
        for _ in range(4):
            assert b.try_acquire()
            b.on_error(0.001)
        clock[0] += 5.0
        assert b.try_acquire()                      # open -> half_open: a fresh, empty window
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["circuit breaker m@1: closed -> open (calls=4 failure_rate=100.0% slow_call_rate=0.0%)",
                     "circuit breaker m@1: open -> half_open (calls=0, too few for rates)"]
