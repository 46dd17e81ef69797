"""Decisions: one decision fanned out to every decision observer; a failing observer is logged
once and never stops the others."""
from __future__ import annotations

import logging

from gateway.api import InferRequest
from gateway.core.observers import Decisions


def test_each_decision_reaches_every_observer_with_its_attributes():
    a, b = [], []
    decide = Decisions((lambda r, e, attrs: a.append((r, e, attrs)), lambda r, e, attrs: b.append((r, e, attrs))))
    request = InferRequest(model="m", inputs={}, request_id="r1")
    decide(request, "fallback.triggered", model="m@1", reason="error")
    decide(None, "circuit_breaker.transition", model="m@1", **{"from": "closed", "to": "open"})
    assert a == b == [(request, "fallback.triggered", {"model": "m@1", "reason": "error"}),
                      (None, "circuit_breaker.transition", {"model": "m@1", "from": "closed", "to": "open"})]
    assert decide and not Decisions()
    Decisions()(request, "fallback.triggered", model="m@1")       # nobody listening: nothing happens


def test_a_failing_observer_is_logged_once_and_the_others_still_hear(caplog):
    heard = []

    def broken(request, event, attributes):
        raise RuntimeError("observer broke")

    decide = Decisions((broken, lambda r, e, attrs: heard.append(e)))
    with caplog.at_level(logging.ERROR, logger="gateway.core"):
        for _ in range(3):
            decide(None, "fallback.answered", step=0)
    assert heard == ["fallback.answered"] * 3
    failed = [r for r in caplog.records if r.getMessage().startswith("decision observer")]
    assert len(failed) == 1 and "observer broke" in failed[0].exc_text
