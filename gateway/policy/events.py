"""The log line of a circuit breaker transition.

Fallback decisions and transitions also reach whatever decision observers the composition
root wires in (the fallback event log, span events): see :mod:`gateway.core.observers`.
"""
from __future__ import annotations

import logging

log = logging.getLogger("gateway.policy")


def log_breaker_transition(name: str, frm: str, to: str, rates: dict) -> None:
    log.info("circuit breaker %s: %s -> %s (calls=%d failure_rate=%.1f%% slow_call_rate=%.1f%%)",
             name, frm, to, rates["calls"], rates["failure_rate"], rates["slow_call_rate"],
             extra={"event": "circuit_breaker.transition", "model": name, "fields": {"from": frm, "to": to}})
