"""Several workers' Prometheus text expositions as one (what the supervisor's ``/metrics`` serves).

Counters and histograms add sample by sample (same name, same labels): the workers' histograms
have the same fixed bucket bounds (:data:`gateway.telemetry.otel.points.LATENCY_BOUNDS_S`), so the
sum is the histogram of all their requests. Gauges (and anything untyped) are not summed, since
a sum of drift scores or of utilisations means nothing: each worker's samples are kept, with a
``worker`` label added. Families keep the order of their first appearance.
"""
from __future__ import annotations

import dataclasses
import math

_ADDED = ("counter", "histogram")
_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


@dataclasses.dataclass
class _Family:
    kind: str = "untyped"
    help: str = ""
    # counters, histograms: (sample name, label body) -> the workers' sum; the rest: each
    # worker's samples (name, label body with the worker label, value text) in order
    added: dict[tuple[str, str], float] = dataclasses.field(default_factory=dict)
    kept: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)


def _split_sample(line: str) -> tuple[str, str, str]:
    """``name{labels} value`` -> (name, label body without braces, value text)."""
    brace = line.find("{")
    space = line.find(" ")
    if brace < 0 or 0 <= space < brace:
        name, _, value = line.partition(" ")
        return name, "", value.strip().split(" ")[0]
    i, quoted = brace + 1, False
    while i < len(line):
        c = line[i]
        if quoted and c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == "}" and not quoted:
            break
        i += 1
    return line[:brace], line[brace + 1:i], line[i + 1:].strip().split(" ")[0]


def _number(text: str) -> float:
    special = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}
    return special[text] if text in special else float(text)


def _format(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value == int(value) and abs(value) < 2 ** 53 else repr(value)


def merge(texts: list[tuple[str, str]]) -> str:
    """Merge ``(worker label, exposition text)`` pairs into one exposition."""
    families: dict[str, _Family] = {}
    for worker, text in texts:
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                words = line.split(" ", 3)
                if len(words) >= 3 and words[1] in ("TYPE", "HELP"):
                    family = families.setdefault(words[2], _Family())
                    if words[1] == "TYPE":
                        family.kind = words[3].strip() if len(words) > 3 else "untyped"
                    else:
                        family.help = words[3] if len(words) > 3 else ""
                continue
            name, labels, value = _split_sample(line)
            family_name = name
            if name not in families:
                for suffix in _SUFFIXES:
                    if name.endswith(suffix) and name[:-len(suffix)] in families:
                        family_name = name[:-len(suffix)]
                        break
            family = families.setdefault(family_name, _Family())
            if family.kind in _ADDED:
                key = (name, labels)
                family.added[key] = family.added.get(key, 0.0) + _number(value)
            else:
                worker_label = f'worker="{worker}"'
                family.kept.append((name, f"{labels},{worker_label}" if labels else worker_label, value))
    lines = []
    for name, family in families.items():
        if not family.added and not family.kept:
            continue
        if family.help:
            lines.append(f"# HELP {name} {family.help}")
        lines.append(f"# TYPE {name} {family.kind}")
        for (sample, labels), total in family.added.items():
            lines.append(f"{sample}{{{labels}}} {_format(total)}" if labels else f"{sample} {_format(total)}")
        for sample, labels, value in family.kept:
            lines.append(f"{sample}{{{labels}}} {value}")
    return "\n".join(lines) + "\n"
