"""The request-path tracing decisions: W3C ``traceparent`` parsing and head sampling."""
from __future__ import annotations

import pytest

from gateway.adapters.tracing import HeadSampler, parse_traceparent

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


def test_parse_traceparent():
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-01") == (int(TRACE, 16), int(PARENT, 16), True)
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-00")[2] is False
    for bad in ("", "garbage", f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE}-{'0' * 16}-01",
                f"ff-{TRACE}-{PARENT}-01", f"00-{TRACE}-{PARENT}-01-extra", f"00-{TRACE[:-1]}x-{PARENT}-01"):
        assert parse_traceparent(bad) is None, bad


def test_sampler_semantics():
    md_on = (("traceparent", f"00-{TRACE}-{PARENT}-01"),)
    md_off = (("traceparent", f"00-{TRACE}-{PARENT}-00"),)
    pb = HeadSampler("parentbased_traceidratio", 0.0)
    t = pb.start(md_on)
    assert t.trace_id == int(TRACE, 16) and t.parent_span_id == int(PARENT, 16)
    assert pb.start(md_off) is None
    assert all(pb.start(()) is None for _ in range(100))
    on = HeadSampler("always_on")
    assert on.start(md_off) is not None and on.start(()) is not None
    assert HeadSampler("always_off").never
    ratio = HeadSampler("traceidratio", 0.25)
    share = sum(ratio.start(()) is not None for _ in range(4000)) / 4000
    assert 0.2 < share < 0.3
    with pytest.raises(ValueError):
        HeadSampler("jaeger_remote")
