"""The assembler: a loaded model and its config become a servable version (policy, classifier
head, telemetry registration and batch observer, batcher), in-process on real sessions."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gateway.core.assembly import Assembler, AssemblyOptions, InvalidPolicy
from gateway.core.context import Attempt
from gateway.core.observers import Decisions
from gateway.policy.faults import FaultyModel
from gateway.telemetry import InputBinning, Telemetry
from tests.core.serving import LABELS, echo, model_config, onnx_model, request, rows


def assemble(tmp_path, body, *, options=AssemblyOptions(), telemetry=None, decisions=None):
    async def main():
        executor = ThreadPoolExecutor(2)
        assembler = Assembler(executor, options, observers=telemetry, decisions=decisions)
        built = []

        def build(name, graph, config=""):
            cfg = model_config(config)
            mv = assembler.build(onnx_model(tmp_path, name, graph, cfg), cfg)
            built.append(mv)
            return mv

        try:
            return await body(assembler, build)
        finally:
            for mv in built:
                await mv.batcher.close()
            executor.shutdown(wait=True)
    return asyncio.run(main())


async def _infer(mv, x):
    attempt = Attempt(mv.served_by, mv.telemetry_id, rows=x.shape[0])
    return await mv.batcher.submit(request(mv.name, x), attempt)


def test_a_classifier_gets_a_head_and_telemetry_registration(tmp_path):
    telemetry = Telemetry()

    async def body(assembler, build):
        mv = build("clf", echo(), LABELS + "classifier: {logits: true}\n"
                   "input_stats: {bins: 4, ranges: {features: [0, 1]}}\n"
                   "batching: {max_batch_size: 16, max_queue_size: 7}\ninstance_count: 2\n")
        assert (mv.name, mv.version, mv.served_by, mv.labels) == ("clf", "1", "clf@1", ("a", "b", "c"))
        assert (mv.head.output, mv.head.logits, mv.head.labels) == ("probabilities", True, ("a", "b", "c"))
        assert (mv.batcher.max_batch_size, mv.batcher.max_queue_size) == (16, 7)
        state = telemetry.model(mv.telemetry_id)
        assert mv.telemetry_id > 0 and (state.model, state.version) == ("clf", "1")
        assert state.labels == ["a", "b", "c"] and state.logits and state.confidence is not None
        assert state.binning == InputBinning(4, 1024, {"features": (0.0, 1.0)})
        assert list(state.features) == ["features"] and state.features["features"].n_features == 3
        result = await _infer(mv, rows([0.0, 0.0, 2.0]))          # the batch observer folds the batch
        assert result.classes.tolist() == [2]
        (conf,) = [c for c in telemetry.confidence_stats() if c.model == "clf"]
        assert conf.rows == 1
        (fs,) = [f for f in telemetry.feature_stats() if f.model == "clf"]
        assert fs.count.tolist() == [1, 1, 1]
    assemble(tmp_path, body, telemetry=telemetry)


def test_a_model_that_is_not_a_classifier_has_no_head_and_a_dynamic_width_waits_for_data(tmp_path):
    telemetry = Telemetry()

    async def body(assembler, build):
        mv = build("plain", echo("n"))
        assert mv.head is None and mv.labels == ()
        state = telemetry.model(mv.telemetry_id)
        assert state.confidence is None and state.features == {}    # the width is known once data comes
        await _infer(mv, rows([1, 2, 3]))
        assert state.features["features"].n_features == 3
        assert (await _infer(mv, rows([1, 2, 3]))).confidence is None
    assemble(tmp_path, body, telemetry=telemetry)


def test_without_telemetry_versions_have_id_zero(tmp_path):
    async def body(assembler, build):
        assert build("a", echo(), LABELS).telemetry_id == 0
    assemble(tmp_path, body)


def test_batching_off_runs_each_request_alone(tmp_path):
    async def body(assembler, build):
        mv = build("echo", echo())
        assert mv.model.max_batch_size == 32 and mv.batcher.max_batch_size == 1
        await asyncio.gather(_infer(mv, rows([1, 2, 3])), _infer(mv, rows([4, 5, 6])))
        assert mv.batcher.executions == 2
    assemble(tmp_path, body, options=AssemblyOptions(batching=False))


def test_a_policy_that_does_not_fit_the_model_is_invalid(tmp_path):
    async def body(assembler, build):
        config = LABELS + "policy: {fallback: {chain: [{static: {probabilities: [0.5, 0.5]}}]}}\n"
        with pytest.raises(InvalidPolicy, match=r"policy\.fallback\.chain\.0\.static: .*shape \[2\]"):
            build("echo", echo(), config)
        model = onnx_model(tmp_path, "other", echo(), model_config(LABELS))
        with pytest.raises(InvalidPolicy, match="names output 'nope'"):
            assembler.policy("other@1", model_config("policy: {fallback: {chain: [{static: {nope: 1}}]}}"), model)
    assemble(tmp_path, body)


def test_breaker_transitions_become_decisions(tmp_path):
    seen = []

    async def body(assembler, build):
        mv = build("echo", echo(), "policy: {circuit_breaker: {enabled: true, sliding_window_size: 1,"
                   " minimum_number_of_calls: 1}}\n")
        breaker = mv.policy.breaker
        assert breaker.try_acquire()
        breaker.on_error(0.001)
        assert seen == [(None, "circuit_breaker.transition", {"model": "echo@1", "from": "closed", "to": "open"})]
    assemble(tmp_path, body, decisions=Decisions((lambda r, e, a: seen.append((r, e, a)),)))


def test_fault_injection_wraps_the_model_and_keeps_executions_off_the_loop(tmp_path):
    async def body(assembler, build):
        mv = build("echo", echo(), "faults: {nan_rate: 1.0}\n")
        assert isinstance(mv.model, FaultyModel) and mv.model.faults.config.nan_rate == 1.0
        for _ in range(12):
            result = await _infer(mv, rows([1, 2, 3]))
            assert np.isnan(result.outputs["probabilities"]).all()
        assert mv.batcher.inline_executions == 0
    assemble(tmp_path, body, options=AssemblyOptions(allow_fault_injection=True, inline_execution_below_us=10_000))
