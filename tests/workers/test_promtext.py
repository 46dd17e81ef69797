"""Merging the workers' /metrics texts: counters and histogram samples add, gauges stay per worker."""
from __future__ import annotations

from gateway.workers.promtext import merge

A = """# TYPE target_info gauge
target_info{service_instance_id="a"} 1
# HELP gateway_requests_total Requests answered
# TYPE gateway_requests_total counter
gateway_requests_total{model="m",code="0"} 5
gateway_requests_total{model="m",code="14"} 1
# TYPE lat_seconds histogram
lat_seconds_bucket{model="m",le="0.001"} 2
lat_seconds_bucket{model="m",le="+Inf"} 6
lat_seconds_sum{model="m"} 0.5
lat_seconds_count{model="m"} 6
# TYPE inflight gauge
inflight 3
# TYPE psi gauge
psi{feature="a b}c"} 0.25
"""

B = """# TYPE target_info gauge
target_info{service_instance_id="b"} 1
# HELP gateway_requests_total Requests answered
# TYPE gateway_requests_total counter
gateway_requests_total{model="m",code="0"} 7
gateway_requests_total{model="n",code="0"} 2
# TYPE lat_seconds histogram
lat_seconds_bucket{model="m",le="0.001"} 1
lat_seconds_bucket{model="m",le="+Inf"} 7
lat_seconds_sum{model="m"} 0.25
lat_seconds_count{model="m"} 7
# TYPE inflight gauge
inflight 1
# TYPE psi gauge
psi{feature="a b}c"} NaN
"""


def _samples(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            assert key not in out, f"duplicate series {key}"
            out[key] = value
    return out


def test_counters_and_histograms_add_gauges_are_kept_per_worker():
    merged = merge([("0", A), ("1", B)])
    s = _samples(merged)
    assert s['gateway_requests_total{model="m",code="0"}'] == "12"
    assert s['gateway_requests_total{model="m",code="14"}'] == "1"
    assert s['gateway_requests_total{model="n",code="0"}'] == "2"
    assert s['lat_seconds_bucket{model="m",le="0.001"}'] == "3"
    assert s['lat_seconds_bucket{model="m",le="+Inf"}'] == "13"
    assert s['lat_seconds_sum{model="m"}'] == "0.75"
    assert s['lat_seconds_count{model="m"}'] == "13"
    assert s['inflight{worker="0"}'] == "3" and s['inflight{worker="1"}'] == "1"
    assert s['psi{feature="a b}c",worker="0"}'] == "0.25" and s['psi{feature="a b}c",worker="1"}'] == "NaN"
    assert s['target_info{service_instance_id="a",worker="0"}'] == "1"
    assert s['target_info{service_instance_id="b",worker="1"}'] == "1"


def test_each_family_has_one_header_and_its_samples_together():
    lines = merge([("0", A), ("1", B)]).splitlines()
    types = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert types == ["target_info", "gateway_requests_total", "lat_seconds", "inflight", "psi"]
    assert lines.count("# HELP gateway_requests_total Requests answered") == 1
    family_of = []
    for line in lines:
        if line.startswith("# TYPE"):
            family_of.append(line.split()[2])
        elif not line.startswith("#"):
            assert line.startswith(family_of[-1]), line


def test_one_worker_is_its_own_text_with_gauges_labelled():
    s = _samples(merge([("0", A)]))
    assert s['gateway_requests_total{model="m",code="0"}'] == "5" and s['inflight{worker="0"}'] == "3"
    assert merge([]) == "\n"
