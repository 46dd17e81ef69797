"""Circuit breaker per model version, with resilience4j's states and transitions.

CLOSED: calls pass and their outcomes fill a sliding window (the last N calls, or the
last N seconds). Once the window holds ``minimum_number_of_calls``, a failure rate or
slow-call rate at or above its threshold opens the circuit.
OPEN: calls are refused (``circuit_open``) for ``wait_duration_in_open_state_ms``; the
first call after that moves the circuit to HALF_OPEN.
HALF_OPEN: ``permitted_number_of_calls_in_half_open_state`` probe calls pass, the rest are
refused; when all probes have finished, their rates close the circuit or open it again.

A refused caller is told when to retry (:meth:`CircuitBreaker.retry_after_ms`, never 0): while
OPEN, the time left before probes go; while HALF_OPEN, about one call's duration (a moving
average of the durations recorded), since that is when the probes out now have decided.

A call refused by the breaker is not recorded; a call given back with :meth:`release`
(the client went away, the request was shed) is not recorded either.
"""
from __future__ import annotations

import enum
import logging
import time
from collections import deque
from collections.abc import Callable

from .config import CircuitBreakerConfig
from .events import log_breaker_transition

# Hears every state change: (breaker name, from state, to state).
TransitionObserver = Callable[[str, str, str], None]

log = logging.getLogger("gateway.policy")

# Weight of the newest duration in the moving average behind the half-open retry hint:
# the last five to ten calls dominate, so the hint follows the model's current speed.
_CALL_EWMA = 0.2


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class _Totals:
    __slots__ = ("calls", "failures", "slow")

    def __init__(self) -> None:
        self.calls = 0
        self.failures = 0
        self.slow = 0


class CountWindow:
    """The outcomes of the last ``size`` calls."""

    def __init__(self, size: int):
        self._size = size
        self._outcomes: deque[tuple[bool, bool]] = deque()
        self.totals = _Totals()

    def add(self, failed: bool, slow: bool, now_s: float) -> _Totals:
        t = self.totals
        if len(self._outcomes) == self._size:
            old_failed, old_slow = self._outcomes.popleft()
            t.calls -= 1
            t.failures -= old_failed
            t.slow -= old_slow
        self._outcomes.append((failed, slow))
        t.calls += 1
        t.failures += failed
        t.slow += slow
        return t


class TimeWindow:
    """The outcomes of calls that finished in the last ``size_s`` seconds, in one-second buckets."""

    def __init__(self, size_s: int):
        self._size_s = size_s
        self._buckets: deque[list[int]] = deque()  # [second, calls, failures, slow]
        self.totals = _Totals()

    def add(self, failed: bool, slow: bool, now_s: float) -> _Totals:
        second = int(now_s)
        self._expire(second)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0, 0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        bucket[2] += failed
        bucket[3] += slow
        t = self.totals
        t.calls += 1
        t.failures += failed
        t.slow += slow
        return t

    def _expire(self, second: int) -> None:
        t = self.totals
        while self._buckets and self._buckets[0][0] <= second - self._size_s:
            _, calls, failures, slow = self._buckets.popleft()
            t.calls -= calls
            t.failures -= failures
            t.slow -= slow


class CircuitBreaker:
    """Not thread-safe: used from the event loop only."""

    def __init__(self, config: CircuitBreakerConfig, name: str = "",
                 clock: Callable[[], float] = time.monotonic, *,
                 on_transition: TransitionObserver | None = None):
        self.config = config
        self._on_transition = on_transition
        self.name = name
        self._clock = clock
        self.state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._window = self._new_window()
        self._probes_left = 0  # HALF_OPEN: permissions not yet handed out
        self._probe_results: list[tuple[bool, bool]] = []
        self.transitions = 0
        self.not_permitted = 0
        self._call_s: float | None = None  # moving average of recorded call durations

    def _new_window(self):
        c = self.config
        return CountWindow(c.sliding_window_size) if c.sliding_window_type == "count_based" \
            else TimeWindow(c.sliding_window_size)

    # -- calls ---------------------------------------------------------------------------
    def try_acquire(self) -> bool:
        """May a call go to the model now? Every True must be followed by on_success/on_error/release."""
        if self.state is BreakerState.OPEN:
            if self._clock() - self._opened_at < self.config.wait_duration_in_open_state_ms / 1e3:
                self.not_permitted += 1
                return False
            self._transition(BreakerState.HALF_OPEN)
        if self.state is BreakerState.HALF_OPEN:
            if self._probes_left <= 0:
                self.not_permitted += 1
                return False
            self._probes_left -= 1
        return True

    def release(self) -> None:
        """Give back a permission whose call never reached a verdict (cancelled, shed)."""
        if self.state is BreakerState.HALF_OPEN:
            self._probes_left += 1

    def on_success(self, duration_s: float) -> None:
        self._record(False, duration_s)

    def on_error(self, duration_s: float) -> None:
        self._record(True, duration_s)

    def retry_after_ms(self) -> int:
        """How long a refused caller should wait, in ms (at least 1: a pushback of 0 asks for an
        immediate retry, which only adds load). OPEN: the time left before probes are let
        through. HALF_OPEN: the probes out now decide within about one call's duration, after
        which the circuit has closed (a retry passes) or reopened (a retry learns the wait)."""
        c = self.config
        if self.state is BreakerState.OPEN:
            left_ms = c.wait_duration_in_open_state_ms - (self._clock() - self._opened_at) * 1e3
            return max(1, int(left_ms))
        # (no duration recorded yet cannot happen here: only recorded calls open a circuit)
        return max(1, round(self._call_s * 1e3)) if self._call_s is not None else 1

    # -- state machine -------------------------------------------------------------------
    def _record(self, failed: bool, duration_s: float) -> None:
        c = self.config
        avg = self._call_s
        self._call_s = duration_s if avg is None else avg + _CALL_EWMA * (duration_s - avg)
        slow = duration_s * 1e3 >= c.slow_call_duration_threshold_ms
        if self.state is BreakerState.CLOSED:
            totals = self._window.add(failed, slow, self._clock())
            if totals.calls >= c.minimum_number_of_calls and self._over_threshold(totals.calls, totals.failures,
                                                                                   totals.slow):
                self._transition(BreakerState.OPEN)
        elif self.state is BreakerState.HALF_OPEN:
            self._probe_results.append((failed, slow))
            permitted = c.permitted_number_of_calls_in_half_open_state
            if len(self._probe_results) >= permitted:
                failures = sum(f for f, _ in self._probe_results)
                slows = sum(s for _, s in self._probe_results)
                n = len(self._probe_results)
                self._transition(BreakerState.OPEN if self._over_threshold(n, failures, slows)
                                 else BreakerState.CLOSED)
        # OPEN: a call admitted before the circuit opened finished late; resilience4j ignores it too.

    def _over_threshold(self, calls: int, failures: int, slow: int) -> bool:
        c = self.config
        return (100.0 * failures / calls >= c.failure_rate_threshold
                or 100.0 * slow / calls >= c.slow_call_rate_threshold)

    def _transition(self, to: BreakerState) -> None:
        frm = self.state
        self.state = to
        self.transitions += 1
        if to is BreakerState.OPEN:
            self._opened_at = self._clock()
        elif to is BreakerState.HALF_OPEN:
            self._probes_left = self.config.permitted_number_of_calls_in_half_open_state
            self._probe_results = []
        elif to is BreakerState.CLOSED:
            self._window = self._new_window()
        log_breaker_transition(self.name, frm.value, to.value, self.rates())
        if self._on_transition is not None:
            self._on_transition(self.name, frm.value, to.value)

    # -- telemetry -----------------------------------------------------------------------
    def rates(self) -> dict[str, float]:
        """Failure and slow-call rates (percent) over the current window; -1 when too few calls."""
        if self.state is BreakerState.HALF_OPEN:
            n = len(self._probe_results)
            failures = sum(f for f, _ in self._probe_results)
            slow = sum(s for _, s in self._probe_results)
        else:
            t = self._window.totals
            if isinstance(self._window, TimeWindow):
                self._window._expire(int(self._clock()))
            n, failures, slow = t.calls, t.failures, t.slow
        if n == 0 or (self.state is BreakerState.CLOSED and n < self.config.minimum_number_of_calls):
            return {"calls": n, "failure_rate": -1.0, "slow_call_rate": -1.0}
        return {"calls": n, "failure_rate": 100.0 * failures / n, "slow_call_rate": 100.0 * slow / n}
