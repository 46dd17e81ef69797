"""Traffic administration end to end (gateway.v1.Admin and ``gateway traffic``): refused without
the admin token or with a wrong one, off with none configured; weights, promote, roll back and
shadow applied under load without dropping a request, audited and in the version history."""
from __future__ import annotations

import shutil
import threading

import grpc
import numpy as np
import pytest

from gateway import cli
from gateway._proto import gateway_pb2 as pb
from gateway._proto import gateway_pb2_grpc as pb_grpc

TOKEN = "t0ken-for-tests"
BEARER = (("authorization", f"Bearer {TOKEN}"),)


def _admin(gw):
    return pb_grpc.AdminStub(gw.channel)


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert TOKEN not in (info.value.details() or "")
    return info.value.code()


def test_admin_calls_are_off_without_a_token_and_refused_without_the_right_one(make_gateway, repo, monkeypatch):
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN", raising=False)
    off = make_gateway(model_repository=repo)
    req = pb.PromoteRequest(model="classifier", version="1")
    assert _code(lambda: _admin(off).Promote(req, metadata=BEARER)) == grpc.StatusCode.FAILED_PRECONDITION
    assert _admin(off).GetTraffic(pb.TrafficRequest(model="classifier")).latest_version == "1"   # reading is open
    on = make_gateway(model_repository=repo, admin_token=TOKEN)
    assert _code(lambda: _admin(on).Promote(req)) == grpc.StatusCode.UNAUTHENTICATED
    assert _code(lambda: _admin(on).Promote(req, metadata=(("authorization", "Bearer nope"),))) == \
        grpc.StatusCode.PERMISSION_DENIED
    assert _code(lambda: _admin(on).SetShadow(pb.SetShadowRequest(model="classifier", shares={"1": 1}),
                                              metadata=(("authorization", TOKEN),))) == grpc.StatusCode.PERMISSION_DENIED
    assert _admin(on).Promote(req, metadata=BEARER).weights == {"1": 1.0}


def test_weights_promote_roll_back_and_shadow_under_load_drop_nothing(make_gateway, repo, capsys, monkeypatch):
    shutil.copytree(repo / "classifier" / "1", repo / "classifier" / "2")
    gw = make_gateway(model_repository=repo, admin_token=TOKEN)
    admin = _admin(gw)
    stop, errors, served = threading.Event(), [], []

    def traffic():
        x = np.zeros((1, 16), np.float32)
        while not stop.is_set():
            try:
                served.append(gw.predict("classifier", {"features": x}, timeout=10).version)
            except grpc.RpcError as exc:
                errors.append(exc.code().name)
    workers = [threading.Thread(target=traffic) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        state = admin.SetTraffic(pb.SetTrafficRequest(model="classifier", weights={"1": 1, "2": 1}, reason="canary"),
                                 metadata=BEARER)
        assert state.shares == {"1": 0.5, "2": 0.5} and state.has_previous and state.previous == {}
        state = admin.Promote(pb.PromoteRequest(model="classifier", version="2", reason="it won"), metadata=BEARER)
        assert state.shares == {"2": 1.0} and state.previous == {"1": 1.0, "2": 1.0}
        mark = len(served)
        state = admin.RollBack(pb.TrafficRequest(model="classifier", reason="second thoughts"), metadata=BEARER)
        assert state.weights == {"1": 1.0, "2": 1.0}
        state = admin.SetShadow(pb.SetShadowRequest(model="classifier", shares={"2": 0.5}), metadata=BEARER)
        assert state.shadow == {"2": 0.5}
        assert _code(lambda: admin.SetShadow(pb.SetShadowRequest(model="classifier", shares={"9": 0.5}),
                                             metadata=BEARER)) == grpc.StatusCode.NOT_FOUND
        assert _code(lambda: admin.SetTraffic(pb.SetTrafficRequest(model="classifier", weights={"1": -1}),
                                              metadata=BEARER)) == grpc.StatusCode.INVALID_ARGUMENT
        assert _code(lambda: admin.SetShadow(pb.SetShadowRequest(model="classifier", shares={"2": 2}),
                                             metadata=BEARER)) == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        stop.set()
        for w in workers:
            w.join(10)
    assert errors == [] and len(served) > mark
    kinds = [(e.kind, e.source) for e in gw.stub.ModelHistory(pb.ModelHistoryRequest(model="classifier")).events]
    assert kinds[:4] == [("shadow", "admin"), ("rolled_back", "admin"), ("promoted", "admin"), ("weights", "admin")]

    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", TOKEN)
    assert cli.main(["traffic", "promote", "--model", "classifier", "--version", "1", "--address", gw.address]) == 0
    assert "in force 1: 1" in capsys.readouterr().out
    assert cli.main(["traffic", "show", "--model", "classifier", "--address", gw.address]) == 0
    assert "shadow 2: 0.5" in capsys.readouterr().out
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN")
    assert cli.main(["traffic", "rollback", "--model", "classifier", "--address", gw.address]) == 2
    assert cli.main(["traffic", "reload-profiles", "--address", gw.address, "--token-file", str(_token(repo))]) == 0
    assert "classifier@1" in capsys.readouterr().out


def _token(repo):
    path = repo.parent / "token"
    path.write_text(TOKEN + "\n")
    return path
