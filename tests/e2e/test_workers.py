"""`gateway serve --workers 2` as real processes on loopback: calls spread over both workers, one
GetStats / `gateway stats` / `/metrics` for the whole server, a killed worker restarted and
counted, SIGTERM drains every worker and the process tree exits."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest

from gateway._proto import gateway_pb2 as pb
from gateway._proto import gateway_pb2_grpc as pb_grpc
from gateway.client import from_numpy
from gateway.telemetry.readers import summarize_parts
from gateway.workers import channel, codec
from tests.conftest import free_port, save_model
from tests.e2e.test_shutdown import DRAIN_CHAINED, DRAIN_FEATURES, ROWS, _slow_graph

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreading: Linux")

START_TIMEOUT_S = 120


class Served:
    """`gateway serve --workers N` with its log in a file (workers log a lot: no pipe to fill)."""

    def __init__(self, tmp_path, repository, workers: int = 2, **env: str) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.log_path = tmp_path / "serve.log"
        self._log = open(self.log_path, "w")
        environment = {**os.environ, "GATEWAY_RELOAD_INTERVAL_S": "0", **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--workers", str(workers), "--model-repository",
             str(repository), "--port", str(self.port), "--admin-port", str(self.admin_port)],
            stdout=self._log, stderr=subprocess.STDOUT, env=environment)
        self.address = f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text()

    def admin(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()[-3000:]
            try:
                if self.admin("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready: {self.log()[-3000:]}")

    def worker_pids(self) -> dict[int, int]:
        """The newest pid of each worker, from the supervisor's log."""
        return {int(i): int(pid) for i, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", self.log())}

    def run_directory(self) -> str:
        match = re.search(r"run directory (\S+)\)", self.log())
        assert match, self.log()[-2000:]
        return match.group(1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        for pid in self.worker_pids().values():  # (killing the supervisor SIGTERMs them; make sure)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()


@pytest.fixture
def served(tmp_path, demo_models):
    started: list[Served] = []

    def start(**kwargs) -> Served:
        s = Served(tmp_path, kwargs.pop("repository", demo_models), **kwargs)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


def _own_connection(address: str) -> grpc.Channel:
    # (channels share connections unless told not to: each of these is a connection of its own,
    # which the kernel gives to one of the listening workers)
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def _predict_on_connections(address: str, connections: int, calls_each: int) -> None:
    rng = np.random.default_rng(0)
    for _ in range(connections):
        with _own_connection(address) as ch:
            stub = pb_grpc.GatewayStub(ch)
            for _ in range(calls_each):
                x = rng.standard_normal((1, 16)).astype(np.float32)
                reply = stub.Predict(pb.PredictRequest(model="classifier", inputs=[from_numpy("features", x)]),
                                     timeout=30)
                assert reply.served_by == "classifier@1"


def _shares(served: Served, window_s: float) -> list:
    root = served.run_directory()
    out = []
    for i in range(2):
        status, body = channel.get(f"{root}/w{i}.sock", f"/share?window_s={window_s}")
        assert status == 200, body
        out.append(codec.loads(body))
    return out


def _counter(metrics: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_calls_spread_over_the_workers_and_stats_and_metrics_merge_them(served, capsys):
    s = served()
    s.wait_ready()
    connections, calls_each = 16, 5
    _predict_on_connections(s.address, connections, calls_each)
    total = connections * calls_each
    refused = 0
    for _ in range(8):  # refused calls, on connections of their own too: their tallies merge
        with _own_connection(s.address) as ch:
            with pytest.raises(grpc.RpcError) as err:
                pb_grpc.GatewayStub(ch).Predict(pb.PredictRequest(model="no_such_model"), timeout=30)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            refused += 1

    # (the workers' aggregators fold their rings every 0.2 s)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        shares = _shares(s, 300)
        if sum(p.requests for share in shares for p in share.parts if p.model == "classifier") >= total:
            break
        time.sleep(0.1)
    per_worker = [sum(p.requests for p in share.parts if p.model == "classifier") for share in shares]
    assert sum(per_worker) == total and all(n > 0 for n in per_worker), per_worker

    with _own_connection(s.address) as ch:
        stats = pb_grpc.GatewayStub(ch).GetStats(pb.GetStatsRequest(window_s=300), timeout=10)
    assert (stats.workers, stats.worker_restarts) == (2, 0)
    assert sum(r.requests for r in stats.rejected if r.reason == "unknown_model") == refused
    assert sum(r.requests for share in shares for r in share.rejected) == refused
    clf = next(m for m in stats.models if m.model == "classifier")
    assert clf.requests == total and clf.latency.count == total
    # the answering worker's merge is that of the two raw shares: the percentiles of one
    # histogram of every request
    reference = summarize_parts([p for share in shares for p in share.parts if p.model == "classifier"], 160, [])
    assert (clf.latency.p50_ms, clf.latency.p90_ms, clf.latency.p99_ms, clf.latency.max_ms) == \
        (reference.latency.p50_ms, reference.latency.p90_ms, reference.latency.p99_ms, reference.latency.max_ms)
    assert clf.compute.count == reference.compute.count == total

    from gateway.cli import main

    assert main(["stats", "--address", s.address, "--window-s", "300"]) == 0
    out = capsys.readouterr().out
    assert "2 workers, restarts 0" in out.splitlines()[0]
    assert re.search(r"^classifier@1 ", out, re.M)

    code, metrics = s.admin("/metrics")
    assert code == 200
    assert _counter(metrics, "gateway_requests_total", gateway_model_name="classifier",
                    rpc_grpc_status_code="0") == total
    assert "gateway_workers 2" in metrics and "gateway_workers_merged 2" in metrics
    assert len(re.findall(r"^target_info\{.*service_instance_id=", metrics, re.M)) == 2


def test_a_killed_worker_is_restarted_and_counted_and_serving_goes_on(served):
    s = served()
    s.wait_ready()
    victim = s.worker_pids()[1]
    os.kill(victim, signal.SIGKILL)
    # health reflects all workers: not ready while worker 1 is down or starting again
    deadline = time.monotonic() + START_TIMEOUT_S
    seen = None
    while time.monotonic() < deadline:
        code, body = s.admin("/readyz")
        if code == 503:
            seen = body
            break
        time.sleep(0.05)
    assert seen is not None and "worker 1" in seen, seen
    # while worker 1 starts again (it listens only once loaded), new connections reach worker 0
    while "died" not in s.log():
        time.sleep(0.05)
    during: list = []
    ready = threading.Event()

    def call_meanwhile():
        rng = np.random.default_rng(1)
        while not ready.is_set():
            with _own_connection(s.address) as ch:
                x = rng.standard_normal((1, 16)).astype(np.float32)
                request = pb.PredictRequest(model="classifier", inputs=[from_numpy("features", x)])
                try:
                    during.append(pb_grpc.GatewayStub(ch).Predict(request, timeout=30).served_by)
                except grpc.RpcError as exc:
                    during.append(exc.code())

    caller = threading.Thread(target=call_meanwhile)
    caller.start()
    try:
        s.wait_ready()
    finally:
        ready.set()
        caller.join(60)
    assert during and set(during) == {"classifier@1"}, during
    assert re.search(rf"worker 1 \(pid {victim}\) died \(killed by SIGKILL\).*restart 1 in 0.5 s", s.log())
    assert s.worker_pids()[1] != victim
    _predict_on_connections(s.address, 8, 2)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with _own_connection(s.address) as ch:
            stats = pb_grpc.GatewayStub(ch).GetStats(pb.GetStatsRequest(window_s=300), timeout=10)
        if next(m for m in stats.models if m.model == "classifier").requests >= 16 + len(during):
            break
        time.sleep(0.1)
    assert (stats.workers, stats.worker_restarts) == (2, 1)
    # (no call before the kill: the calls meanwhile and after are all counted)
    assert next(m for m in stats.models if m.model == "classifier").requests == 16 + len(during)
    metrics = s.admin("/metrics")[1]
    assert 'gateway_worker_restarts_total{worker="1"} 1' in metrics
    assert 'gateway_worker_restarts_total{worker="0"} 0' in metrics


def _in_flight(metrics: str) -> int:
    """Calls in flight on all workers together, from the supervisor's /metrics."""
    return sum(int(float(n)) for n in re.findall(r"^gateway_requests_in_flight\{worker=\"\d+\"\} (\S+)$", metrics,
                                                 flags=re.M))


def test_sigterm_drains_every_worker_and_the_process_tree_exits(served, tmp_path):
    repository = tmp_path / "models"
    save_model(repository / "slow" / "1" / "model.onnx", _slow_graph(DRAIN_FEATURES, DRAIN_CHAINED))
    # monitoring off: the drain is under test (see test_shutdown.py: under the debug build input
    # statistics beside their warm-up freeze can outlast the grace period)
    (repository / "slow" / "config.yaml").write_text("instance_count: 1\nmonitoring: {enabled: false}\n")
    # six calls of ~1 s may all land on one worker: a grace period with room for them on a busy box
    s = served(repository=repository, GATEWAY_GRACE_PERIOD_S="30")
    s.wait_ready()
    pids = s.worker_pids()
    x = np.random.default_rng(0).standard_normal((ROWS, DRAIN_FEATURES)).astype(np.float32)
    request = pb.PredictRequest(model="slow", inputs=[from_numpy("features", x)])
    results: list = []
    channels = [_own_connection(s.address) for _ in range(6)]
    for ch in channels:  # connect first, so every call is in flight when the signal comes
        grpc.channel_ready_future(ch).result(timeout=30)

    def call(ch):
        try:
            results.append(pb_grpc.GatewayStub(ch).Predict(request, timeout=120).served_by)
        except grpc.RpcError as exc:
            results.append(exc.code())

    callers = [threading.Thread(target=call, args=(ch,)) for ch in channels]
    for c in callers:
        c.start()
    # until the workers hold every call between them. (A call still on its way, which gRPC had
    # not yet handed to the server when the drain began, is answered CANCELLED: a terminal answer,
    # but not the drain under test; waiting for one worker's first call let that race in.)
    deadline, held = time.monotonic() + 60, 0
    while time.monotonic() < deadline and held < len(channels) and any(c.is_alive() for c in callers):
        time.sleep(0.02)
        held = _in_flight(s.admin("/metrics")[1])
    assert held == len(channels), f"{held} of {len(channels)} calls in flight at once: the model is too fast here"
    s.proc.send_signal(signal.SIGTERM)
    for c in callers:
        c.join(120)
    assert results == ["slow@1"] * len(channels)
    assert s.proc.wait(60) == 0
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    log = s.log()
    assert "stopped (workers' exit codes 0, 0)" in log
    assert not os.path.exists(s.run_directory())
    for ch in channels:
        ch.close()


def test_an_admin_traffic_change_on_one_worker_is_in_force_on_all(served, tmp_path, demo_models):
    import shutil
    repo = tmp_path / "models"
    shutil.copytree(demo_models, repo)
    shutil.copytree(repo / "classifier" / "1", repo / "classifier" / "2")
    (repo / "classifier" / "config.yaml").write_text("labels: [approve, review, decline]\n"
                                                     "traffic:\n  weights: {'1': 1}\n")
    s = served(repository=repo, GATEWAY_ADMIN_TOKEN="w0rkers")
    s.wait_ready()
    x = np.zeros((1, 16), np.float32)

    def versions(connections: int) -> set[str]:
        seen = set()
        for _ in range(connections):
            with _own_connection(s.address) as channel_:
                stub = pb_grpc.GatewayStub(channel_)
                for _ in range(3):
                    seen.add(stub.Predict(pb.PredictRequest(model="classifier", inputs=[from_numpy("features", x)]),
                                          timeout=10).version)
        return seen

    assert versions(8) == {"1"}
    with _own_connection(s.address) as channel_:
        state, call = pb_grpc.AdminStub(channel_).Promote.with_call(
            pb.PromoteRequest(model="classifier", version="2", reason="on every worker"),
            metadata=(("authorization", "Bearer w0rkers"),), timeout=10)
    assert state.shares == {"2": 1.0}
    assert dict(call.trailing_metadata())["gateway-workers-applied"] == "2/2"
    assert versions(12) == {"2"}                      # new connections land on both workers
    assert "traffic from another worker" in s.log()
