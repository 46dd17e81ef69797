"""Shadow traffic end to end: a model's traffic.shadow mirrors its answered requests to a candidate
version off the response path; the clients' answers are byte-for-byte those without shadow; the
pairs' agreement, output difference, latency and errors are reported; shadows are shed first."""
from __future__ import annotations

import math
import shutil
import time

import numpy as np
import onnx

from gateway import cli
from gateway._proto import gateway_pb2 as pb
from gateway.client import from_numpy
from gateway.demo.models import _mlp

LABELS = "labels: [approve, review, decline]\n"


def _config(repo, extra: str) -> None:
    (repo / "classifier" / "config.yaml").write_text(LABELS + extra)


def _requests(n: int, seed: int = 0) -> list[pb.PredictRequest]:
    rng = np.random.default_rng(seed)
    return [pb.PredictRequest(model="classifier", request_id=f"r{i}",
                              inputs=[from_numpy("features", rng.standard_normal((4, 16)).astype(np.float32))])
            for i in range(n)]


def _answers(gw, requests) -> list[bytes]:
    return [gw.stub.Predict(r, timeout=10).SerializeToString() for r in requests]


def _pairs(gw) -> dict:
    return {(s.primary, s.shadow): s for s in gw.stub.GetStats(pb.GetStatsRequest(window_s=60)).shadow}


def _wait(gw, key, mirrored: int) -> pb.ShadowPair:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pair = _pairs(gw).get(key)
        if pair is not None and pair.mirrored + pair.shed >= mirrored and \
                pair.compared_rows + sum(pair.errors.values()) * 4 >= pair.mirrored * 4:
            return pair
        time.sleep(0.05)
    raise AssertionError(f"shadow pair {key} did not settle: {_pairs(gw).get(key)}")


def test_shadow_never_changes_an_answer_and_compares_the_candidate(make_gateway, repo, capsys):
    shutil.copytree(repo / "classifier" / "1", repo / "classifier" / "2")            # the same model
    (repo / "classifier" / "3").mkdir()
    onnx.save(_mlp("classifier", [16, 32, 3], softmax=True, output_name="probabilities", seed=9),
              str(repo / "classifier" / "3" / "model.onnx"))                       # another model
    _config(repo, "traffic:\n  weights: {'1': 1}\n")
    gw = make_gateway(model_repository=repo)
    requests = _requests(60)
    without = _answers(gw, requests)
    _config(repo, "traffic:\n  weights: {'1': 1}\n  shadow: {'2': 1.0, '3': 1.0}\n")
    gw.reload()
    with_shadow = _answers(gw, requests)
    assert with_shadow == without                                    # byte for byte: shadow changes nothing
    same = _wait(gw, ("classifier@1", "classifier@2"), 60)
    assert same.mirrored == 60 and same.shed == 0 and dict(same.errors) == {}
    assert same.agreement == 1.0 and same.compared_rows == 240 and same.mean_abs_diff == 0.0
    assert 0 < same.p50_ms <= same.p99_ms
    other = _wait(gw, ("classifier@1", "classifier@3"), 60)
    assert other.mirrored == 60 and 0 <= other.agreement < 1 and other.mean_abs_diff > 0
    gw.server.telemetry.flush()
    stats = {(m.model, m.version): m.requests for m in gw.stub.GetStats(pb.GetStatsRequest(window_s=60)).models}
    assert stats[("classifier", "1")] == 120 and stats[("classifier", "2")] == 0   # shadows are not client requests
    assert cli.main(["stats", "--address", gw.address]) == 0
    assert "# shadow classifier@1 -> classifier@2: mirrored 60, shed 0, errors 0, agreement 100.0 %" \
        in capsys.readouterr().out


def test_shadows_are_shed_first_and_counted_when_over_their_budget(make_gateway, repo):
    shutil.copytree(repo / "classifier" / "1", repo / "classifier" / "2")
    _config(repo, "faults: {latency_ms: 200}\n")                    # the candidate is slow (both are: one config)
    gw = make_gateway(model_repository=repo, allow_fault_injection=True, shadow_max_in_flight=2,
                      shadow_timeout_ms=5000)
    _config(repo, "traffic:\n  weights: {'1': 1}\n  shadow: {'2': 1.0}\nfaults: {latency_ms: 200}\n")
    gw.reload()
    import concurrent.futures as cf
    with cf.ThreadPoolExecutor(8) as pool:                           # 8 at once: 2 shadows fit, the rest shed
        answers = list(pool.map(lambda r: gw.stub.Predict(r, timeout=10), _requests(8)))
    assert all(a.version == "1" and not a.degraded for a in answers)
    pair = _wait(gw, ("classifier@1", "classifier@2"), 8)
    assert pair.shed >= 1 and pair.mirrored <= 8 - pair.shed and pair.mirrored >= 2
    assert not math.isnan(pair.agreement)
