"""Fallback policies over real gRPC: each trigger, each step of the chain, the breaker's cycle,
deadline propagation, hot reload under load, and the no-loss check (every request gets exactly
one terminal answer: full, marked degraded, or a documented status)."""
from __future__ import annotations

import concurrent.futures
import logging
import pathlib
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from gateway._proto import gateway_pb2 as pb
from gateway.policy.reasons import REASON_LABELS
from tests.conftest import outputs, save_model

PRIOR = [0.6, 0.3, 0.1]


def _x(rows: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 16)).astype(np.float32)


def _repo(root: pathlib.Path, demo: pathlib.Path, configs: dict[str, str]) -> pathlib.Path:
    """Copies of the demo classifier (16 features -> 3 probabilities) under the given names."""
    for name, config in configs.items():
        (root / name / "1").mkdir(parents=True)
        shutil.copy(demo / "classifier" / "1" / "model.onnx", root / name / "1" / "model.onnx")
        (root / name / "config.yaml").write_text("labels: [approve, review, decline]\n"
                                                 "batching: {max_queue_delay_us: 0}\n" + config)
    return root


def _huge_model(path: pathlib.Path) -> None:
    """features * 1e6 summed into 3 "probabilities": finite but far out of range."""
    w = numpy_helper.from_array(np.full((16, 3), 1e6, np.float32), "W")
    save_model(path, helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["probabilities"])], "huge",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])], [w]))


def _rewrite(path: pathlib.Path, text: str) -> None:
    before = path.stat().st_mtime_ns
    path.write_text(text)
    while path.stat().st_mtime_ns == before:  # coarse clocks: make the change visible to the scanner
        time.sleep(0.01)
        path.write_text(text)


@pytest.fixture
def gw(tmp_path, demo_models, make_gateway):
    def start(configs: dict[str, str], **settings):
        root = _repo(tmp_path / "models", demo_models, configs)
        settings.setdefault("allow_fault_injection", True)
        return make_gateway(model_repository=root, executor_threads=4, **settings)
    return start


def _error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def _pushback(err: grpc.RpcError) -> int | None:
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-retry-pushback-ms":
            return int(value)
    return None


def _policy(gateway, model: str):
    return gateway.server.registry.resolve(model).policy


# -- each trigger and each step of the chain ---------------------------------------------------------

def test_timeout_falls_back_to_another_model(gw):
    g = gw({"primary": "faults: {latency_ms: 400}\npolicy:\n  deadlines: {attempt_timeout_ms: 50}\n"
                       "  fallback: {chain: [{model: backup}]}\n",
            "backup": ""})
    r = g.predict("primary", {"features": _x(2)})
    assert (r.degraded, r.fallback_reason, r.served_by) == (True, "timeout", "backup@1")
    assert r.model == "primary" and outputs(r)["probabilities"].shape == (2, 3)
    assert list(r.predicted_label) and len(r.confidence) == 2
    assert _policy(g, "primary").fallbacks["timeout"] == 1


def test_same_model_on_cpu_as_a_fallback_through_a_linked_copy(gw):
    """The documented recipe for "the same model on CPU when the GPU path fails": a second model
    directory whose version links to the same file, pinned to the CPU provider."""
    g = gw({"primary": "faults: {error_rate: 1.0}\npolicy:\n  fallback: {chain: [{model: primary_cpu}]}\n"})
    root = g.server.repository
    (root / "primary_cpu" / "1").mkdir(parents=True)
    (root / "primary_cpu" / "1" / "model.onnx").symlink_to(root / "primary" / "1" / "model.onnx")
    (root / "primary_cpu" / "config.yaml").write_text("execution_providers: [cpu]\nlabels: [approve, review, decline]\n")
    g.reload()
    r = g.predict("primary", {"features": _x(2)})
    assert (r.degraded, r.fallback_reason, r.served_by) == (True, "error", "primary_cpu@1")
    assert outputs(r)["probabilities"].shape == (2, 3)
    info = g.stub.GetModel(pb.GetModelRequest(name="primary_cpu"))
    assert info.execution_provider == "CPUExecutionProvider"


def test_default_timeout_applies_without_client_deadline_and_rejects_with_deadline_exceeded(gw):
    g = gw({"primary": "faults: {latency_ms: 400}\npolicy:\n  deadlines: {default_timeout_ms: 50}\n"})
    req = pb.PredictRequest(model="primary", inputs=[pb.Tensor(name="features", dtype=pb.DATA_TYPE_FLOAT32,
                                                               shape=[1, 16], data=_x().tobytes())])
    err = _error(lambda: g.stub.Predict(req))  # no client deadline
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_error_falls_back_to_a_static_class_prior(gw):
    g = gw({"primary": f"faults: {{error_rate: 1.0}}\npolicy:\n  fallback: {{chain: [{{static: "
                       f"{{probabilities: {PRIOR}}}}}]}}\n"})
    r = g.predict("primary", {"features": _x(3)})
    assert (r.degraded, r.fallback_reason, r.served_by) == (True, "error", "static")
    np.testing.assert_allclose(outputs(r)["probabilities"], np.tile(PRIOR, (3, 1)), rtol=1e-6)
    np.testing.assert_allclose(r.confidence, [0.6] * 3, rtol=1e-6)
    assert list(r.predicted_label) == ["approve"] * 3


def test_invalid_output_falls_back_to_the_cached_answer_then_rejects_unseen_inputs(gw):
    g = gw({"primary": "faults: {nan_rate: 0}\npolicy:\n  output_guard: {enabled: true}\n"
                       "  fallback: {chain: [{cache: {max_entries: 16}}]}\n"})
    x = _x(2, seed=7)
    good = g.predict("primary", {"features": x})
    assert not good.degraded
    config = g.server.repository / "primary" / "config.yaml"
    _rewrite(config, config.read_text().replace("nan_rate: 0", "nan_rate: 1.0"))
    g.reload()
    cached = g.predict("primary", {"features": x})
    assert (cached.degraded, cached.fallback_reason, cached.served_by) == (True, "invalid_output", "cache")
    np.testing.assert_array_equal(outputs(cached)["probabilities"], outputs(good)["probabilities"])
    assert list(cached.predicted_label) == list(good.predicted_label)
    err = _error(lambda: g.predict("primary", {"features": _x(2, seed=8)}))
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "NaN" in err.details()


def test_out_of_range_output_is_a_failure(gw, tmp_path):
    g = gw({"primary": "policy:\n  output_guard: {enabled: true, max_value: 1.0}\n"
                       "  fallback: {chain: [{model: backup}]}\n", "backup": ""})
    _huge_model(g.server.repository / "primary" / "1" / "model.onnx")
    g.reload()
    r = g.predict("primary", {"features": np.abs(_x())})
    assert (r.degraded, r.fallback_reason, r.served_by) == (True, "invalid_output", "backup@1")


def _hold_the_only_slot(g, model: str):
    """Start one slow request and return once it is running."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(g.predict, model, {"features": _x()})
    policy = _policy(g, model)
    deadline = time.monotonic() + 10
    while policy.admission.in_flight < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    return pool, future


def test_overload_sheds_to_static_or_rejects_with_pushback(gw):
    slow = "faults: {latency_ms: 500}\nbatching: {enabled: false}\n"
    g = gw({"shed": slow + f"policy:\n  admission: {{max_in_flight: 1}}\n"
                           f"  fallback: {{chain: [{{static: {{probabilities: {PRIOR}}}}}]}}\n",
            "reject": slow + "policy:\n  admission: {max_in_flight: 1, retry_after_ms: 120}\n"})
    pool, first = _hold_the_only_slot(g, "shed")
    r = g.predict("shed", {"features": _x()})
    assert (r.degraded, r.fallback_reason, r.served_by) == (True, "overloaded", "static")
    assert not first.result(10).degraded
    pool.shutdown()
    pool, first = _hold_the_only_slot(g, "reject")
    err = _error(lambda: g.predict("reject", {"features": _x()}))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "overloaded" in err.details()
    assert _pushback(err) == 120
    first.result(10)
    pool.shutdown()


def test_open_circuit_answers_from_the_fallback_model_and_rejects_with_pushback(gw):
    breaker = ("  circuit_breaker: {enabled: true, minimum_number_of_calls: 2, sliding_window_size: 4, "
               "wait_duration_in_open_state_ms: 60000}\n")
    g = gw({"primary": "faults: {error_rate: 1.0}\npolicy:\n" + breaker + "  fallback: {chain: [{model: backup}]}\n",
            "bare": "faults: {error_rate: 1.0}\npolicy:\n" + breaker,
            "backup": ""})
    reasons = [g.predict("primary", {"features": _x()}).fallback_reason for _ in range(3)]
    assert reasons == ["error", "error", "circuit_open"]
    assert _policy(g, "primary").snapshot()["breaker_state"] == "open"
    for _ in range(2):
        assert _error(lambda: g.predict("bare", {"features": _x()})).code() == grpc.StatusCode.UNAVAILABLE
    err = _error(lambda: g.predict("bare", {"features": _x()}))
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "circuit breaker is open" in err.details()
    assert 0 < _pushback(err) <= 60000


def test_a_half_open_circuit_rejects_with_a_positive_pushback(gw):
    # 200 ms executions that fail: two open the circuit, which lets one probe through 50 ms later.
    g = gw({"bare": "faults: {error_rate: 1.0, latency_ms: 200}\nbatching: {enabled: false}\npolicy:\n"
                    "  circuit_breaker: {enabled: true, minimum_number_of_calls: 2, sliding_window_size: 2, "
                    "wait_duration_in_open_state_ms: 50, permitted_number_of_calls_in_half_open_state: 1}\n"})
    for _ in range(2):
        _error(lambda: g.predict("bare", {"features": _x()}))
    breaker = _policy(g, "bare").breaker
    time.sleep(0.1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        probe = pool.submit(_error, lambda: g.predict("bare", {"features": _x()}))
        deadline = time.monotonic() + 10
        while breaker.state.value != "half_open" and time.monotonic() < deadline:
            time.sleep(0.005)
        err = _error(lambda: g.predict("bare", {"features": _x()}))   # the probe is still out
        assert probe.result(10).code() == grpc.StatusCode.UNAVAILABLE
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "circuit breaker is open" in err.details()
    assert 200 <= _pushback(err) <= 10_000          # about one call: each took 200 ms or more


def test_chain_goes_on_when_a_step_cannot_answer(gw):
    g = gw({"primary": f"faults: {{error_rate: 1.0}}\npolicy:\n  fallback: {{chain: [{{model: missing}}, "
                       f"{{model: broken}}, {{cache: {{}}}}, {{static: {{probabilities: {PRIOR}}}}}]}}\n",
            "broken": "faults: {error_rate: 1.0}\n"})
    r = g.predict("primary", {"features": _x()})
    assert (r.degraded, r.fallback_reason, r.served_by) == (True, "error", "static")


def test_triggers_limit_which_failures_walk_the_chain(gw):
    g = gw({"primary": f"faults: {{error_rate: 1.0}}\npolicy:\n  fallback: {{triggers: [timeout], chain: "
                       f"[{{static: {{probabilities: {PRIOR}}}}}]}}\n"})
    err = _error(lambda: g.predict("primary", {"features": _x()}))
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "injected fault" in err.details()


def test_bad_input_is_never_degraded(gw):
    g = gw({"primary": f"policy:\n  fallback: {{chain: [{{static: {{probabilities: {PRIOR}}}}}]}}\n"})
    err = _error(lambda: g.predict("primary", {"features": np.zeros((1, 5), np.float32)}))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- the breaker's full cycle through the server ------------------------------------------------------

def test_breaker_opens_then_recovers_once_faults_stop(gw):
    g = gw({"primary": "faults: {error_rate: 1.0}\npolicy:\n  circuit_breaker: {enabled: true, "
                       "minimum_number_of_calls: 2, sliding_window_size: 2, wait_duration_in_open_state_ms: 300, "
                       "permitted_number_of_calls_in_half_open_state: 2}\n"
                       "  fallback: {chain: [{model: backup}]}\n",
            "backup": ""})
    policy = _policy(g, "primary")
    for _ in range(2):
        g.predict("primary", {"features": _x()})
    assert policy.breaker.state.value == "open"
    time.sleep(0.35)
    r = g.predict("primary", {"features": _x()})  # half-open probe, still failing
    assert r.fallback_reason == "error" and policy.breaker.state.value == "half_open"
    g.predict("primary", {"features": _x()})
    assert policy.breaker.state.value == "open"  # half-open -> open
    config = g.server.repository / "primary" / "config.yaml"
    _rewrite(config, config.read_text().replace("error_rate: 1.0", "error_rate: 0.0"))
    g.reload()
    assert _policy(g, "primary") is policy  # policy-only edit: applied in place, breaker state kept
    assert policy.breaker.state.value == "open"
    time.sleep(0.35)
    answers = [g.predict("primary", {"features": _x()}) for _ in range(3)]
    assert [a.degraded for a in answers] == [False, False, False]
    assert policy.breaker.state.value == "closed"


# -- deadlines --------------------------------------------------------------------------------------

def test_work_stops_when_the_client_gives_up(gw):
    g = gw({"slow": "faults: {latency_ms: 400}\nbatching: {enabled: false}\n"})
    injector = g.server.registry.resolve("slow").model.faults
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        first = pool.submit(g.predict, "slow", {"features": _x()})
        while injector.executions < 1:
            time.sleep(0.005)
        quitters = [pool.submit(g.predict, "slow", {"features": _x()}, timeout=0.1) for _ in range(3)]
        for q in quitters:
            assert q.exception(10).code() == grpc.StatusCode.DEADLINE_EXCEEDED
        first.result(10)
    time.sleep(0.5)  # generous: anything still queued would have run by now
    assert injector.executions == 1
    assert g.server.registry.resolve("slow").batcher.queue_depth == 0


# -- hot reload -------------------------------------------------------------------------------------

def test_policy_hot_reload_under_load_drops_nothing_and_rejects_bad_edits(gw):
    g = gw({"primary": "policy:\n  admission: {max_in_flight: 64}\n"})
    config = g.server.repository / "primary" / "config.yaml"
    base = config.read_text()
    stop = threading.Event()
    results: list[object] = []

    def load():
        while not stop.is_set():
            try:
                results.append(g.predict("primary", {"features": _x()}, timeout=10))
            except grpc.RpcError as exc:  # pragma: no cover - reported below
                results.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        session = g.server.registry.resolve("primary").model
        for limit in (32, 48, 64):
            _rewrite(config, base.replace("max_in_flight: 64", f"max_in_flight: {limit}"))
            g.reload()
            assert _policy(g, "primary").admission.config.max_in_flight == limit
            time.sleep(0.05)
        _rewrite(config, base.replace("max_in_flight: 64", "max_in_flight: -3"))
        g.reload()
        time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert g.server.registry.resolve("primary").model is session  # no session reload
    assert _policy(g, "primary").admission.config.max_in_flight == 64  # the old policy stays
    error = g.server.registry.get("primary").errors["config"]
    assert "policy.admission.max_in_flight" in error
    listed = {m.name: m for m in g.stub.ListModels(pb.ListModelsRequest()).models}
    assert "policy.admission.max_in_flight" in listed["primary"].error
    assert results and all(isinstance(r, pb.PredictResponse) and not r.degraded for r in results)


# -- fault injection safety -------------------------------------------------------------------------

def test_faults_are_rejected_unless_the_process_allows_them(gw):
    g = gw({"primary": "faults: {error_rate: 1.0}\n", "plain": ""}, allow_fault_injection=False)
    entry = g.server.registry.get("primary")
    assert not entry.versions and "GATEWAY_ALLOW_FAULT_INJECTION" in entry.errors["config"]
    assert g.predict("plain", {"features": _x()}).served_by == "plain@1"


def test_active_faults_are_logged_loudly(gw, caplog):
    with caplog.at_level(logging.WARNING, logger="gateway.policy"):
        gw({"primary": "faults: {error_rate: 0.25, latency_ms: 3}\n"})
    assert any(r.levelno == logging.WARNING and "FAULT INJECTION ACTIVE" in r.getMessage()
               and "primary@1" in r.getMessage() and "error rate 0.25" in r.getMessage() for r in caplog.records)


# -- no loss ----------------------------------------------------------------------------------------

def test_no_loss_under_overload_and_faults(gw):
    n = 240
    common = ("faults: {latency_ms: 4, error_rate: 0.3, nan_rate: 0.1, seed: 7}\n"
              "batching: {enabled: false}\ninstance_count: 2\n")
    policy = ("policy:\n  admission: {max_in_flight: 4}\n  output_guard: {enabled: true}\n"
              "  circuit_breaker: {enabled: true, minimum_number_of_calls: 10, sliding_window_size: 20, "
              "wait_duration_in_open_state_ms: 100, permitted_number_of_calls_in_half_open_state: 3}\n")
    g = gw({"with_chain": common + policy + "  fallback: {chain: [{model: backup}, {cache: {}}]}\n",
            "no_chain": common + policy,
            "backup": "faults: {error_rate: 0.2, seed: 3}\npolicy:\n  admission: {max_in_flight: 2}\n"})
    documented = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE,
                  grpc.StatusCode.DEADLINE_EXCEEDED}
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        futures = [pool.submit(g.predict, "with_chain" if i % 2 else "no_chain",
                               {"features": _x(1, seed=i % 16)}, timeout=2.0) for i in range(n)]
        answers = [f.exception() or f.result() for f in concurrent.futures.wait(futures)[0]]
    assert len(answers) == n
    kinds = {"full": 0, "degraded": 0, "status": 0}
    for a in answers:
        if isinstance(a, pb.PredictResponse):
            assert outputs(a)["probabilities"].shape == (1, 3)
            if a.degraded:
                assert a.fallback_reason in REASON_LABELS and a.served_by
                kinds["degraded"] += 1
            else:
                assert np.isfinite(outputs(a)["probabilities"]).all()
                kinds["full"] += 1
        else:
            assert isinstance(a, grpc.RpcError) and a.code() in documented, a
            kinds["status"] += 1
    assert sum(kinds.values()) == n and kinds["full"] and kinds["degraded"] and kinds["status"]


def test_degraded_answers_are_counted_in_live_stats(gw):
    g = gw({"primary": f"faults: {{error_rate: 1.0}}\npolicy:\n  fallback: {{chain: [{{static: "
                       f"{{probabilities: {PRIOR}}}}}]}}\n"})
    for seed in range(6):
        assert g.predict("primary", {"features": _x(1, seed=seed)}).degraded
    g.server.telemetry.flush()
    stats = {m.model: m for m in g.stub.GetStats(pb.GetStatsRequest(window_s=60)).models}
    assert stats["primary"].requests == 6 and stats["primary"].degraded_share == 1.0
