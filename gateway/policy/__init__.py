"""Fallback policies per model version: deadlines, admission (load shedding), circuit breaker,
output guard, fallback chain and fault injection. These are decisions only: the order they
apply in, and the chain walk, are :mod:`gateway.core.pipeline`'s. Where each decision is made:

- :mod:`.deadlines`: how long the requested model may take.
- :mod:`.admission`: in-flight / queue limits and the adaptive (gradient) concurrency limit.
- :mod:`.breaker`: the circuit breaker (resilience4j states).
- :mod:`.guard`: which outputs count as failures.
- :mod:`.fallback`: the last-good-answer cache and static answers.
- :mod:`.faults`: injected latency, errors and NaN outputs (tests and bench only).
- :mod:`.state`: a model version's policy state; :mod:`.config`: the typed ``policy:`` / ``faults:`` blocks.
- :mod:`.reasons`: fallback reason labels and their telemetry codes; :mod:`.events`: the breaker's log line.

Nothing here imports grpc or the core.
"""
from .config import FaultInjectionConfig, PolicyConfig
from .reasons import FallbackReason

__all__ = ["FallbackReason", "FaultInjectionConfig", "PolicyConfig"]
