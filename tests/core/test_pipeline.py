"""The order of the stages for one request (route → validate → deadline → breaker → admission →
attempt → guard → fallback walk), in-process: real onnxruntime sessions assembled into versions,
a registry and a pipeline built by hand, decisions collected in a list."""
from __future__ import annotations

import asyncio
import re
import time

import numpy as np
import pytest

from gateway.api import GatewayError, Status
from gateway.core.context import Attempt
from gateway.policy.breaker import BreakerState
from gateway.policy.reasons import FallbackReason
from gateway.telemetry import Telemetry
from tests.core.serving import LABELS, Serving, echo, linear, request, rows

PRIOR = "{static: {probabilities: [0.6, 0.3, 0.1]}}"
# Opens after one failed call; stays open for a minute.
BREAKER = ("  circuit_breaker: {enabled: true, sliding_window_size: 1, minimum_number_of_calls: 1,"
           " wait_duration_in_open_state_ms: 60000}\n")
WIDE = rows([0.1, 0.7, 0.2, 0.5])  # four features: the "picky" model (declared width n) fails on it


def run(tmp_path, body, **options):
    async def main():
        s = Serving(tmp_path, **options)
        try:
            return await body(s)
        finally:
            await s.close()
    return asyncio.run(main())


def picky(s: Serving, policy: str = "", name: str = "picky"):
    """features[batch, n] @ I3: answers three features, fails inside onnxruntime on any other width."""
    return s.add(name, echo("n"), LABELS + ("policy:\n" + policy if policy else ""))


async def _error(coro) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await coro
    return info.value


def test_a_plain_version_is_served_straight_through_its_batcher(tmp_path):
    async def body(s):
        mv = s.add("echo", echo(), LABELS)
        assert mv.policy.passthrough
        attempts: list[Attempt] = []
        served = await s.pipeline.run(request(x=rows([0.1, 0.7, 0.2], [0.5, 0.2, 0.3])), attempts)
        response = served.response
        np.testing.assert_array_equal(response.outputs["probabilities"], rows([0.1, 0.7, 0.2], [0.5, 0.2, 0.3]))
        assert (response.served_by, response.model, response.version, response.degraded) == \
            ("echo@1", "echo", "1", False)
        np.testing.assert_array_equal(response.confidence, np.array([0.7, 0.5], np.float32))
        assert response.predicted_label == ["b", "a"]
        (attempt,) = attempts
        assert served.attempt is attempt and served.fallback_code == 0
        assert (attempt.served_by, attempt.rows, attempt.batch_size) == ("echo@1", 2, 2)
        assert 0 < attempt.t_enqueued_ns <= attempt.t_batch_ns <= attempt.t_compute_start_ns \
            <= attempt.t_compute_end_ns
        assert s.events() == []
    run(tmp_path, body)


def test_validation_errors_never_touch_the_breaker_admission_or_chain(tmp_path):
    async def body(s):
        mv = s.add("echo", echo(), LABELS + "policy:\n" + BREAKER + "  admission: {max_in_flight: 4}\n"
                   f"  fallback: {{chain: [{PRIOR}]}}\n")
        policy = mv.policy
        bad = [
            request(x=np.zeros((1, 3), np.float64)),                       # wrong dtype
            request(x=np.zeros((1, 4), np.float32)),                       # wrong width
            request(x=np.zeros((0, 3), np.float32)),                       # no rows
            request(x=rows([0.1, 0.7, 0.2]), output_names=("nope",)),      # unknown output
        ]
        for r in bad:
            err = await _error(s.pipeline.run(r, []))
            assert err.status is Status.INVALID_ARGUMENT
        assert policy.breaker.state is BreakerState.CLOSED
        assert policy.breaker.rates()["calls"] == 0 and policy.breaker.not_permitted == 0
        assert (policy.admission.in_flight, policy.admission.shed) == (0, 0)
        assert mv.batcher.executions == 0
        assert s.events() == [] and not policy.fallbacks and not policy.rejections
        await s.pipeline.run(request(), [])                                 # a good call is counted
        assert policy.breaker.rates()["calls"] == 1 and mv.batcher.executions == 1
    run(tmp_path, body)


def test_unknown_models_and_versions_walk_no_chain(tmp_path):
    async def body(s):
        s.add("echo", echo(), LABELS + f"policy:\n  fallback: {{chain: [{PRIOR}]}}\n")
        attempts: list[Attempt] = []
        err = await _error(s.pipeline.run(request("nope"), attempts))
        assert err.status is Status.NOT_FOUND and "model 'nope' not found (models: echo)" in err.message
        err = await _error(s.pipeline.run(request("echo", version="7"), attempts))
        assert err.status is Status.NOT_FOUND and "has no version '7' (loaded versions: 1)" in err.message
        assert attempts == [] and s.events() == []
    run(tmp_path, body)


def test_a_passed_deadline_never_reaches_the_model(tmp_path):
    async def body(s):
        plain = s.add("plain", echo(), LABELS)
        guarded = s.add("guarded", echo(), LABELS + "policy:\n" + BREAKER + f"  fallback: {{chain: [{PRIOR}]}}\n")
        past = time.monotonic_ns() - 1
        attempts: list[Attempt] = []
        err = await _error(s.pipeline.run(request("plain", deadline_ns=past), attempts))
        assert err.status is Status.DEADLINE_EXCEEDED and "deadline passed before queueing" in err.message
        assert attempts[0].t_enqueued_ns == 0 and plain.batcher.executions == 0

        attempts = []
        err = await _error(s.pipeline.run(request("guarded", deadline_ns=past), attempts))
        assert err.status is Status.DEADLINE_EXCEEDED
        assert "deadline passed before the request was queued" in err.message
        assert err.fallback_code == FallbackReason.TIMEOUT
        assert attempts[0].t_enqueued_ns == 0 and guarded.batcher.executions == 0
        breaker = guarded.policy.breaker
        assert breaker.rates()["calls"] == 0 and breaker.not_permitted == 0    # never asked
        # The static step could answer, but the client's deadline has passed: no walk.
        assert s.events() == ["fallback.triggered", "fallback.rejected"]
        assert guarded.policy.rejections == {"timeout": 1} and not guarded.policy.fallbacks
    run(tmp_path, body)


def test_an_open_breaker_sheds_before_admission_is_asked(tmp_path):
    async def body(s):
        mv = picky(s, BREAKER + "  admission: {max_in_flight: 1, retry_after_ms: 70}\n")
        policy = mv.policy
        err = await _error(s.pipeline.run(request("picky", WIDE), []))   # fails in onnxruntime: opens
        assert err.status is Status.UNAVAILABLE and "inference failed" in err.message
        assert err.fallback_code == FallbackReason.ERROR and policy.breaker.state is BreakerState.OPEN
        assert policy.admission.try_acquire(0)   # as a request admitted and not yet answered: full
        err = await _error(s.pipeline.run(request("picky"), []))
        assert err.status is Status.UNAVAILABLE and "circuit breaker is open" in err.message
        assert err.fallback_code == FallbackReason.CIRCUIT_OPEN and 0 < err.retry_after_ms <= 60_000
        assert policy.admission.shed == 0 and policy.admission.in_flight == 1
        assert policy.rejections == {"error": 1, "circuit_open": 1}
        # The same full admission behind a closed breaker sheds, and the breaker records nothing.
        other = picky(s, BREAKER + "  admission: {max_in_flight: 1, retry_after_ms: 70}\n", name="other")
        assert other.policy.admission.try_acquire(0)
        err = await _error(s.pipeline.run(request("other"), []))
        assert err.status is Status.RESOURCE_EXHAUSTED and err.fallback_code == FallbackReason.OVERLOADED
        assert err.retry_after_ms == 70 and "overloaded (1 in flight, limit 1, 0 queued)" in err.message
        assert other.policy.admission.shed == 1 and other.policy.breaker.rates()["calls"] == 0
        assert other.batcher.executions == 0
    run(tmp_path, body)


def test_a_call_shed_by_admission_gives_its_half_open_probe_back(tmp_path):
    async def body(s):
        mv = picky(s, "  circuit_breaker: {enabled: true, sliding_window_size: 1, minimum_number_of_calls: 1,"
                   " wait_duration_in_open_state_ms: 1, permitted_number_of_calls_in_half_open_state: 1}\n"
                   "  admission: {max_in_flight: 1}\n")
        policy = mv.policy
        await _error(s.pipeline.run(request("picky", WIDE), []))
        assert policy.breaker.state is BreakerState.OPEN
        await asyncio.sleep(0.01)                               # the open state's wait is over
        assert policy.admission.try_acquire(0)
        err = await _error(s.pipeline.run(request("picky"), []))
        assert err.status is Status.RESOURCE_EXHAUSTED          # took the only probe, then shed
        assert policy.breaker.state is BreakerState.HALF_OPEN
        policy.admission.release(None, 0)
        served = await s.pipeline.run(request("picky"), [])     # the probe was given back
        assert served.response.served_by == "picky@1" and policy.breaker.state is BreakerState.CLOSED
    run(tmp_path, body)


def test_primary_and_fallback_attempts_keep_their_own_timelines(tmp_path):
    telemetry = Telemetry()

    async def body(s):
        primary = picky(s, "  fallback: {chain: [{model: wide}]}\n")
        wide = s.add("wide", linear(np.eye(4)[:, :3]), LABELS)
        assert primary.telemetry_id != wide.telemetry_id
        attempts: list[Attempt] = []
        served = await s.pipeline.run(request("picky", WIDE), attempts)
        first, second = attempts
        assert first is not second
        assert (first.served_by, first.telemetry_id) == ("picky@1", primary.telemetry_id)
        assert (second.served_by, second.telemetry_id) == ("wide@1", wide.telemetry_id)
        assert served.attempt is second and served.fallback_code == FallbackReason.ERROR
        # The primary reached its model and failed there; the fallback's timeline came after it.
        assert 0 < first.t_enqueued_ns <= first.t_compute_start_ns <= first.t_compute_end_ns
        assert first.t_compute_end_ns <= second.t_enqueued_ns <= second.t_compute_start_ns \
            <= second.t_compute_end_ns
        assert first.rows == second.rows == 1
        response = served.response
        assert (response.model, response.version, response.served_by) == ("picky", "1", "wide@1")
        assert response.degraded and response.fallback_reason == "error"
        np.testing.assert_array_equal(response.outputs["probabilities"], rows([0.1, 0.7, 0.2]))
        assert response.predicted_label == ["b"]
        assert primary.batcher.executions == 1 and wide.batcher.executions == 1
    run(tmp_path, body, telemetry=telemetry)


def test_cache_and_static_answers_are_degraded_with_the_reason_and_decisions_come_in_order(tmp_path):
    async def body(s):
        mv = picky(s, BREAKER + f"  fallback: {{chain: [{{cache: {{max_entries: 8}}}}, {PRIOR}]}}\n")
        policy = mv.policy
        first = (await s.pipeline.run(request("picky", request_id="r1"), [])).response
        assert not first.degraded and len(policy.cache) == 1
        first.outputs["probabilities"][:] = 0            # what the client got is not what was cached

        served = await s.pipeline.run(request("picky", WIDE, request_id="r2"), [])
        static = served.response
        assert (static.served_by, static.degraded, static.fallback_reason) == ("static", True, "error")
        assert served.attempt is None and served.fallback_code == FallbackReason.ERROR
        np.testing.assert_allclose(static.outputs["probabilities"], [[0.6, 0.3, 0.1]])
        np.testing.assert_allclose(static.confidence, [0.6])
        assert static.predicted_label == ["a"]
        assert policy.breaker.state is BreakerState.OPEN
        assert [(rid, event) for rid, event, _ in s.decisions] == [
            (None, "circuit_breaker.transition"), ("r2", "fallback.triggered"), ("r2", "fallback.step_missed"),
            ("r2", "fallback.answered")]
        transition, triggered, missed, answered = (a for _, _, a in s.decisions)
        assert transition == {"model": "picky@1", "from": "closed", "to": "open"}
        assert (triggered["model"], triggered["reason"]) == ("picky@1", "error")
        assert triggered["error"].startswith("model picky@1: inference failed: ")
        assert missed == {"model": "picky@1", "step": 0, "kind": "cache"}
        assert answered == {"model": "picky@1", "reason": "error", "step": 1, "served_by": "static"}
        del s.decisions[:]

        cached = (await s.pipeline.run(request("picky", request_id="r3"), [])).response
        assert (cached.served_by, cached.fallback_reason, cached.model) == ("cache", "circuit_open", "picky")
        np.testing.assert_array_equal(cached.outputs["probabilities"], rows([0.1, 0.7, 0.2]))
        np.testing.assert_array_equal(cached.confidence, np.array([0.7], np.float32))
        assert cached.predicted_label == ["b"]
        assert s.events() == ["fallback.triggered", "fallback.answered"]
        del s.decisions[:]

        two = rows([0.3, 0.3, 0.4], [0.9, 0.05, 0.05])                # not cached: the prior per row
        prior = (await s.pipeline.run(request("picky", two, request_id="r4"), [])).response
        assert (prior.served_by, prior.fallback_reason) == ("static", "circuit_open")
        np.testing.assert_allclose(prior.outputs["probabilities"], [[0.6, 0.3, 0.1]] * 2)
        assert prior.predicted_label == ["a", "a"]
        assert s.events() == ["fallback.triggered", "fallback.step_missed", "fallback.answered"]
        assert policy.fallbacks == {"error": 1, "circuit_open": 2} and not policy.rejections
        assert mv.batcher.executions == 2                               # r1 and r2 only
    run(tmp_path, body)


def test_model_steps_that_are_missing_or_take_other_inputs_are_passed_over(tmp_path):
    async def body(s):
        picky(s, f"  fallback: {{chain: [{{model: absent}}, {{model: picky}}, {{model: other}}, {PRIOR}]}}\n")
        s.add("other", echo(inp="pixels"), LABELS)
        response = (await s.pipeline.run(request("picky", WIDE), [])).response
        assert response.served_by == "static" and response.fallback_reason == "error"
        steps = [(e, a.get("step"), a.get("kind"), a.get("served_by")) for _, e, a in s.decisions]
        assert steps == [
            ("fallback.triggered", None, None, None),
            ("fallback.step_missed", 0, "model", None),      # no such model
            # step 1 names the failing model itself: skipped without a decision
            ("fallback.step_failed", 2, "model", "other@1"),
            ("fallback.answered", 3, None, "static"),
        ]
        missed, failed = s.decisions[1][2], s.decisions[2][2]
        assert "model 'absent' not found" in missed["error"]
        assert "missing input 'pixels'" in failed["error"] and "reason" not in failed
    run(tmp_path, body)


def test_a_failing_fallback_model_is_reported_with_its_reason(tmp_path):
    async def body(s):
        picky(s, "  fallback: {chain: [{model: second}]}\n")
        picky(s, name="second")
        err = await _error(s.pipeline.run(request("picky", WIDE), []))
        assert err.status is Status.UNAVAILABLE and err.message.endswith("; no fallback step could answer")
        failed = next(a for _, e, a in s.decisions if e == "fallback.step_failed")
        assert failed["served_by"] == "second@1" and failed["reason"] == "error"
        assert s.events()[-1] == "fallback.rejected"
    run(tmp_path, body)


def test_reasons_the_chain_does_not_list_are_rejected_at_once(tmp_path):
    async def body(s):
        mv = picky(s, f"  fallback: {{chain: [{PRIOR}], triggers: [timeout]}}\n")
        err = await _error(s.pipeline.run(request("picky", WIDE), []))
        assert err.status is Status.UNAVAILABLE and err.fallback_code == FallbackReason.ERROR
        assert "inference failed" in err.message and "fallback" not in err.message   # no step was tried
        assert s.events() == ["fallback.triggered", "fallback.rejected"]
        assert mv.policy.rejections == {"error": 1} and not mv.policy.fallbacks
    run(tmp_path, body)


def test_an_invalid_output_counts_as_a_failure_and_falls_back(tmp_path):
    async def body(s):
        mv = s.add("echo", echo(), LABELS + "policy:\n" + BREAKER +
                   f"  output_guard: {{enabled: true, max_value: 1}}\n  fallback: {{chain: [{PRIOR}]}}\n")
        response = (await s.pipeline.run(request(x=rows([2.0, 0.0, 0.0])), [])).response
        assert (response.served_by, response.fallback_reason) == ("static", "invalid_output")
        triggered = next(a for _, e, a in s.decisions if e == "fallback.triggered")
        assert triggered["error"] == "model echo@1: invalid output: output 'probabilities' has 2 above max_value 1"
        assert mv.policy.breaker.rates() == {"calls": 1, "failure_rate": 100.0, "slow_call_rate": 0.0}
    run(tmp_path, body)


def test_an_attempt_timeout_leaves_the_rest_of_the_deadline_to_the_chain(tmp_path):
    async def body(s):
        s.add("slow", echo(), LABELS + "faults: {latency_ms: 300}\npolicy:\n"
              f"  deadlines: {{attempt_timeout_ms: 20}}\n  fallback: {{chain: [{PRIOR}]}}\n")
        began = time.monotonic()
        served = await s.pipeline.run(request("slow"), [])
        assert time.monotonic() - began < 0.25                   # did not wait for the model
        assert served.response.served_by == "static" and served.response.fallback_reason == "timeout"
        assert "no answer within 20 ms" in s.decisions[0][2]["error"]
    run(tmp_path, body, allow_fault_injection=True)


def test_the_chain_is_not_walked_once_the_client_deadline_has_passed(tmp_path):
    async def body(s):
        mv = s.add("slow", echo(), LABELS + f"faults: {{latency_ms: 300}}\npolicy:\n  fallback: {{chain: [{PRIOR}]}}\n")
        err = await _error(s.pipeline.run(request("slow", deadline_ns=time.monotonic_ns() + 20_000_000), []))
        assert err.status is Status.DEADLINE_EXCEEDED and err.fallback_code == FallbackReason.TIMEOUT
        within = re.fullmatch(r"model slow@1: no answer within (\d+) ms", err.message)  # no step was tried
        assert within and 10 <= int(within[1]) <= 20      # what was left of the 20 ms when the attempt began
        assert s.events() == ["fallback.triggered", "fallback.rejected"]
        assert mv.policy.rejections == {"timeout": 1}
    run(tmp_path, body, allow_fault_injection=True)
