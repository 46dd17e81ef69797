"""``MetricsData`` → Prometheus text exposition format 0.0.4 (what ``/metrics`` serves).

Names follow the OpenTelemetry→Prometheus compatibility rules: dots become underscores,
the unit becomes a suffix (``_seconds``, ``_bytes``, ``_ratio``), monotonic sums end in
``_total``; the resource becomes a ``target_info`` gauge.
"""
from __future__ import annotations

import math
import re
from typing import cast

from opentelemetry.sdk.metrics.export import (Gauge, Histogram, HistogramDataPoint, MetricsData,
                                              NumberDataPoint, Sum)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": "ratio"}
_BAD = re.compile(r"[^a-zA-Z0-9_:]")


def metric_name(name: str, unit: str | None, counter: bool = False) -> str:
    n = _BAD.sub("_", name)
    suffix = _UNITS.get(unit or "")
    if suffix and not n.endswith("_" + suffix):
        n = f"{n}_{suffix}"
    if counter and not n.endswith("_total"):
        n += "_total"
    return n


def _value(v: float) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "+Inf" if v > 0 else "-Inf"
        return repr(v)
    return str(int(v))


def _labels(attrs, extra: tuple = ()) -> str:
    items = [(_BAD.sub("_", str(k)), str(v)) for k, v in (attrs or {}).items()] + list(extra)
    if not items:
        return ""
    body = ",".join('{}="{}"'.format(k, v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"'))
                    for k, v in items)
    return "{" + body + "}"


def render(data: MetricsData) -> str:
    """Render cumulative metrics; exponential histograms are skipped (scrape uses explicit)."""
    lines: list[str] = []
    seen: set[str] = set()
    for rm in data.resource_metrics:
        lines.append("# TYPE target_info gauge")
        lines.append(f"target_info{_labels(rm.resource.attributes)} 1")
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                d = m.data
                if isinstance(d, Sum):
                    counter = d.is_monotonic
                    name = metric_name(m.name, m.unit, counter)
                    kind = "counter" if counter else "gauge"
                elif isinstance(d, Gauge):
                    name, kind = metric_name(m.name, m.unit), "gauge"
                elif isinstance(d, Histogram):
                    name, kind = metric_name(m.name, m.unit), "histogram"
                else:
                    continue
                if name not in seen:
                    seen.add(name)
                    if m.description:
                        lines.append(f"# HELP {name} {m.description}")
                    lines.append(f"# TYPE {name} {kind}")
                for point in d.data_points:
                    if kind != "histogram":
                        n = cast(NumberDataPoint, point)
                        lines.append(f"{name}{_labels(n.attributes)} {_value(n.value)}")
                        continue
                    p = cast(HistogramDataPoint, point)
                    running = 0
                    for bound, count in zip(list(p.explicit_bounds) + [math.inf], p.bucket_counts):
                        running += count
                        le = "+Inf" if math.isinf(bound) else repr(float(bound))
                        lines.append(f"{name}_bucket{_labels(p.attributes, (('le', le),))} {running}")
                    lines.append(f"{name}_sum{_labels(p.attributes)} {_value(float(p.sum))}")
                    lines.append(f"{name}_count{_labels(p.attributes)} {p.count}")
    return "\n".join(lines) + "\n"
