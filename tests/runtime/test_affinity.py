"""The CPU split of ``execution_cpus`` (gateway.runtime.affinity); the threads a real gateway
moves are checked in tests/e2e/test_cpu_affinity.py."""
from __future__ import annotations

import os
import threading

import pytest

from gateway.runtime import affinity

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="per-thread CPU affinity is Linux's")


def test_the_front_end_gets_the_cpus_left_or_all_when_none_are():
    assert affinity.plan([0], {0, 1, 2, 3}) == affinity.CpuPlan(frozenset({0}), frozenset({1, 2, 3}))
    assert affinity.plan([1, 3], {0, 1, 2, 3}) == affinity.CpuPlan(frozenset({1, 3}), frozenset({0, 2}))
    # every CPU to the models: nothing is set apart, the front end keeps them too
    assert affinity.plan([0, 1], {0, 1}) == affinity.CpuPlan(frozenset({0, 1}), frozenset({0, 1}))


def test_pools_pin_their_threads_only_while_a_plan_is_active():
    allowed = os.sched_getaffinity(0)
    one = frozenset({min(allowed)})
    seen: dict[str, set[int]] = {}

    def probe(name, pin):
        pin()
        seen[name] = os.sched_getaffinity(threading.get_native_id())

    t = threading.Thread(target=probe, args=("no plan", affinity.pin_execution))
    t.start(); t.join()
    assert seen["no plan"] == allowed
    p = affinity.CpuPlan(one, frozenset(allowed))
    affinity.apply(p)
    try:
        for name, pin in (("execution", affinity.pin_execution), ("front", affinity.pin_front)):
            t = threading.Thread(target=probe, args=(name, pin))
            t.start(); t.join()
        assert seen["execution"] == set(one) and seen["front"] == allowed
    finally:
        affinity.restore(p)
    assert os.sched_getaffinity(threading.get_native_id()) == allowed
