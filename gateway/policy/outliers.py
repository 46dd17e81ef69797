"""Per-row outlier scores against a reference, and the decision whether a request is an outlier.

A row's score has two parts, per input:

- ``out_of_range``: how many of its features lie outside the reference's range ``[low, high]``
  (NaN and infinite values count as outside);
- ``robust_z``: the largest ``|x - center| / scale`` over its finite features, where ``center``
  is the reference median and ``scale`` ``1.4826 * MAD`` (the standard deviation, for normal
  data) — or the mean and standard deviation where the reference has no median (a captured
  one). A feature whose scale is 0 or not finite is left out of ``robust_z``
  (``out_of_range`` still sees it).

With ``policy.outliers`` on, a request with a row of more than ``max_out_of_range`` features
out of range, or a ``robust_z`` above ``max_robust_z``, fails with reason ``outlier`` before
it is queued: it walks the fallback chain (where ``fallback.on`` lists ``outlier``) or is
rejected. The same scores give the version's outlier rate in its monitoring.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

MAD_TO_SD = 1.4826  # the MAD of a normal distribution times this is its standard deviation


class Reference(NamedTuple):
    """One input's reference, per feature (float64 arrays of its feature count)."""
    low: np.ndarray
    high: np.ndarray
    center: np.ndarray
    scale: np.ndarray


def reference(low, high, center, scale) -> Reference:
    """A :class:`Reference` whose unusable scales (0, negative, not finite) are NaN (left out)."""
    scale = np.asarray(scale, dtype=np.float64)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, np.nan)
    return Reference(np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64),
                     np.asarray(center, dtype=np.float64), scale)


def scores(x: np.ndarray, ref: Reference) -> tuple[np.ndarray, np.ndarray]:
    """``(out_of_range[rows], robust_z[rows])`` of ``x`` (rows first; flattened to the
    reference's features per row). ``robust_z`` is 0 for a row with no scored feature."""
    rows = x.shape[0] if x.ndim else 1
    v = np.asarray(x, dtype=np.float64).reshape(rows, -1)
    with np.errstate(invalid="ignore", over="ignore"):
        inside = (v >= ref.low) & (v <= ref.high)          # NaN compares False: outside
        out_of_range = (~inside).sum(axis=1)
        z = np.abs(v - ref.center) / ref.scale
    z = np.where(np.isfinite(z), z, 0.0)                   # unscored features, NaN/inf values
    return out_of_range, z.max(axis=1, initial=0.0)


class OutlierGate:
    """The outlier decision of one model version (``references``: input name -> reference)."""

    def __init__(self, max_out_of_range: int, max_robust_z: float | None,
                 references: Mapping[str, Reference]) -> None:
        self.max_out_of_range = max_out_of_range
        self.max_robust_z = max_robust_z
        self.references = dict(references)
        self.outliers = 0  # requests found to be outliers

    def check(self, inputs: Mapping[str, np.ndarray]) -> str | None:
        """None when every row passes; else what the first outlier row is, in a short sentence."""
        for name, ref in self.references.items():
            x = inputs.get(name)
            if x is None or x.size == 0 or x.size % ref.low.size:
                continue
            n_out, z = scores(x, ref)
            bad = n_out > self.max_out_of_range
            if self.max_robust_z is not None:
                bad |= z > self.max_robust_z
            if bad.any():
                self.outliers += 1
                row = int(np.argmax(bad))
                return (f"row {row} of input {name!r} is an outlier against the reference: "
                        f"{int(n_out[row])} features outside its range (at most {self.max_out_of_range}), "
                        f"robust z {float(z[row]):.3g}"
                        + (f" (at most {self.max_robust_z:g})" if self.max_robust_z is not None else ""))
        return None
