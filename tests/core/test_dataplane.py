"""The data plane, the core's whole API for adapters, in-process: request observers hear every
answered request once (whatever the outcome), health, model metadata and statistics in plain types."""
from __future__ import annotations

import asyncio
import logging
import math
import re
import time

import numpy as np
import pytest

from gateway.api import BatchingInfo, GatewayError, ModelMetadata, ModelSummary, Status, TensorSpec, VersionState
from gateway.api.stats import Statistics
from gateway.core.context import NO_ATTEMPT
from gateway.core.registry import ModelEntry
from gateway.policy.reasons import FallbackReason
from gateway.telemetry import Telemetry
from tests.core.serving import LABELS, Serving, echo, request, rows

F32 = np.dtype("<f4")
MS = 1_000_000


def run(tmp_path, body, **options):
    async def main():
        s = Serving(tmp_path, **options)
        try:
            return await body(s)
        finally:
            await s.close()
    return asyncio.run(main())


async def _error(coro) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await coro
    return info.value


def test_every_answered_request_is_observed_once_with_its_outcome(tmp_path):
    async def body(s):
        mv = s.add("echo", echo(), LABELS)
        s.add("picky", echo("n"), LABELS + "policy: {fallback: {chain: [{static: {probabilities: [1, 0, 0]}}]}}\n")
        plane = s.dataplane
        ok = await plane.infer(request(request_id="ok"))
        degraded = await plane.infer(request("picky", rows([1, 2, 3, 4]), request_id="degraded"))
        errors = {
            "missing": await _error(plane.infer(request("nope", request_id="missing"))),
            "bad": await _error(plane.infer(request(x=np.zeros((1, 3)), request_id="bad"))),
            # a list where an array belongs: a bug upstream, not the client's fault
            "bug": await _error(plane.infer(request(x=[[0.1, 0.7, 0.2]], request_id="bug"))),
        }
        assert errors["missing"].status is Status.NOT_FOUND
        assert errors["bad"].status is Status.INVALID_ARGUMENT
        assert errors["bug"].status is Status.INTERNAL
        assert errors["bug"].message.startswith("internal error: AttributeError: ")
        assert plane.in_flight == 0

        seen = {r.request_id: (r, attempt, status, response, code, t) for r, attempt, status, response, code, t
                in s.answers.seen}
        assert len(s.answers.seen) == 5 and set(seen) == {"ok", "degraded", "missing", "bad", "bug"}
        _, attempt, status, response, code, t = seen["ok"]
        assert (status, response, code) == (Status.OK, ok, 0)
        assert attempt.served_by == "echo@1" and attempt.telemetry_id == mv.telemetry_id
        assert attempt.t_compute_end_ns <= t
        _, attempt, status, response, code, _ = seen["degraded"]
        assert (status, response, code) == (Status.OK, degraded, FallbackReason.ERROR)
        assert response.served_by == "static" and attempt.served_by == "picky@1"
        assert attempt.t_compute_start_ns > 0                     # the attempt that reached the model
        _, attempt, status, response, code, _ = seen["missing"]
        assert (attempt, status, response, code) == (NO_ATTEMPT, Status.NOT_FOUND, None, 0)
        _, attempt, status, response, _, _ = seen["bad"]
        assert (attempt.served_by, attempt.t_enqueued_ns, status, response) == \
            ("echo@1", 0, Status.INVALID_ARGUMENT, None)
        assert seen["bug"][2] is Status.INTERNAL and seen["bug"][3] is None
    run(tmp_path, body)


def test_a_policy_rejection_is_observed_with_its_reason_code(tmp_path):
    async def body(s):
        s.add("picky", echo("n"), LABELS + "policy: {deadlines: {default_timeout_ms: 1000}}\n")
        err = await _error(s.dataplane.infer(request("picky", rows([1, 2, 3, 4]))))
        assert err.status is Status.UNAVAILABLE
        (_, attempt, status, response, code, _), = s.answers.seen
        assert (status, response, code) == (Status.UNAVAILABLE, None, FallbackReason.ERROR)
        assert attempt.served_by == "picky@1"
    run(tmp_path, body)


def test_an_answer_no_model_produced_carries_the_last_attempt_that_reached_a_model(tmp_path):
    async def body(s):
        s.add("picky", echo("n"), LABELS + "policy: {fallback: {chain: [{model: second},"
              " {static: {probabilities: [1, 0, 0]}}]}}\n")
        second = s.add("second", echo("n"), LABELS)
        response = await s.dataplane.infer(request("picky", rows([1, 2, 3, 4])))
        assert response.served_by == "static"
        (_, attempt, _, _, code, _), = s.answers.seen
        assert (attempt.served_by, attempt.telemetry_id) == ("second@1", second.telemetry_id)
        assert attempt.t_compute_start_ns > 0 and code == FallbackReason.ERROR
    run(tmp_path, body, telemetry=Telemetry())


def test_a_cancelled_request_is_observed_as_cancelled(tmp_path):
    async def body(s):
        s.add("slow", echo(), LABELS + "faults: {latency_ms: 200}\n")
        task = asyncio.ensure_future(s.dataplane.infer(request("slow")))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (_, _, status, response, _, _), = s.answers.seen
        assert (status, response) == (Status.CANCELLED, None) and s.dataplane.in_flight == 0
    run(tmp_path, body, allow_fault_injection=True)


def test_a_request_its_protocol_cancels_at_its_deadline_ran_out_and_sooner_was_cancelled(tmp_path):
    """gRPC cancels the handler both when the client cancels and when its deadline fires."""
    async def body(s):
        s.add("slow", echo(), LABELS + "faults: {latency_ms: 300}\n")
        now = time.monotonic_ns()
        at_deadline = asyncio.ensure_future(s.dataplane.infer(request(
            "slow", request_id="at", t_received_ns=now, deadline_ns=now + 50 * MS)))
        early = asyncio.ensure_future(s.dataplane.infer(request(
            "slow", request_id="early", t_received_ns=now, deadline_ns=now + 10_000 * MS)))
        await asyncio.sleep(0.05 - 0.02)  # within the slack (25 ms) before the deadline
        for task in (at_deadline, early):
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        seen = {r.request_id: (status, response) for r, _, status, response, _, _ in s.answers.seen}
        assert seen == {"at": (Status.DEADLINE_EXCEEDED, None), "early": (Status.CANCELLED, None)}
    run(tmp_path, body, allow_fault_injection=True)


def test_an_answer_ready_after_the_deadline_is_deadline_exceeded_not_ok(tmp_path):
    async def body(s):
        s.add("slow", echo(), LABELS + "faults: {latency_ms: 100}\n")
        now = time.monotonic_ns()
        err = await _error(s.dataplane.infer(request("slow", t_received_ns=now, deadline_ns=now + 30 * MS)))
        assert err.status is Status.DEADLINE_EXCEEDED
        assert re.fullmatch(r"deadline passed while the request was served: slow@1 answered \d+\.\d ms after it",
                            err.message), err.message
        (_, attempt, status, response, _, _), = s.answers.seen
        assert (status, response) == (Status.DEADLINE_EXCEEDED, None)
        assert attempt.t_compute_end_ns - attempt.t_compute_start_ns >= 100 * MS  # it did run, late
    run(tmp_path, body, allow_fault_injection=True)


def test_request_ids_and_receive_times_are_filled_in_when_missing(tmp_path):
    async def body(s):
        s.add("echo", echo(), LABELS)
        response = await s.dataplane.infer(request(request_id="", t_received_ns=0))
        (r, *_), = s.answers.seen
        assert len(r.request_id) == 32 and response.request_id == r.request_id and r.t_received_ns > 0
        await s.dataplane.infer(request(request_id="mine", t_received_ns=5))
        assert (s.answers.seen[1][0].request_id, s.answers.seen[1][0].t_received_ns) == ("mine", 5)
    run(tmp_path, body)


class _Raising:
    def on_answer(self, *args):
        raise RuntimeError("observer broke")


def test_a_raising_observer_does_not_change_the_answer(tmp_path, caplog):
    async def body(s):
        s.add("echo", echo(), LABELS)
        with caplog.at_level(logging.ERROR, logger="gateway.core"):
            response = await s.dataplane.infer(request())
            err = await _error(s.dataplane.infer(request("nope")))
        np.testing.assert_array_equal(response.outputs["probabilities"], rows([0.1, 0.7, 0.2]))
        assert err.status is Status.NOT_FOUND                        # not INTERNAL
        assert len(s.answers.seen) == 2                              # the next observer still heard both
        failed = [r for r in caplog.records if r.getMessage().startswith("request observer <")]
        assert len(failed) == 2 and "observer broke" in failed[0].exc_text
    run(tmp_path, body, observers=(_Raising(),))


def test_readiness_follows_accepting_and_loaded_models(tmp_path):
    async def body(s):
        plane = s.dataplane
        assert plane.live()
        assert plane.ready() == (False, "not ready: starting or draining")
        plane.set_accepting(True)
        assert plane.ready() == (False, "not ready: no model loaded")
        s.registry.put(ModelEntry("broken", {}, {"1": "bad file"}))
        assert plane.ready() == (False, "not ready: no model loaded")
        s.add("echo", echo(), LABELS)
        assert plane.ready() == (True, "ready")
        plane.set_accepting(False)                                   # draining
        assert plane.ready() == (False, "not ready: starting or draining")
        assert plane.model_ready("echo") and plane.model_ready("echo", "1")
        assert not plane.model_ready("echo", "2") and not plane.model_ready("nope")
        assert not plane.model_ready("broken")
    run(tmp_path, body)


def test_repository_index_metadata_and_version_states_in_plain_types(tmp_path):
    async def body(s):
        s.add("echo", echo(), LABELS, version="2")
        s.add("echo", echo(), LABELS + "policy:\n  circuit_breaker: {enabled: true}\n"
              "  admission: {max_in_flight: 8}\n", version="10")
        s.registry.put(ModelEntry("broken", {}, {"1": "bad file"}))
        plane = s.dataplane
        assert plane.repository_index() == [
            ModelSummary("broken", (), "", "UNAVAILABLE", "1: bad file", ""),
            ModelSummary("echo", ("2", "10"), "10", "READY", "", "CPUExecutionProvider"),
        ]
        features = TensorSpec("features", F32, (-1, 3))
        probabilities = TensorSpec("probabilities", F32, (-1, 3))
        assert plane.model_metadata("echo") == ModelMetadata(
            "echo", "10", ("2", "10"), "onnxruntime", "CPUExecutionProvider", (features,), (probabilities,),
            32, ("a", "b", "c"), "READY", BatchingInfo(500, (), 1024), 1)
        assert plane.model_metadata("echo", "2").version == "2"
        assert _raises(plane.model_metadata, "nope").status is Status.NOT_FOUND
        assert _raises(plane.model_metadata, "echo", "3").status is Status.NOT_FOUND
        assert _raises(plane.model_metadata, "broken").status is Status.UNAVAILABLE
        assert plane.version_states() == [VersionState("echo", "2", 0, None, None),
                                          VersionState("echo", "10", 0, "closed", 8)]
    run(tmp_path, body)


def _raises(call, *args) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        call(*args)
    return info.value


def test_statistics_without_telemetry_is_a_failed_precondition(tmp_path):
    async def body(s):
        err = await _error(s.dataplane.statistics(10.0))
        assert err.status is Status.FAILED_PRECONDITION and "telemetry is disabled" in err.message
    run(tmp_path, body)


def test_statistics_come_from_the_source_and_filter_by_model(tmp_path):
    telemetry = Telemetry()

    def statistics(window_s: float) -> Statistics:
        telemetry.flush()
        return Statistics(telemetry.snapshot(window_s), telemetry.ring_drops)

    async def body(s):
        s.add("echo", echo(), LABELS)
        s.add("other", echo(), LABELS)
        for _ in range(3):
            await s.dataplane.infer(request())
        stats = await s.dataplane.statistics(10.0)
        # (the requests that named no loaded version are telemetry id 0: exported, not a model here)
        assert {m.model for m in stats.models} == {"echo", "other"} and stats.ring_drops == 0
        only = await s.dataplane.statistics(10.0, "echo")
        (echo_stats,) = only.models
        assert (echo_stats.model, echo_stats.version, echo_stats.requests) == ("echo", "1", 3)
        assert echo_stats.latency.count == 3 and echo_stats.mean_batch_size == 1.0
        assert abs(echo_stats.mean_confidence - 0.7) < 1e-6
    run(tmp_path, body, telemetry=telemetry, observers=(telemetry.recorder,), statistics=statistics)


def test_statistics_refuse_a_window_out_of_range_and_an_unknown_model(tmp_path):
    telemetry = Telemetry()

    def statistics(window_s: float) -> Statistics:
        return Statistics(telemetry.snapshot(window_s), telemetry.ring_drops)

    async def body(s):
        s.add("echo", echo(), LABELS)
        for window_s, shown in ((0.0, "got 0"), (-1.0, "got -1"), (301.0, "got 301"), (math.nan, "got nan"),
                                (math.inf, "got inf")):
            err = await _error(s.dataplane.statistics(window_s))
            assert err.status is Status.INVALID_ARGUMENT and err.message == \
                f"window_s must be more than 0 and at most 300 seconds, {shown}"
        err = await _error(s.dataplane.statistics(10.0, "nope"))
        assert err.status is Status.NOT_FOUND and "model 'nope' not found (models: echo)" in err.message
        s.registry.put(ModelEntry("broken", {}, {"1": "not an onnx file"}))   # known, nothing loaded
        assert (await s.dataplane.statistics(0.5, "broken")).models == []
        assert [m.model for m in (await s.dataplane.statistics(300, "echo")).models] == ["echo"]
    run(tmp_path, body, telemetry=telemetry, observers=(telemetry.recorder,), statistics=statistics)


# -- payload bytes in flight ---------------------------------------------------------------------
async def _settle(plane, in_flight: int) -> None:
    """Until ``in_flight`` requests are inside the data plane (bounded: a few hundred loop turns)."""
    for _ in range(500):
        if plane.in_flight == in_flight:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"{plane.in_flight} requests in flight, expected {in_flight}")


def test_payload_bytes_in_flight_are_bounded_and_every_answer_releases_them(tmp_path):
    async def body(s):
        s.add("slow", echo(), LABELS + "faults: {latency_ms: 300}\n")
        s.add("echo", echo(), LABELS)
        plane = s.dataplane
        plane.max_inflight_bytes = 3000
        running = [asyncio.ensure_future(plane.infer(request("slow", payload_bytes=1000, request_id=f"r{i}")))
                   for i in range(3)]
        await _settle(plane, 3)
        assert plane.inflight_bytes == 3000                           # the bound itself is admitted
        err = await _error(plane.infer(request(payload_bytes=1, request_id="over")))
        assert err.status is Status.RESOURCE_EXHAUSTED and err.retry_after_ms == 100
        assert err.message == ("3000 bytes of request payload are in flight and this request's 1 would pass "
                               "max_inflight_bytes (3000); retry in 100 ms")
        assert plane.inflight_bytes == 3000 and plane.in_flight == 3
        for response in await asyncio.gather(*running):
            assert response.served_by == "slow@1"
        assert plane.inflight_bytes == 0
        # every other kind of answer releases what it was admitted with, and counts nothing twice
        await plane.infer(request(payload_bytes=3000, request_id="ok"))
        for bad in (request("nope", payload_bytes=3000), request(x=np.zeros((1, 4)), payload_bytes=3000),
                    request(x=[[0.1, 0.7, 0.2]], payload_bytes=3000)):
            await _error(plane.infer(bad))
            assert plane.inflight_bytes == 0
        cancelled = asyncio.ensure_future(plane.infer(request("slow", payload_bytes=3000, request_id="gone")))
        await _settle(plane, 1)
        assert plane.inflight_bytes == 3000
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert (plane.inflight_bytes, plane.in_flight) == (0, 0)
        statuses = {r.request_id: status for r, _, status, *_ in s.answers.seen}
        assert statuses["over"] is Status.RESOURCE_EXHAUSTED and statuses["gone"] is Status.CANCELLED
        assert len(s.answers.seen) == 9                               # each request observed once
        assert plane.large_payload_bytes == 0                         # none of them was large
    run(tmp_path, body, allow_fault_injection=True)


def test_without_a_bound_bytes_are_counted_and_nothing_is_refused(tmp_path):
    async def body(s):
        s.add("slow", echo(), LABELS + "faults: {latency_ms: 200}\n")
        plane = s.dataplane
        assert plane.max_inflight_bytes == 0
        running = [asyncio.ensure_future(plane.infer(request("slow", payload_bytes=1 << 40))) for _ in range(3)]
        await _settle(plane, 3)
        assert plane.inflight_bytes == 3 << 40
        await asyncio.gather(*running)
        assert plane.inflight_bytes == 0
    run(tmp_path, body, allow_fault_injection=True)


def test_the_retry_delay_follows_how_long_large_requests_take(tmp_path):
    """Refused for bytes, a client is told to come back after about one large request's time in
    the gateway (a moving average, 100 ms before any): here at least the injected 300 ms pull it up."""
    large = 2 << 20

    async def body(s):
        s.add("slow", echo(), LABELS + "faults: {latency_ms: 300}\n")
        s.add("picky", echo("n"), LABELS)
        plane = s.dataplane
        plane.max_inflight_bytes = 2 * large
        await plane.infer(request("slow", payload_bytes=large))       # held >= 300 ms: 100 -> >= 150
        await _error(plane.infer(request("picky", rows([1, 2, 3, 4]), payload_bytes=large)))  # INTERNAL
        assert (plane.large_payload_bytes, plane.large_failed_bytes) == (2 * large, large)
        running = [asyncio.ensure_future(plane.infer(request("slow", payload_bytes=large))) for _ in range(2)]
        await _settle(plane, 2)
        err = await _error(plane.infer(request("slow", payload_bytes=large)))
        assert err.status is Status.RESOURCE_EXHAUSTED and 150 <= err.retry_after_ms <= 5000
        assert err.message.endswith(f"retry in {err.retry_after_ms} ms")
        await asyncio.gather(*running)
        # a refused large request is counted too (its bytes were received and are now freed)
        assert (plane.large_payload_bytes, plane.large_failed_bytes) == (5 * large, 2 * large)
        assert plane.inflight_bytes == 0
    run(tmp_path, body, allow_fault_injection=True)


def test_feedback_joins_through_the_sink_and_counts_malformed_labels_invalid(tmp_path):
    from gateway.api.feedback import MAX_LABELS_PER_CALL, FeedbackLabel, FeedbackResult
    from gateway.core.dataplane import DataPlane
    from gateway.monitoring.labels import PredictionStore

    async def body(s):
        off = await _error(s.dataplane.feedback([FeedbackLabel("a", index=0)]))
        assert off.status is Status.FAILED_PRECONDITION and "feedback_store_entries=0" in off.message
        store = PredictionStore(capacity=10, ttl_s=60.0)
        store.put_class("a", "m", "1", 0, classes=2)
        store.put_class("b", "m", "1", 1, classes=2)
        plane = DataPlane(s.registry, feedback=store)
        labels = [FeedbackLabel("a", index=0), FeedbackLabel("", index=0), FeedbackLabel("b"),
                  FeedbackLabel("b", index=1, label="x"), FeedbackLabel("zz", index=0), FeedbackLabel("a", index=0)]
        assert await plane.feedback(labels) == FeedbackResult(accepted=1, unknown=1, duplicate=1, invalid=3)
        assert await plane.feedback([FeedbackLabel("b", index=1)] * 2500) == FeedbackResult(accepted=1, duplicate=2499)
        too_many = await _error(plane.feedback([FeedbackLabel("a", index=0)] * (MAX_LABELS_PER_CALL + 1)))
        assert too_many.status is Status.INVALID_ARGUMENT and str(MAX_LABELS_PER_CALL) in too_many.message
    run(tmp_path, body)
