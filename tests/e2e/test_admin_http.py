"""The admin HTTP port (/metrics, /healthz, /readyz): the AdminServer alone on a loopback port with
plain callables, and the one a running gateway opens."""
from __future__ import annotations

import http.client
import logging
import urllib.error
import urllib.request

import pytest

from gateway.adapters.admin_http import AdminServer
from tests.conftest import free_port
from tests.e2e.traced import predict


@pytest.fixture
def admin():
    state = {"ready": (False, "not ready: no model loaded"), "metrics": "m_total 1\n", "scrapes": 0}

    def metrics():
        state["scrapes"] += 1
        if isinstance(state["metrics"], Exception):
            raise state["metrics"]
        return state["metrics"]

    server = AdminServer("127.0.0.1", 0, metrics_text=metrics, content_type="text/plain; version=0.0.4",
                         ready=lambda: state["ready"])
    server.start()
    yield server, state
    server.stop()


def _get(server, path):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read().decode()
    finally:
        conn.close()


def test_the_admin_server_answers_health_readiness_and_metrics(admin):
    server, state = admin
    assert server.port > 0
    assert _get(server, "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    assert _get(server, "/readyz") == (503, "text/plain; charset=utf-8", "not ready: no model loaded\n")
    state["ready"] = (True, "")
    assert _get(server, "/readyz")[::2] == (200, "ready\n")
    assert _get(server, "/metrics?name=x") == (200, "text/plain; version=0.0.4", "m_total 1\n")
    assert _get(server, "/nope")[::2] == (404, "not found\n")
    assert state["scrapes"] == 1


def test_a_failing_metrics_render_is_a_500_and_the_server_keeps_answering(admin, caplog):
    server, state = admin
    state["metrics"] = RuntimeError("exporter broke")
    with caplog.at_level(logging.ERROR, logger="gateway.telemetry"):
        assert _get(server, "/metrics")[::2] == (500, "error: exporter broke\n")
    assert "rendering /metrics failed" in caplog.text
    state["metrics"] = "ok_total 2\n"
    assert _get(server, "/metrics")[2] == "ok_total 2\n"


def test_admin_endpoints(make_gateway, demo_models):
    port = free_port()
    gw = make_gateway(model_repository=demo_models, admin_port=port)
    predict(gw)
    base = f"http://127.0.0.1:{port}"
    assert urllib.request.urlopen(base + "/healthz").status == 200
    assert urllib.request.urlopen(base + "/readyz").status == 200
    text = urllib.request.urlopen(base + "/metrics").read().decode()
    assert "# TYPE rpc_server_call_duration_seconds histogram" in text
    assert 'rpc_server_call_duration_seconds_count{rpc_system="grpc"' in text
    assert "gateway_requests_total{" in text and "target_info{" in text
    gw.server.dataplane.set_accepting(False)  # as while draining
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(base + "/readyz")
    assert err.value.code == 503
