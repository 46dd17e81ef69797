"""Fault injection per model (tests and bench): added latency, failed executions, NaN outputs.

Active only in a process started with ``GATEWAY_ALLOW_FAULT_INJECTION=true``; there the
repository manager wraps each model in :class:`FaultyModel` and logs a WARNING naming the
faults. Faults apply per execution (a batch), on the executor thread, so injected latency
occupies the model instance the way a slow model would.
"""
from __future__ import annotations

import logging
import random
import threading
import time

import numpy as np

from .config import FaultInjectionConfig

log = logging.getLogger("gateway.policy")


class InjectedFault(RuntimeError):
    """An execution failed on purpose."""


class FaultInjector:
    def __init__(self, config: FaultInjectionConfig | None):
        self._lock = threading.Lock()
        self.executions = 0
        self.injected_errors = 0
        self.injected_nans = 0
        self.update(config)

    def update(self, config: FaultInjectionConfig | None) -> None:
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed if config is not None else None)

    def before(self) -> tuple[bool, bool]:
        """Runs before an execution: sleeps the injected latency; returns (fail, nan)."""
        with self._lock:
            self.executions += 1
            c = self.config
            if c is None:
                return False, False
            rng = self._rng
            delay_ms = c.latency_ms + (rng.random() * c.latency_jitter_ms if c.latency_jitter_ms else 0.0)
            fail = c.error_rate > 0 and rng.random() < c.error_rate
            nan = not fail and c.nan_rate > 0 and rng.random() < c.nan_rate
            self.injected_errors += fail
            self.injected_nans += nan
        if delay_ms > 0:
            time.sleep(delay_ms / 1e3)
        return fail, nan


class FaultyModel:
    """Wraps an OnnxModel; everything but ``run`` is the wrapped model's."""

    def __init__(self, model, injector: FaultInjector):
        self._model = model
        self.faults = injector

    def __getattr__(self, name):
        return getattr(self._model, name)

    def run(self, feeds, output_names=None):
        fail, nan = self.faults.before()
        if fail:
            raise InjectedFault("injected fault (faults.error_rate)")
        values = self._model.run(feeds, output_names)
        if nan:
            values = [np.full_like(v, np.nan) if v.dtype.kind == "f" else v for v in values]
        return values


def announce(served_by: str, config: FaultInjectionConfig | None) -> None:
    if config is not None:
        log.warning("FAULT INJECTION ACTIVE for model %s: %s (GATEWAY_ALLOW_FAULT_INJECTION=true; "
                    "never in production)", served_by, config.describe())
