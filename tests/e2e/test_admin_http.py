"""The admin HTTP port (/metrics, /healthz, /readyz) of a running gateway."""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.conftest import free_port
from tests.e2e.traced import predict


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
