"""Which input features' recent mean moved most, per model version.

Every ``window_s`` the long-run statistics so far become the reference; the rows since then
are the recent window. A feature's score is ``|recent mean - reference mean| / reference
std``. :meth:`MeanShift.tick` runs on the telemetry aggregator's thread after each flush.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..api.stats import FeatureShift
from ..telemetry.models import ModelTelemetry

if TYPE_CHECKING:
    from ..kernels import FeatureStats


class MeanShift:
    def __init__(self, window_s: float = 60.0, top: int = 5) -> None:
        self.window_ns = int(window_s * 1e9)
        self.top = top
        self._last_rotation_ns: int | None = None
        # (telemetry id, input) -> (the FeatureStats it was taken from, its state then)
        self._refs: dict[tuple[int, str], tuple[FeatureStats, Mapping[str, Any]]] = {}
        self._lock = threading.Lock()

    def tick(self, models: Sequence[ModelTelemetry], now_ns: int) -> None:
        if self._last_rotation_ns is None:
            self._last_rotation_ns = now_ns
        elif now_ns - self._last_rotation_ns >= self.window_ns:
            self.rotate(models, now_ns)

    def rotate(self, models: Sequence[ModelTelemetry], now_ns: int) -> None:
        """Start a new recent window: the long-run state so far becomes the reference."""
        refs: dict[tuple[int, str], tuple[FeatureStats, Mapping[str, Any]]] = {}
        for st in models:
            with st.feature_lock:
                for name, fs in st.features.items():
                    refs[(st.model_id, name)] = (fs, fs.state())
        with self._lock:
            self._refs = refs
            self._last_rotation_ns = now_ns

    def top_shifts(self, st: ModelTelemetry) -> list[FeatureShift]:
        with self._lock:
            refs = self._refs
        shifts = []
        with st.feature_lock:
            for name, fs in st.features.items():
                found = refs.get((st.model_id, name))
                if found is None or found[0] is not fs:  # no window yet, or statistics restarted since
                    continue
                ref = found[1]
                cur = fs.state()
                n_ref = ref["count"].astype(np.float64)
                n_new = cur["count"] - ref["count"]
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean_new = (cur["count"] * cur["mean"] - n_ref * ref["mean"]) / n_new
                    std_ref = np.sqrt(ref["m2"] / (n_ref - 1))
                    score = np.abs(mean_new - ref["mean"]) / std_ref
                score = np.where((n_new > 0) & (n_ref > 1), score, np.nan)
                score = np.where(np.isnan(score) & (n_new > 0) & (n_ref > 1) & (mean_new == ref["mean"]), 0.0,
                                 score)
                nan_new = cur["nan_count"] - ref["nan_count"]
                for f in np.flatnonzero(~np.isnan(score)):
                    shifts.append(FeatureShift(name, int(f), float(mean_new[f]), float(std_ref[f]),
                                               float(score[f]), int(nan_new[f])))
        shifts.sort(key=lambda s: s.shift_score, reverse=True)
        return shifts[:self.top]
