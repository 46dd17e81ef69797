"""The dynamic batcher on a real event loop (``asyncio.run``) over real onnxruntime sessions."""
from __future__ import annotations

import asyncio
import gc
import logging
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from gateway.api import GatewayError, Status
from gateway.core.batching import DynamicBatcher
from gateway.core.context import Attempt
from gateway.core.placement import ExecutionPlace
from gateway.core.postprocess import ClassifierHead
from gateway.policy.config import FaultInjectionConfig
from gateway.policy.faults import FaultInjector, FaultyModel
from gateway.telemetry import Telemetry
from tests.core.serving import Serving, echo, model_config, onnx_model, request, rows, unbatched


def identity(width="n"):
    """features[batch, width] -> out[batch, width], the same values."""
    return helper.make_graph(
        [helper.make_node("Identity", ["features"], ["out"])], "identity",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", width])])


def test_a_failing_batch_observer_never_changes_the_answer(tmp_path, caplog):
    """Telemetry's input statistics take the width of the first batch of a dynamic-width input;
    a batch of another width makes them raise. The model ran: its answer goes out regardless."""
    telemetry = Telemetry()

    async def main():
        s = Serving(tmp_path, telemetry=telemetry)
        try:
            s.add("id", identity())
            for x in (rows([1, 2, 3]), rows([1, 2, 3, 4]), rows([5, 6, 7, 8, 9])):
                response = await s.dataplane.infer(request("id", x))
                np.testing.assert_array_equal(response.outputs["out"], x)
        finally:
            await s.close()

    with caplog.at_level(logging.ERROR, logger="gateway.batching"):
        asyncio.run(main())
    failed = [r for r in caplog.records if "batch observer" in r.getMessage()]
    assert len(failed) == 1 and "id@1" in failed[0].getMessage()   # logged once, not per batch
    (stats,) = [f for f in telemetry.feature_stats() if f.model == "id"]
    assert stats.count.tolist() == [1, 1, 1]                        # the first width's statistics stand


# -- the batcher alone ------------------------------------------------------------------------
def run(tmp_path, body):
    """``body(make)`` on a fresh loop; ``make(graph, **options)`` starts a batcher over a real session."""
    async def main():
        executor = ThreadPoolExecutor(2, thread_name_prefix="test-onnx")
        started: list[DynamicBatcher] = []

        def make(graph, *, model=None, **options) -> DynamicBatcher:
            model = model or onnx_model(tmp_path, f"m{len(started)}", graph, model_config())
            options.setdefault("max_batch_size", 8)
            options.setdefault("max_queue_delay_us", 50_000)
            options.setdefault("preferred_batch_sizes", [])
            options.setdefault("max_queue_size", 16)
            options.setdefault("instance_count", 1)
            batcher = DynamicBatcher(model, executor, **options)
            batcher.start()
            started.append(batcher)
            return batcher

        try:
            return await body(make)
        finally:
            for batcher in started:
                await batcher.close()
            executor.shutdown(wait=True)
    return asyncio.run(main())


def _submit(batcher: DynamicBatcher, x: np.ndarray, deadline_ns: int = 0) -> tuple[asyncio.Future, Attempt]:
    attempt = Attempt(batcher.model.served_by, rows=x.shape[0] if batcher.model.batchable else 1,
                      deadline_ns=deadline_ns)
    return batcher.submit(request(x=x), attempt), attempt


async def _failure(future) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await future
    return info.value


def test_concurrent_requests_share_one_execution_and_get_their_own_rows(tmp_path):
    async def body(make):
        b = make(echo())
        xs = [rows([0.1, 0.7, 0.2]), rows([0.5, 0.2, 0.3], [0.2, 0.2, 0.6]), rows([1, 2, 3])]
        submitted = [_submit(b, x) for x in xs]
        results = await asyncio.gather(*(f for f, _ in submitted))
        assert (b.executions, b.executed_requests, b.queue_depth) == (1, 3, 0)
        for x, result in zip(xs, results):
            np.testing.assert_array_equal(result.outputs["probabilities"], x)
            assert result.confidence is None and result.classes is None     # no head
        attempts = [a for _, a in submitted]
        assert [a.batch_size for a in attempts] == [4, 4, 4]
        assert len({(a.t_batch_ns, a.t_compute_start_ns, a.t_compute_end_ns) for a in attempts}) == 1
        for a in attempts:
            assert 0 < a.t_enqueued_ns <= a.t_batch_ns <= a.t_compute_start_ns <= a.t_compute_end_ns
    run(tmp_path, body)


def test_a_batch_takes_at_most_max_batch_size_rows(tmp_path):
    async def body(make):
        b = make(echo(), max_batch_size=2)
        submitted = [_submit(b, rows([i, 0, 0])) for i in range(3)]
        results = await asyncio.gather(*(f for f, _ in submitted))
        assert b.executions == 2 and [a.batch_size for _, a in submitted] == [2, 2, 1]
        assert [float(r.outputs["probabilities"][0, 0]) for r in results] == [0.0, 1.0, 2.0]
    run(tmp_path, body)


def test_a_preferred_batch_size_is_sent_without_waiting_out_the_delay(tmp_path):
    async def body(make):
        b = make(echo(), max_queue_delay_us=10_000_000, preferred_batch_sizes=[2])
        submitted = [_submit(b, rows([0, 0, 0]))]
        await asyncio.sleep(0.05)                        # the batcher waits for company
        submitted.append(_submit(b, rows([1, 0, 0])))
        await asyncio.wait_for(asyncio.gather(*(f for f, _ in submitted)), 2.0)   # not 10 s
        assert b.executions == 1 and [a.batch_size for _, a in submitted] == [2, 2]
    run(tmp_path, body)


def test_requests_of_other_shapes_never_share_a_batch(tmp_path):
    async def body(make):
        b = make(identity())
        narrow, wide = rows([1, 2, 3]), rows([1, 2, 3, 4])
        (f1, a1), (f2, a2) = _submit(b, narrow), _submit(b, wide)
        r1, r2 = await asyncio.gather(f1, f2)
        assert b.executions == 2 and (a1.batch_size, a2.batch_size) == (1, 1)
        np.testing.assert_array_equal(r1.outputs["out"], narrow)
        np.testing.assert_array_equal(r2.outputs["out"], wide)
    run(tmp_path, body)


def test_a_model_without_a_batch_dimension_runs_one_request_at_a_time(tmp_path):
    async def body(make):
        model = onnx_model(tmp_path, "unbatched", unbatched(), model_config())
        assert not model.batchable and model.max_batch_size == 0
        b = make(None, model=model, max_batch_size=model.max_batch_size)
        xs = [np.array([1, 2, 3], np.float32), np.array([4, 5, 6], np.float32)]
        submitted = [_submit(b, x) for x in xs]
        results = await asyncio.gather(*(f for f, _ in submitted))
        assert b.executions == 2 and [a.batch_size for _, a in submitted] == [1, 1]
        for x, result in zip(xs, results):
            np.testing.assert_array_equal(result.outputs["probabilities"], x)
    run(tmp_path, body)


def test_a_full_queue_refuses_with_a_retry_pushback(tmp_path):
    async def body(make):
        b = make(echo(), max_queue_size=1)
        first, _ = _submit(b, rows([1, 2, 3]))
        with pytest.raises(GatewayError) as info:
            _submit(b, rows([4, 5, 6]))
        assert info.value.status is Status.RESOURCE_EXHAUSTED and info.value.retry_after_ms == 50
        assert info.value.message == f"model {b.model.served_by}: queue is full (1 request waiting)"
        np.testing.assert_array_equal((await first).outputs["probabilities"], rows([1, 2, 3]))
    run(tmp_path, body)


def test_close_finishes_what_is_queued_and_refuses_what_comes_after(tmp_path):
    async def body(make):
        b = make(echo(), max_queue_delay_us=10_000_000)
        submitted = [_submit(b, rows([i, 0, 0])) for i in range(3)]
        await b.close()
        assert all(f.done() and not f.exception() for f, _ in submitted)
        assert [float(f.result().outputs["probabilities"][0, 0]) for f, _ in submitted] == [0.0, 1.0, 2.0]
        with pytest.raises(GatewayError) as info:
            _submit(b, rows([1, 2, 3]))
        assert info.value.status is Status.UNAVAILABLE and "is being unloaded" in info.value.message
    run(tmp_path, body)


def test_a_request_whose_deadline_passed_in_the_queue_never_reaches_the_model(tmp_path):
    async def body(make):
        b = make(echo())
        (late, attempt), (live, _) = _submit(b, rows([1, 2, 3]), deadline_ns=time.monotonic_ns() - 1), \
            _submit(b, rows([4, 5, 6]))
        err = await _failure(late)
        assert err.status is Status.DEADLINE_EXCEEDED and "deadline passed after" in err.message
        np.testing.assert_array_equal((await live).outputs["probabilities"], rows([4, 5, 6]))
        assert (b.executions, b.executed_requests) == (1, 1) and attempt.t_compute_start_ns == 0
    run(tmp_path, body)


def test_a_cancelled_request_is_dropped_from_the_queue(tmp_path):
    async def body(make):
        b = make(echo())
        (gone, _), (kept, _) = _submit(b, rows([1, 2, 3])), _submit(b, rows([4, 5, 6]))
        gone.cancel()
        np.testing.assert_array_equal((await kept).outputs["probabilities"], rows([4, 5, 6]))
        assert (b.executions, b.executed_requests) == (1, 1)
    run(tmp_path, body)


def test_a_full_queue_first_drops_requests_whose_client_left_then_takes_the_new_one(tmp_path):
    """Under a deadline flood the queue fills with requests nobody waits for any more; while a
    batch runs they must not refuse live ones."""
    async def body(make):
        slow = FaultyModel(onnx_model(tmp_path, "slow", unbatched(), model_config()),
                           FaultInjector(FaultInjectionConfig(latency_ms=200)))
        b = make(None, model=slow, max_batch_size=0, max_queue_size=3)
        running, _ = _submit(b, np.array([0, 0, 0], np.float32))
        await asyncio.sleep(0.05)  # executing now: what follows waits in the queue
        assert b.in_flight == 1
        (gone, _), (late, _), (live, _) = (_submit(b, np.array([i, 0, 0], np.float32),
                                                   deadline_ns=time.monotonic_ns() + 10_000_000 if i == 2 else 0)
                                           for i in (1, 2, 3))
        gone.cancel()
        await asyncio.sleep(0.02)  # late's deadline (10 ms) passes in the queue
        assert b.queue_depth == 3
        new, _ = _submit(b, np.array([4, 0, 0], np.float32))  # the queue is full of 1 gone, 1 late
        assert b.queue_depth == 2
        err = await _failure(late)
        assert err.status is Status.DEADLINE_EXCEEDED and "in the queue" in err.message
        for future, value in ((running, 0), (live, 3), (new, 4)):
            assert float((await future).outputs["probabilities"][0]) == value
        assert b.executed_requests == 3
    run(tmp_path, body)


def test_an_execution_error_fails_every_request_of_the_batch_as_internal(tmp_path):
    async def body(make):
        b = make(echo("n"))
        futures = [_submit(b, rows([1, 2, 3, 4]))[0], _submit(b, rows([5, 6, 7, 8]))[0]]
        for future in futures:
            err = await _failure(future)
            assert err.status is Status.INTERNAL
            assert err.message.startswith(f"model {b.model.served_by}: inference failed: ")
        assert b.executions == 1
        np.testing.assert_array_equal((await _submit(b, rows([1, 2, 3]))[0]).outputs["probabilities"],
                                      rows([1, 2, 3]))          # the next batch is unaffected
    run(tmp_path, body)


def _sum_rows():
    """One row whatever it is given (onnxruntime infers the output as [1, 3])."""
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    return helper.make_graph(
        [helper.make_node("ReduceSum", ["features", "axes"], ["total"], keepdims=1)], "sum_rows",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch", 3])], [axes])


def test_outputs_without_one_row_per_input_row_fail_the_batch(tmp_path):
    async def body(make):
        # A config override that wrongly declares the output one row per input row
        model = onnx_model(tmp_path, "sum", _sum_rows(), model_config("outputs: [{name: total, shape: [-1, 3]}]"))
        assert model.batchable
        b = make(None, model=model)
        one = await _submit(b, rows([1, 2, 3]))[0]
        np.testing.assert_array_equal(one.outputs["total"], rows([1, 2, 3]))
        err = await _failure(_submit(b, rows([1, 2, 3], [4, 5, 6]))[0])
        assert err.status is Status.INTERNAL
        assert err.message == f"model {b.model.served_by}: output 'total' has shape [1, 3], not one row per input row"
    run(tmp_path, body)


class _Batches:
    def __init__(self):
        self.seen = []

    def observe_batch(self, feeds, outputs):
        self.seen.append((feeds["features"].copy(), outputs["probabilities"].copy()))


def test_the_head_and_the_observer_see_the_whole_batch_and_results_are_sliced(tmp_path):
    async def body(make):
        observer = _Batches()
        b = make(echo(), head=ClassifierHead("probabilities", False, ("a", "b", "c")), observer=observer)
        x1, x2 = rows([0.1, 0.7, 0.2]), rows([0.5, 0.2, 0.3], [0.2, 0.2, 0.6])
        r1, r2 = await asyncio.gather(_submit(b, x1)[0], _submit(b, x2)[0])
        np.testing.assert_array_equal(r1.confidence, np.array([0.7], np.float32))
        np.testing.assert_array_equal(r2.confidence, np.array([0.5, 0.6], np.float32))
        assert r1.classes.tolist() == [1] and r2.classes.tolist() == [0, 2]
        (feeds, outputs), = observer.seen
        np.testing.assert_array_equal(feeds, np.concatenate([x1, x2]))
        np.testing.assert_array_equal(outputs, np.concatenate([x1, x2]))
    run(tmp_path, body)


@pytest.mark.parametrize("instances", [1, 2])
def test_instance_count_executions_run_at_once(tmp_path, instances):
    async def body(make):
        slow = FaultyModel(onnx_model(tmp_path, "slow", unbatched(), model_config()),
                           FaultInjector(FaultInjectionConfig(latency_ms=250)))
        b = make(None, model=slow, max_batch_size=0, instance_count=instances)
        futures = [_submit(b, np.array([i, 0, 0], np.float32))[0] for i in range(2)]
        await asyncio.sleep(0.1)
        assert b.in_flight == instances
        await asyncio.gather(*futures)
        assert b.in_flight == 0 and b.executions == 2
    run(tmp_path, body)


@pytest.mark.parametrize("inline_below_us", [0, 10_000])
def test_a_fast_model_runs_on_the_loop_once_timed_and_answers_the_same(tmp_path, inline_below_us):
    async def body(make):
        b = make(echo(), max_queue_delay_us=0, inline_below_us=inline_below_us)
        for i in range(12):
            x = rows([i, 1, 2])
            np.testing.assert_array_equal((await _submit(b, x)[0]).outputs["probabilities"], x)
        assert b.executions == 12
        assert (b.inline_executions > 0) == (inline_below_us > 0)
        assert b.inline_executions <= 12 - ExecutionPlace.WARMUP_EXECUTIONS
    run(tmp_path, body)


@pytest.mark.parametrize("inline_below_us", [0, 10_000])
def test_an_answered_batch_is_not_kept_alive_by_the_batcher(tmp_path, inline_below_us):
    """The batcher's loop waits for the next batch with the last one's locals in scope: a large
    request's inputs and outputs must not stay resident until the model is called again."""
    async def body(make):
        b = make(echo(), max_queue_delay_us=0, inline_below_us=inline_below_us)
        for i in range(ExecutionPlace.WARMUP_EXECUTIONS + 2):   # the last ones inline where allowed
            x = rows([i, 1, 2])
            result = await _submit(b, x)[0]
            gone = [weakref.ref(x), weakref.ref(result.outputs["probabilities"])]
            del x, result
            await asyncio.sleep(0)                               # the batcher is waiting again
            gc.collect()
            assert [ref() for ref in gone] == [None, None], f"batch {i} still referenced"
        assert (b.inline_executions > 0) == (inline_below_us > 0)
    run(tmp_path, body)
