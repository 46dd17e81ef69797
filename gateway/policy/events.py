"""Where each fallback decision is announced: a structured log line, and the hook for span events.

:data:`decision_hooks` holds callables run for every decision; the tracing layer
(``telemetry.otel.traces``) registers one that adds the decision as an event on the request's span.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("gateway.policy")

# Each hook gets (request_id, event name, attributes). Hooks must be cheap and must not raise.
DecisionHook = Callable[[str, str, dict], None]
decision_hooks: list[DecisionHook] = []


def decision(request_id: str, event: str, **attributes) -> None:
    """One fallback decision for one request (e.g. ``fallback.step`` with reason and step)."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("policy decision %s request=%s %s", event, request_id,
                  " ".join(f"{k}={v}" for k, v in attributes.items()))
    for hook in decision_hooks:
        hook(request_id, event, attributes)


def breaker_transition(name: str, frm: str, to: str, rates: dict) -> None:
    log.info("circuit breaker %s: %s -> %s (calls=%d failure_rate=%.1f%% slow_call_rate=%.1f%%)",
             name, frm, to, rates["calls"], rates["failure_rate"], rates["slow_call_rate"], 
             extra={"event": "circuit_breaker.transition", "model": name, "fields": {"from": frm, "to": to}})
    for hook in decision_hooks:
        hook("", "circuit_breaker.transition", {"model": name, "from": frm, "to": to})
