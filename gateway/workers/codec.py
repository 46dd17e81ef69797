"""A worker's :class:`~gateway.telemetry.readers.StatsShare` as JSON (between the workers of one
server, over their private sockets; NaN is written as JSON's ``NaN`` extension)."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from ..api.stats import BatchSizeTotal, PhaseTotal, Rejected, VersionTotals
from ..telemetry.readers import StatsShare, WindowHistogram, WindowPart
from ..telemetry.snapshots import HistogramSnapshot

_HISTOGRAMS = ("latency", "queue", "compute")
_PHASES = ("success", "fail", "queue", "compute")
_NESTED = (*_HISTOGRAMS, "totals")


def _window_out(w: WindowHistogram | None) -> dict[str, Any] | None:
    if w is None:
        return None
    h = w.histogram
    return {"scale": h.scale, "offset": h.offset, "bucket_counts": [int(c) for c in h.bucket_counts],
            "zero_count": h.zero_count, "count": h.count, "sum": h.sum, "min": h.min, "max": h.max,
            "start_time_ns": h.start_time_ns, "time_ns": h.time_ns, "lo": w.lo, "hi": w.hi}


def _window_in(d: dict[str, Any] | None) -> WindowHistogram | None:
    if d is None:
        return None
    h = HistogramSnapshot(int(d["scale"]), int(d["offset"]), np.asarray(d["bucket_counts"], dtype=np.int64),
                          int(d["zero_count"]), int(d["count"]), float(d["sum"]), float(d["min"]),
                          float(d["max"]), int(d["start_time_ns"]), int(d["time_ns"]))
    return WindowHistogram(h, float(d["lo"]), float(d["hi"]))


def _totals_in(d: dict[str, Any] | None) -> VersionTotals | None:
    if d is None:
        return None
    success, fail, queue, compute = (PhaseTotal(int(d[name]["count"]), int(d[name]["ns"])) for name in _PHASES)
    batches = tuple(BatchSizeTotal(int(b["batch_size"]), int(b["executions"]), int(b["compute_ns"]))
                    for b in d["batches"])
    return VersionTotals(success, fail, queue, compute, int(d["rows"]), int(d["executions"]), batches,
                         int(d["last_unix_ms"]))


def dumps(share: StatsShare) -> str:
    parts = []
    for p in share.parts:
        d = {f.name: getattr(p, f.name) for f in dataclasses.fields(p) if f.name not in _NESTED}
        d.update({name: _window_out(getattr(p, name)) for name in _HISTOGRAMS})
        d["totals"] = dataclasses.asdict(p.totals) if p.totals is not None else None
        parts.append(d)
    return json.dumps({"parts": parts, "ring_drops": share.ring_drops, "feedback_unknown": share.feedback_unknown,
                       "rejected": [dataclasses.astuple(r) for r in share.rejected]})


def loads(text: str) -> StatsShare:
    """Raises ValueError (or KeyError, TypeError) on a text :func:`dumps` did not write."""
    data = json.loads(text)
    parts = []
    for d in data["parts"]:
        fields: dict[str, Any] = {k: v for k, v in d.items() if k not in _NESTED}
        fields.update({name: _window_in(d[name]) for name in _HISTOGRAMS})
        fields["totals"] = _totals_in(d["totals"])
        parts.append(WindowPart(**fields))
    rejected = tuple(Rejected(str(m), str(v), str(s), str(r), int(n)) for m, v, s, r, n in data["rejected"])
    return StatsShare(parts, int(data["ring_drops"]), int(data["feedback_unknown"]), rejected)
