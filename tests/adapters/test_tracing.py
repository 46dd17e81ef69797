"""The request-path tracing decisions: W3C ``traceparent`` parsing and head sampling."""
from __future__ import annotations

import logging

import pytest

from gateway.adapters.tracing import HeadSampler, parse_traceparent
from gateway.logs import current_ids

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


@pytest.fixture(autouse=True)
def _no_ids_left_behind():
    """The sampler sets the ids log lines carry; keep them inside each test."""
    token = current_ids.set(None)
    yield
    current_ids.reset(token)


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


def test_a_ratio_sampler_without_a_parent_decision_looks_at_the_trace_id():
    sampler = HeadSampler("traceidratio", 0.5)                  # not parent-based: the parent's flag is ignored
    low = f"00-{'0' * 16}{'1' * 16}-{PARENT}-00"                # low 64 bits 0x1111...: below half
    high = f"00-{'0' * 16}{'f' * 16}-{PARENT}-01"               # above half
    trace = sampler.start((("other", "x"), ("traceparent", low)))
    assert trace is not None and trace.trace_id == int("1" * 16, 16) and not trace.parent_remote_sampled
    assert sampler.start((("traceparent", high),)) is None


def test_a_sampled_or_continued_trace_names_the_ids_for_log_lines():
    trace = HeadSampler("always_on").start((("traceparent", f"00-{TRACE}-{PARENT}-01"),))
    assert current_ids.get() == (TRACE, f"{trace.span_id:016x}") and trace.span_id != 0
    assert trace.parent_remote_sampled and trace.events == [] and trace.start_wall_ns > 0
    current_ids.set(None)
    assert HeadSampler("parentbased_always_off").start((("traceparent", f"00-{TRACE}-{PARENT}-00"),)) is None
    assert current_ids.get()[0] == TRACE                       # not sampled, but the logs still carry it


def test_sampler_names_and_the_configured_fallback(caplog):
    assert HeadSampler("always_off").never and not HeadSampler("parentbased_always_off").never
    assert not HeadSampler("traceidratio", 0.1).never and HeadSampler("traceidratio", 0.0).never
    assert HeadSampler(" ALWAYS_ON ").name == "always_on"
    with caplog.at_level(logging.WARNING, logger="gateway.telemetry"):
        sampler = HeadSampler.configured("jaeger_remote", 0.2)
    assert (sampler.name, sampler.ratio) == ("parentbased_traceidratio", 0.2)
    assert "unsupported OTEL_TRACES_SAMPLER 'jaeger_remote'; using parentbased_traceidratio" in caplog.text


def test_ids_only_samples_nothing_but_names_a_clients_trace():
    """What the adapter runs without span export: log lines still carry a client's trace."""
    ids = HeadSampler.ids_only()
    assert ids.start((("traceparent", f"00-{TRACE}-{PARENT}-01"),)) is None
    assert current_ids.get()[0] == TRACE and len(current_ids.get()[1]) == 16
    current_ids.set(None)
    assert all(ids.start(()) is None for _ in range(100)) and current_ids.get() is None
    assert ids.start((("traceparent", "garbage"),)) is None and current_ids.get() is None


def test_describe_states_the_ratio_only_where_it_decides():
    assert HeadSampler("parentbased_traceidratio", 0.01).describe() == "parentbased_traceidratio 0.01"
    assert HeadSampler("traceidratio", 0.25).describe() == "traceidratio 0.25"
    assert HeadSampler("always_on", 0.5).describe() == "always_on"
    assert HeadSampler("parentbased_always_off").describe() == "parentbased_always_off"
    assert HeadSampler.configured("jaeger_remote", 0.2).describe() == "parentbased_traceidratio 0.2"


@pytest.mark.parametrize("name", ["always_on", "parentbased_always_on", "traceidratio"])
def test_a_paused_sampler_samples_nothing_and_still_names_a_clients_trace(name):
    """Paused while span export fails: nothing sampled, continued or not, until resumed."""
    sampler = HeadSampler(name, 1.0)
    parent = (("traceparent", f"00-{TRACE}-{PARENT}-01"),)
    sampler.set_paused(True)
    assert all(sampler.start(()) is None for _ in range(100))
    assert sampler.start(parent) is None
    assert current_ids.get()[0] == TRACE                      # log lines still carry the client's trace
    sampler.set_paused(False)
    assert sampler.start(()) is not None and sampler.start(parent).trace_id == int(TRACE, 16)
