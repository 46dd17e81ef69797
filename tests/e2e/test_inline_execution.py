"""The batcher's execution choices, observed through a real gateway."""
from __future__ import annotations

import concurrent.futures

import numpy as np
import onnxruntime as ort

from gateway.core.batching import ExecutionPlace


def _predict_many(gw, n=40):
    x = np.random.default_rng(1).standard_normal((n, 1, 8)).astype(np.float32)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return x, list(pool.map(lambda row: gw.predict("regressor", {"features": row}), x))


def test_fast_models_run_inline_and_answer_the_same(make_gateway, demo_models):
    gw = make_gateway(model_repository=demo_models, inline_execution_below_us=10_000)
    x, responses = _predict_many(gw)
    batcher = gw.server.registry.resolve("regressor").batcher
    assert batcher.inline_executions > 0
    session = ort.InferenceSession(str(demo_models / "regressor" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    for row, response in zip(x, responses):
        got = np.frombuffer(response.outputs[0].data, np.float32)
        np.testing.assert_allclose(got, session.run(None, {"features": row})[0].ravel(), rtol=1e-5)


def test_a_huge_request_to_a_fast_model_runs_off_the_loop(make_gateway, demo_models):
    gw = make_gateway(model_repository=demo_models, inline_execution_below_us=10_000)
    _predict_many(gw)
    batcher = gw.server.registry.resolve("regressor").batcher
    inline, executions = batcher.inline_executions, batcher.executions
    assert inline > 0
    big = np.random.default_rng(2).standard_normal((60_000, 8)).astype(np.float32)
    response = gw.predict("regressor", {"features": big})
    assert np.frombuffer(response.outputs[0].data, np.float32).shape == (60_000,)
    assert batcher.executions == executions + 1 and batcher.inline_executions == inline


def test_inline_execution_can_be_switched_off(make_gateway, demo_models):
    gw = make_gateway(model_repository=demo_models, inline_execution_below_us=0)
    _predict_many(gw)
    assert gw.server.registry.resolve("regressor").batcher.inline_executions == 0


def test_never_inline_where_faults_may_be_injected(make_gateway, demo_models):
    gw = make_gateway(model_repository=demo_models, inline_execution_below_us=10_000, allow_fault_injection=True)
    _predict_many(gw)
    assert gw.server.registry.resolve("regressor").batcher.inline_executions == 0


def _place_after_warmup(limit_us: int, pool_us: float) -> ExecutionPlace:
    place = ExecutionPlace(limit_us)
    for _ in range(ExecutionPlace.WARMUP_EXECUTIONS):
        assert not place.inline_next(1)          # a fresh session's first runs go to the workers
        place.timed(50_000_000, inline=False, rows=1)   # and their (slow) times are not averaged
    assert place.pool_ns_avg is None
    assert not place.inline_next(1)
    place.timed(int(pool_us * 1000), inline=False, rows=1)
    return place


def test_execution_place_moves_a_fast_model_to_the_loop_and_keeps_it_there():
    place = _place_after_warmup(250, pool_us=120)
    for _ in range(200):
        assert place.inline_next(1)
        place.timed(60_000, inline=True, rows=1)
    place.timed(30_000_000, inline=True, rows=1)        # one 30 ms garbage collection: clipped
    assert place.inline_next(1)


def test_execution_place_leaves_the_loop_when_slow_and_probes_to_come_back():
    place = _place_after_warmup(250, pool_us=300)
    assert place.inline_next(1)                  # 300 us on a worker: worth timing on the loop
    for _ in range(30):                         # a run of slow executions moves it off
        place.timed(400_000, inline=True, rows=1)
    choices = [place.inline_next(1) for _ in range(3 * ExecutionPlace.PROBE_EVERY)]
    assert choices.count(True) == 3             # one probe every PROBE_EVERY batches
    assert choices.index(True) == ExecutionPlace.PROBE_EVERY - 1
    while place.inline_ns_avg >= place.limit_ns:  # the probes find it fast again
        while not place.inline_next(1):
            pass
        place.timed(100_000, inline=True, rows=1)
    assert all(place.inline_next(1) for _ in range(10))


def test_execution_place_never_probes_a_model_slow_even_on_the_workers():
    place = _place_after_warmup(250, pool_us=900)   # e.g. the wide MLP: ~0.9 ms per batch
    assert not any(place.inline_next(1) for _ in range(10 * ExecutionPlace.PROBE_EVERY))


def test_execution_place_zero_limit_is_never_inline():
    place = _place_after_warmup(0, pool_us=1)
    assert not any(place.inline_next(1) for _ in range(200))


def test_execution_place_sends_a_batch_far_larger_than_any_seen_fast_to_a_worker():
    place = _place_after_warmup(250, pool_us=40)       # rows=1 ran fast: up to 2 rows inline
    assert place.inline_next(2) and not place.inline_next(3)
    for rows in (2, 4, 8, 16):                         # larger batches prove fast: the size grows
        assert place.inline_next(rows)
        place.timed(30_000 + 5_000 * rows, inline=True, rows=rows)
    assert place.fast_rows == 16 and place.inline_next(32)
    assert not place.inline_next(100_000)              # one huge request: not on the loop
    place.timed(900_000, inline=False, rows=100_000)   # (and its slow run teaches nothing)
    assert place.fast_rows == 16 and place.inline_next(1)
