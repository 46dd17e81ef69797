"""``execution_cpus`` through a real gateway: the threads that run the sessions are on those
CPUs, every other thread of the process on the rest, and a stopped server gives them all back."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest


two_cpus = pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                              reason="needs per-thread CPU affinity (Linux) and two CPUs")


def _python_threads() -> dict[str, set[int]]:
    return {t.name: os.sched_getaffinity(t.native_id) for t in threading.enumerate() if t.native_id is not None}


@two_cpus
def test_sessions_run_on_the_execution_cpus_and_the_rest_elsewhere(make_gateway, demo_models):
    allowed = os.sched_getaffinity(0)
    execution = min(allowed)
    gw = make_gateway(model_repository=demo_models, execution_cpus=[execution], inline_execution_below_us=0)
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    response = gw.predict("regressor", {"features": x})
    assert np.frombuffer(response.outputs[0].data, np.float32).shape == (3,)
    threads = _python_threads()
    onnx = {name: cpus for name, cpus in threads.items() if name.startswith("onnx")}
    assert onnx and all(cpus == {execution} for cpus in onnx.values()), onnx
    others = {name: cpus for name, cpus in threads.items() if not name.startswith(("onnx", "gateway-load"))}
    assert others and all(cpus == allowed - {execution} for cpus in others.values()), others
    # every thread of the process, Python's or not (gRPC's, onnxruntime's), is on one side or the other
    for tid in map(int, os.listdir("/proc/self/task")):
        try:
            assert os.sched_getaffinity(tid) in ({execution}, allowed - {execution})
        except ProcessLookupError:
            pass
    gw.close()
    assert os.sched_getaffinity(threading.get_native_id()) == allowed
    assert all(cpus == allowed for cpus in _python_threads().values())

