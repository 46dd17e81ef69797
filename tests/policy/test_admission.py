"""Static admission limits and the gradient concurrency limit."""
from __future__ import annotations

from gateway.policy.admission import Admission, GradientLimiter
from gateway.policy.config import AdaptiveLimitConfig, AdmissionConfig


def test_max_in_flight_sheds_the_excess():
    a = Admission(AdmissionConfig(max_in_flight=2))
    assert a.try_acquire(0) and a.try_acquire(0)
    assert not a.try_acquire(0)
    assert a.shed == 1
    a.release(0.01, 1)
    assert a.try_acquire(0)


def test_max_queue_depth_sheds_when_the_queue_is_deep():
    a = Admission(AdmissionConfig(max_queue_depth=3))
    assert a.try_acquire(2)
    assert not a.try_acquire(3)


def test_no_limits_means_disabled():
    assert not Admission(AdmissionConfig()).enabled


def test_gradient_limit_shrinks_when_latency_rises_and_grows_back():
    lim = GradientLimiter(AdaptiveLimitConfig(enabled=True, initial_limit=50, min_limit=2, max_limit=200))
    for _ in range(200):  # steady: 10 ms, fully used
        lim.on_sample(0.010, in_flight=int(lim.limit))
    steady = lim.limit
    assert steady >= 50  # grows by the queue allowance while latency is flat
    for _ in range(50):  # queueing: latency x5
        lim.on_sample(0.050, in_flight=int(lim.limit))
    assert lim.limit < steady / 2
    low = lim.limit
    for _ in range(300):
        lim.on_sample(0.010, in_flight=int(lim.limit))
    assert lim.limit > low


def test_gradient_limit_does_not_grow_when_app_limited():
    lim = GradientLimiter(AdaptiveLimitConfig(enabled=True, initial_limit=20))
    for _ in range(100):
        lim.on_sample(0.010, in_flight=1)
    assert lim.limit == 20


def test_gradient_limit_respects_bounds():
    lim = GradientLimiter(AdaptiveLimitConfig(enabled=True, initial_limit=4, min_limit=3, max_limit=6))
    for _ in range(200):
        lim.on_sample(0.01, in_flight=10)
    assert lim.limit == 6  # capped at max_limit
    for _ in range(50):
        lim.on_sample(1.0, in_flight=10)
    # gradient >= 0.5 plus a sqrt(limit) queue allowance: the limit settles near 4, never under min_limit
    assert 3 <= lim.limit < 4.5
    a = Admission(AdmissionConfig(max_in_flight=100, adaptive=AdaptiveLimitConfig(enabled=True, initial_limit=5,
                                                                                   min_limit=2)))
    assert a.limit() == 5
