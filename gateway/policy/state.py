"""A model version's policy state: built from its ``policy:`` config when the version loads.

A policy-only config edit is applied in place with :meth:`ModelPolicy.apply` (no session
reload): parts whose config didn't change keep their state (an open breaker stays open,
the cache stays warm); changed parts start fresh.
"""
from __future__ import annotations

import collections
import time
from collections.abc import Callable

from .admission import Admission
from .breaker import CircuitBreaker
from .config import CacheStep, ModelStep, PolicyConfig, StaticStep
from .fallback import ResponseCache, StaticAnswer
from .faults import FaultInjector
from .guard import OutputGuard


class StaticStepState:
    """A static step, precomputed for the model's outputs (and its classifier's confidence and label)."""

    def __init__(self, step: StaticStep, model, served_by: str):
        specs = {s.name: s for s in model.outputs}
        self.answer = StaticAnswer(step.static, specs, model.batchable, served_by)
        self.confidence = None
        self.label = None
        out = getattr(model, "classifier_output", None)
        if out is not None and out in self.answer.rows and self.answer.rows[out].ndim == 1:
            from ..core.dataplane import top1_numpy

            cfg = model.config
            top1, cls = top1_numpy(self.answer.rows[out][None, :], bool(cfg.classifier and cfg.classifier.logits))
            c = int(cls[0])
            self.confidence = float(top1[0])
            self.label = cfg.labels[c] if 0 <= c < len(cfg.labels) else str(c)


class ModelPolicy:
    def __init__(self, served_by: str, config: PolicyConfig, model, faults: FaultInjector | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.served_by = served_by
        self.model = model
        self.faults = faults
        self._clock = clock
        self.fallbacks: collections.Counter[str] = collections.Counter()  # degraded answers by reason
        self.rejections: collections.Counter[str] = collections.Counter()  # final rejections by reason
        self.config: PolicyConfig | None = None
        self.breaker: CircuitBreaker | None = None
        self.cache: ResponseCache | None = None
        self.apply(config)

    def apply(self, config: PolicyConfig) -> None:
        """Switch to ``config``; raises ValueError (and changes nothing) when it doesn't fit the model."""
        old = self.config
        chain: list[tuple[str, object]] = []
        cache_settings = None
        for i, step in enumerate(config.fallback.chain):
            if isinstance(step, StaticStep):
                try:
                    chain.append(("static", StaticStepState(step, self.model, self.served_by)))
                except ValueError as exc:
                    raise ValueError(f"policy.fallback.chain.{i}.static: {exc}") from None
            elif isinstance(step, CacheStep):
                cache_settings = step.cache
                chain.append(("cache", None))
            elif isinstance(step, ModelStep):
                chain.append(("model", step))
        # Nothing below raises: switch over.
        if old is None or old.circuit_breaker != config.circuit_breaker:
            self.breaker = CircuitBreaker(config.circuit_breaker, self.served_by, self._clock) \
                if config.circuit_breaker.enabled else None
        if old is None or old.admission != config.admission:
            self.admission = Admission(config.admission)
        if old is None or old.output_guard != config.output_guard:
            self.guard = OutputGuard(config.output_guard) if config.output_guard.enabled else None
        if cache_settings is None:
            self.cache = None
        elif self.cache is None or (self.cache.max_entries, self.cache.max_age_s) != \
                (cache_settings.max_entries, cache_settings.max_age_s):
            self.cache = ResponseCache(cache_settings, self._clock)
        self.chain = chain
        self.fallback_on = frozenset(config.fallback.triggers)
        self.config = config
        d = config.deadlines
        self.passthrough = (d.default_timeout_ms is None and d.attempt_timeout_ms is None
                            and not self.admission.enabled and self.breaker is None and self.guard is None
                            and not chain)

    def snapshot(self) -> dict:
        """Plain values for telemetry export and the admin API."""
        b = self.breaker
        a = self.admission
        return {
            "served_by": self.served_by,
            "breaker_state": b.state.value if b is not None else "disabled",
            "breaker_rates": b.rates() if b is not None else {},
            "breaker_not_permitted": b.not_permitted if b is not None else 0,
            "in_flight": a.in_flight,
            "concurrency_limit": a.limit(),
            "shed": a.shed,
            "cache_entries": len(self.cache) if self.cache is not None else 0,
            "fallbacks": dict(self.fallbacks),
            "rejections": dict(self.rejections),
        }
