"""The tally of refused requests: bounded whatever names clients send."""
from __future__ import annotations

import dataclasses

from gateway.api import GatewayError, Status, invalid
from gateway.core import rejections
from gateway.core.rejections import Rejections


def _known(model, version):
    return (model, version if version == "1" else "") if model == "m" else ("", "")


def test_made_up_models_and_versions_count_under_none_and_the_table_is_bounded(monkeypatch):
    r = Rejections(_known)
    for i in range(100):
        r.count(f"made-up-{i}", "", invalid("x", "dtype"))
        r.count("m", f"v{i}", invalid("x", "shape"))
    r.count("m", "1", GatewayError(Status.RESOURCE_EXHAUSTED, "full"), "overloaded")
    r.count("m", "1", GatewayError(Status.UNAVAILABLE, "x"))                   # no reason: the status's name
    assert [(x.model, x.version, x.status, x.reason, x.requests) for x in r.snapshot()] == [
        ("", "", "INVALID_ARGUMENT", "dtype", 100), ("m", "", "INVALID_ARGUMENT", "shape", 100),
        ("m", "1", "RESOURCE_EXHAUSTED", "overloaded", 1), ("m", "1", "UNAVAILABLE", "unavailable", 1)]
    assert [x.model for x in r.snapshot("m")] == ["m"] * 3
    monkeypatch.setattr(rejections, "MAX_KEYS", 4)
    r.count("m", "1", invalid("x", "malformed"))                                # a fifth key: counted as other
    assert ("", "", "INVALID_ARGUMENT", "other", 1) in [dataclasses.astuple(x) for x in r.snapshot()]
    assert len(r.snapshot()) == 5


def test_tallies_of_several_workers_add_by_key():
    from gateway.api.stats import Rejected
    from gateway.core.rejections import added

    a = (Rejected("m", "1", "INVALID_ARGUMENT", "shape", 3), Rejected("", "", "NOT_FOUND", "unknown_model", 2))
    b = (Rejected("m", "1", "INVALID_ARGUMENT", "shape", 4), Rejected("m", "1", "INVALID_ARGUMENT", "dtype", 1))
    assert added(a, b) == (Rejected("", "", "NOT_FOUND", "unknown_model", 2),
                           Rejected("m", "1", "INVALID_ARGUMENT", "dtype", 1),
                           Rejected("m", "1", "INVALID_ARGUMENT", "shape", 7))
    assert added(a) == tuple(sorted(a, key=lambda r: (r.model, r.version, r.status, r.reason)))
    assert added() == ()
