"""The circuit breaker's state machine (resilience4j semantics) on a fake clock."""
from __future__ import annotations

import pytest

from gateway.policy.breaker import BreakerState, CircuitBreaker
from gateway.policy.config import CircuitBreakerConfig


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock, **overrides) -> CircuitBreaker:
    cfg = dict(enabled=True, sliding_window_size=10, minimum_number_of_calls=4, failure_rate_threshold=50,
               wait_duration_in_open_state_ms=5000, permitted_number_of_calls_in_half_open_state=2)
    cfg.update(overrides)
    return CircuitBreaker(CircuitBreakerConfig(**cfg), "m@1", clock)


def _call(b: CircuitBreaker, failed: bool, duration_s: float = 0.001) -> bool:
    if not b.try_acquire():
        return False
    (b.on_error if failed else b.on_success)(duration_s)
    return True


def test_stays_closed_below_minimum_calls_then_opens_at_threshold():
    b = _breaker(Clock())
    for _ in range(3):
        _call(b, True)
    assert b.state is BreakerState.CLOSED  # 3 < minimum_number_of_calls
    _call(b, False)  # 3 of 4 failed = 75 %
    assert b.state is BreakerState.OPEN


def test_failure_rate_exactly_at_threshold_opens():
    b = _breaker(Clock())
    for failed in (True, False, True, False):
        _call(b, failed)
    assert b.state is BreakerState.OPEN


def test_below_threshold_stays_closed_and_window_slides():
    b = _breaker(Clock(), sliding_window_size=4)
    for failed in (True, False, False, False, True, False, False, False, True, False):
        _call(b, failed)
    assert b.state is BreakerState.CLOSED
    assert b.rates()["failure_rate"] == 25.0


def test_full_cycle_closed_open_half_open_closed():
    clock = Clock()
    b = _breaker(clock)
    for _ in range(4):
        _call(b, True)
    assert b.state is BreakerState.OPEN
    assert not b.try_acquire()
    assert b.retry_after_ms() == 5000
    clock.now += 4.9
    assert not b.try_acquire()
    clock.now += 0.2
    assert b.try_acquire()  # the first call after the wait moves to half-open
    assert b.state is BreakerState.HALF_OPEN
    assert b.try_acquire()  # second of two permitted probes
    assert not b.try_acquire()  # no more probes
    b.on_success(0.001)
    assert b.state is BreakerState.HALF_OPEN
    b.on_success(0.001)
    assert b.state is BreakerState.CLOSED
    assert b.rates()["calls"] == 0  # a fresh window


def test_half_open_failures_reopen():
    clock = Clock()
    b = _breaker(clock)
    for _ in range(4):
        _call(b, True)
    clock.now += 5.0
    assert _call(b, False) and _call(b, True)  # 50 % of the probes failed
    assert b.state is BreakerState.OPEN
    assert not b.try_acquire()
    clock.now += 5.0
    assert _call(b, False) and _call(b, False)
    assert b.state is BreakerState.CLOSED


def test_a_caller_refused_while_half_open_is_told_to_retry_after_about_one_call():
    clock = Clock()
    b = _breaker(clock, permitted_number_of_calls_in_half_open_state=1)
    for duration_s in (0.040, 0.040, 0.040, 0.040):               # calls of about 40 ms
        _call(b, True, duration_s)
    clock.now += 5.0
    assert b.try_acquire() and b.state is BreakerState.HALF_OPEN  # the one probe is out
    assert not b.try_acquire()
    assert b.retry_after_ms() == 40                                # never 0: that asks for a retry now
    b.on_error(0.240)                                               # the probe failed slowly: open again
    assert b.state is BreakerState.OPEN and b.retry_after_ms() == 5000
    clock.now += 5.0
    assert b.try_acquire() and not b.try_acquire()
    assert b.retry_after_ms() == 80                                # the average followed the slow probe


def test_the_half_open_retry_hint_is_at_least_1_ms():
    clock = Clock()
    b = _breaker(clock, permitted_number_of_calls_in_half_open_state=1)
    for _ in range(4):
        _call(b, True, 0.00001)
    clock.now += 5.0
    assert b.try_acquire() and not b.try_acquire()
    assert b.retry_after_ms() == 1


def test_released_probe_is_handed_out_again():
    clock = Clock()
    b = _breaker(clock)
    for _ in range(4):
        _call(b, True)
    clock.now += 5.0
    assert b.try_acquire() and b.try_acquire()
    b.release()  # e.g. the client cancelled
    assert b.try_acquire()
    assert not b.try_acquire()


def test_slow_calls_open_the_circuit():
    b = _breaker(Clock(), failure_rate_threshold=100, slow_call_rate_threshold=50,
                 slow_call_duration_threshold_ms=100)
    for duration in (0.2, 0.01, 0.3, 0.01):
        _call(b, False, duration)
    assert b.state is BreakerState.OPEN


def test_time_based_window_forgets_old_calls():
    clock = Clock()
    b = _breaker(clock, sliding_window_type="time_based", sliding_window_size=10, minimum_number_of_calls=4)
    for _ in range(3):
        _call(b, True)
    clock.now += 11  # those three fall out of the 10 s window
    for failed in (False, False, False, True):
        _call(b, failed)
    assert b.state is BreakerState.CLOSED
    assert b.rates() == {"calls": 4, "failure_rate": 25.0, "slow_call_rate": 0.0}


def test_transitions_are_logged_at_info(caplog):
    clock = Clock()
    b = _breaker(clock)
    with caplog.at_level("INFO", logger="gateway.policy"):
        for _ in range(4):
            _call(b, True)
    assert any("closed -> open" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bad", [{"failure_rate_threshold": 0}, {"sliding_window_size": 0},
                                 {"sliding_window_type": "sliding"}])
def test_invalid_breaker_config_is_rejected(bad):
    with pytest.raises(ValueError):
        CircuitBreakerConfig(**bad)
