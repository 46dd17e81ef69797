"""The log line of a circuit breaker transition.

Fallback decisions and transitions also reach whatever decision observers the composition
root wires in (the fallback event log, span events): see :mod:`gateway.core.observers`.
"""
from __future__ import annotations

import logging

log = logging.getLogger("gateway.policy")


def log_breaker_transition(name: str, frm: str, to: str, rates: dict) -> None:
    calls = rates["calls"]
    if rates["failure_rate"] < 0:  # (the breaker's "too few calls for a rate"; a new window starts empty)
        detail = f"calls={calls}, too few for rates"
    else:
        detail = (f"calls={calls} failure_rate={rates['failure_rate']:.1f}% "
                  f"slow_call_rate={rates['slow_call_rate']:.1f}%")
    log.info("circuit breaker %s: %s -> %s (%s)", name, frm, to, detail,
             extra={"event": "circuit_breaker.transition", "model": name, "fields": {"from": frm, "to": to}})
