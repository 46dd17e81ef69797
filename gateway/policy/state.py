"""A model version's policy state: built from its ``policy:`` config when the version loads.

A policy-only config edit is applied in place with :meth:`ModelPolicy.apply` (no session
reload): parts whose config didn't change keep their state (an open breaker stays open,
the cache stays warm); changed parts start fresh.
"""
from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping, Sequence

from ..api import TensorSpec
from .admission import Admission
from .breaker import CircuitBreaker, TransitionObserver
from .config import CacheStep, ModelStep, PolicyConfig, StaticStep
from .fallback import ResponseCache, StaticAnswer
from .guard import OutputGuard
from .outliers import OutlierGate, Reference


class ModelPolicy:
    """Decisions for one model version; ``outputs`` and ``batchable`` describe the model (a
    static answer is checked against them), ``on_transition`` hears breaker state changes."""

    def __init__(self, served_by: str, config: PolicyConfig, outputs: Sequence[TensorSpec], batchable: bool,
                 *, on_transition: TransitionObserver | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 outlier_reference: Mapping[str, Reference] | None = None):
        self.served_by = served_by
        self._outputs = {s.name: s for s in outputs}
        self._batchable = batchable
        self._on_transition = on_transition
        self._clock = clock
        self._outlier_reference = outlier_reference  # from the version's profile (None: it has none)
        self.outliers: OutlierGate | None = None
        self.fallbacks: collections.Counter[str] = collections.Counter()  # degraded answers by reason
        self.rejections: collections.Counter[str] = collections.Counter()  # final rejections by reason
        self.config: PolicyConfig = None  # type: ignore[assignment]  # (no old config: apply sets it)
        self.breaker: CircuitBreaker | None = None
        self.cache: ResponseCache | None = None
        self.apply(config)

    def apply(self, config: PolicyConfig) -> None:
        """Switch to ``config``; raises ValueError (and changes nothing) when it doesn't fit the model."""
        old: PolicyConfig | None = self.config
        chain: list[tuple[str, object]] = []
        cache_settings = None
        for i, step in enumerate(config.fallback.chain):
            if isinstance(step, StaticStep):
                try:
                    chain.append(("static", StaticAnswer(step.static, self._outputs, self._batchable,
                                                         self.served_by)))
                except ValueError as exc:
                    raise ValueError(f"policy.fallback.chain.{i}.static: {exc}") from None
            elif isinstance(step, CacheStep):
                cache_settings = step.cache
                chain.append(("cache", None))
            elif isinstance(step, ModelStep):
                chain.append(("model", step))
        # Nothing below raises: switch over.
        if old is None or old.circuit_breaker != config.circuit_breaker:
            self.breaker = CircuitBreaker(config.circuit_breaker, self.served_by, self._clock,
                                          on_transition=self._on_transition) \
                if config.circuit_breaker.enabled else None
        if old is None or old.admission != config.admission:
            self.admission = Admission(config.admission)
        if old is None or old.output_guard != config.output_guard:
            self.guard = OutputGuard(config.output_guard) if config.output_guard.enabled else None
        o = config.outliers
        if old is None or old.outliers != o:
            self.outliers = OutlierGate(o.max_out_of_range, o.max_robust_z, self._outlier_reference) \
                if o.enabled and self._outlier_reference else None
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
                            and self.outliers is None and not chain)

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
