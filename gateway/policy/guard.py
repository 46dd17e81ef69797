"""Output guard: outputs that are NaN/Inf or out of the configured range fail the call."""
from __future__ import annotations

import numpy as np

from .config import OutputGuardConfig


class OutputGuard:
    def __init__(self, config: OutputGuardConfig):
        self.config = config
        self._names = frozenset(config.outputs)

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def check(self, outputs: dict[str, np.ndarray]) -> str | None:
        """None when the outputs pass; else what is wrong with which output."""
        c = self.config
        for name, value in outputs.items():
            if self._names and name not in self._names:
                continue
            if value.dtype.kind != "f" or value.size == 0:
                continue
            if c.reject_non_finite and not np.isfinite(value).all():
                return f"output {name!r} holds NaN or Inf"
            if c.min_value is not None or c.max_value is not None:
                finite = value[np.isfinite(value)] if not c.reject_non_finite else value
                if finite.size == 0:
                    continue
                lo, hi = finite.min(), finite.max()
                if c.min_value is not None and lo < c.min_value:
                    return f"output {name!r} has {float(lo):g} below min_value {c.min_value:g}"
                if c.max_value is not None and hi > c.max_value:
                    return f"output {name!r} has {float(hi):g} above max_value {c.max_value:g}"
        return None
