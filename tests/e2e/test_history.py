"""The version history end to end: loads, a new version, a failed load, weight edits and a removed
version are recorded with their source, survive a restart with the same state_dir, and are shown
by ``gateway models --history``."""
from __future__ import annotations

import shutil

import grpc
import pytest

from gateway import cli
from gateway._proto import gateway_pb2 as pb


def _events(gw, model=""):
    return [(e.model, e.version, e.kind, e.source)
            for e in gw.stub.ModelHistory(pb.ModelHistoryRequest(model=model, limit=100)).events]


def test_what_happened_to_the_versions_is_kept_across_a_restart(make_gateway, repo, tmp_path, capsys):
    state = tmp_path / "state"
    gw = make_gateway(model_repository=repo, state_dir=state)
    assert ("classifier", "1", "loaded", "repository") in _events(gw, "classifier")
    shutil.copytree(repo / "classifier" / "1", repo / "classifier" / "2")
    (repo / "classifier" / "3").mkdir()
    (repo / "classifier" / "3" / "model.onnx").write_bytes(b"not a model")
    (repo / "classifier" / "config.yaml").write_text(
        "labels: [approve, review, decline]\ntraffic:\n  weights: {'1': 3, '2': 1}\n")
    gw.reload()
    newest = _events(gw, "classifier")
    assert newest[0] == ("classifier", "", "weights", "config")
    assert {("classifier", "2", "loaded", "repository"), ("classifier", "3", "load_failed", "repository")} <= set(newest)
    shutil.rmtree(repo / "classifier" / "1")
    gw.reload()
    assert ("classifier", "1", "unloaded", "repository") in _events(gw, "classifier")
    assert {m for m, *_ in _events(gw)} >= {"classifier", "regressor"}
    gw.close()

    again = make_gateway(model_repository=repo, state_dir=state)
    kinds = [k for _, _, k, _ in _events(again, "classifier")]
    assert kinds.count("weights") >= 1 and "load_failed" in kinds and "unloaded" in kinds
    assert kinds[-1] == "loaded"                          # the first load of the first run, oldest last
    assert cli.main(["models", "--history", "--model", "classifier", "--address", again.address]) == 0
    out = capsys.readouterr().out
    assert "classifier@3" in out and "load_failed" in out and "1: 0.75, 2: 0.25" in out
    assert "2: 1 (asked for" in out                       # after the restart version 1 is gone: 2 takes all


def test_a_bad_limit_is_refused_naming_it(make_gateway, repo):
    gw = make_gateway(model_repository=repo)
    with pytest.raises(grpc.RpcError) as info:
        gw.stub.ModelHistory(pb.ModelHistoryRequest(limit=10**6))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit" in info.value.details()
    assert _events(gw)                                    # no state_dir: kept in memory
