"""SDK observable instruments: in-flight requests, queue depth, online quality from delayed labels,
drift against the reference, process CPU/memory, GPU (NVML).

Callbacks run only when a reader collects (on the export thread or a ``/metrics`` scrape),
never on the request path.
"""
from __future__ import annotations

import logging
import math
import os
import resource as _resource
from collections.abc import Callable, Mapping

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from ...api import Status
from ...api.stats import QualitySnapshot

log = logging.getLogger("gateway.telemetry")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss * 1024


def register_gateway_instruments(meter: Meter, dataplane) -> None:
    """In-flight requests and their payload bytes, and queue depth, breaker state and admission limit per loaded version
    (from the data plane's :meth:`~gateway.core.DataPlane.version_states`); requests refused by reason
    (its ``rejections``)."""
    def in_flight(_: CallbackOptions):
        return [Observation(dataplane.in_flight)]

    def in_flight_bytes(_: CallbackOptions):
        return [Observation(dataplane.inflight_bytes)]

    def states():
        for v in dataplane.version_states():
            yield v, {"gateway.model.name": v.name, "gateway.model.version": v.version}

    def queue_depth(_: CallbackOptions):
        return [Observation(v.queue_depth, attrs) for v, attrs in states()]

    def breaker_state(_: CallbackOptions):
        # A state set: one series per state, 1 for the one the breaker is in.
        out = []
        for v, attrs in states():
            if v.breaker_state is not None:
                for state in ("closed", "open", "half_open"):
                    out.append(Observation(int(state == v.breaker_state),
                                           {**attrs, "gateway.circuit_breaker.state": state}))
        return out

    def concurrency_limit(_: CallbackOptions):
        return [Observation(v.concurrency_limit, attrs) for v, attrs in states() if v.concurrency_limit is not None]

    def shadow_pairs():
        for s in dataplane.shadowing.snapshot():
            yield s, {"gateway.shadow.primary": s.primary, "gateway.shadow.candidate": s.shadow}

    def shadow_requests(_: CallbackOptions):
        out = []
        for s, attrs in shadow_pairs():
            errors = sum(s.errors.values())
            out.append(Observation(s.mirrored - errors, {**attrs, "gateway.shadow.outcome": "answered"}))
            out.append(Observation(s.shed, {**attrs, "gateway.shadow.outcome": "shed"}))
            for status, n in s.errors.items():
                out.append(Observation(n, {**attrs, "gateway.shadow.outcome": status.lower()}))
        return out

    def shadow_gauge(field: str):
        def observe(_: CallbackOptions):
            return [Observation(getattr(s, field), attrs) for s, attrs in shadow_pairs()
                    if not math.isnan(getattr(s, field))]
        return observe

    def rejected(_: CallbackOptions):
        return [Observation(r.requests, {"gateway.model.name": r.model, "gateway.model.version": r.version,
                                         "rpc.grpc.status_code": int(Status[r.status]), "gateway.reject.reason": r.reason})
                for r in dataplane.rejections.snapshot()]

    meter.create_observable_gauge(
        "gateway.circuit_breaker.state", [breaker_state], unit="1",
        description="Circuit breaker state per model version (1 for the current state).")
    meter.create_observable_gauge(
        "gateway.admission.limit", [concurrency_limit], unit="{request}",
        description="Admission concurrency limit per model version (adaptive when enabled).")
    meter.create_observable_up_down_counter(
        "gateway.requests.in_flight", [in_flight], unit="{request}",
        description="Requests received and not yet answered.")
    meter.create_observable_up_down_counter(
        "gateway.requests.in_flight_bytes", [in_flight_bytes], unit="By",
        description="Request payload bytes admitted and not yet answered (bounded by max_inflight_bytes).")
    meter.create_observable_gauge(
        "gateway.queue.depth", [queue_depth], unit="{request}",
        description="Requests waiting in a model version's batch queue.")
    meter.create_observable_counter(
        "gateway.shadow.requests", [shadow_requests], unit="{request}",
        description="Shadow requests per (primary, candidate) pair, by outcome (answered, shed, or the status).")
    meter.create_observable_gauge(
        "gateway.shadow.agreement", [shadow_gauge("agreement")], unit="1",
        description="Share of shadowed rows whose predicted labels agree with the primary's.")
    meter.create_observable_gauge(
        "gateway.shadow.mean_abs_diff", [shadow_gauge("mean_abs_diff")], unit="1",
        description="Mean absolute difference of the outputs the primary and the candidate share.")
    meter.create_observable_gauge(
        "gateway.shadow.latency.p99", [shadow_gauge("p99_ms")], unit="ms",
        description="p99 latency of the candidate's shadow answers (the last 1024).")
    meter.create_observable_counter(
        "gateway.rejected", [rejected], unit="{request}",
        description="Requests refused, by model, status and reason (gateway.api.errors.REJECT_REASONS, "
                    "or the fallback policy's reason).")


def register_quality_instruments(meter: Meter, quality: Callable[[], Mapping[tuple[str, str], QualitySnapshot]],
                                 unknown: Callable[[], int]) -> None:
    """Online quality from delayed labels per model version (``quality``: the prediction store's
    snapshot, ``gateway.monitoring.labels``): accuracy and macro F1 (classifiers), MAE and RMSE
    (regressors) over each version's window, and the label outcomes as totals."""
    def attrs(key: tuple[str, str]) -> dict:
        return {"gateway.model.name": key[0], "gateway.model.version": key[1]}

    def gauge(field: str):
        def observe(_: CallbackOptions):
            return [Observation(value, attrs(key)) for key, q in quality().items()
                    if not math.isnan(value := getattr(q, field))]
        return observe

    def labels(_: CallbackOptions):
        return [Observation(getattr(q, outcome), {**attrs(key), "gateway.feedback.outcome": outcome})
                for key, q in quality().items() for outcome in ("joined", "late", "duplicate", "invalid")]

    def predictions(_: CallbackOptions):
        return [Observation(q.predictions, attrs(key)) for key, q in quality().items()]

    for field, what in (("accuracy", "Accuracy"), ("macro_f1", "Macro F1")):
        meter.create_observable_gauge(
            f"gateway.quality.{field}", [gauge(field)], unit="1",
            description=f"{what} of a classifier version over its last feedback_window joined labels.")
    for field, what in (("mae", "Mean absolute error"), ("rmse", "Root mean squared error")):
        meter.create_observable_gauge(
            f"gateway.quality.{field}", [gauge(field)], unit="",
            description=f"{what} of a regressor version over its last feedback_window joined labels "
                        "(in the model's output units).")
    meter.create_observable_counter(
        "gateway.feedback.labels", [labels], unit="{label}",
        description="Feedback labels per version by outcome (joined, late, duplicate, invalid).")
    meter.create_observable_counter(
        "gateway.feedback.predictions", [predictions], unit="{row}",
        description="Answer rows kept for delayed labels (one per kept row of each answer).")
    meter.create_observable_counter(
        "gateway.feedback.unknown", [lambda _: [Observation(unknown())]], unit="{label}",
        description="Feedback labels naming no answer kept.")


def register_drift_instruments(meter: Meter, drift: Callable[[], list], max_features: int) -> None:
    """Drift against the reference per model version (``drift``: the drift monitor's
    :class:`~gateway.monitoring.monitor.VersionDrift` list): PSI, JS distance and binned KS of
    the first ``max_features`` features of each input (a stable set of series) and of a
    classifier's predicted class and confidence, and the features at each grade."""
    def attrs(d) -> dict:
        return {"gateway.model.name": d.model, "gateway.model.version": d.version,
                "gateway.drift.reference": d.source}

    def gauge(field: str):
        def observe(_: CallbackOptions):
            out = []
            for d in drift():
                a = attrs(d)
                for inp in d.inputs:
                    for f in inp.features[:max_features]:
                        if not math.isnan(value := getattr(f, field)):
                            out.append(Observation(value, {**a, "gateway.input.name": inp.input,
                                                           "gateway.input.feature": f.feature}))
                for name, f in (("predicted_class", d.predicted_class), ("confidence", d.confidence)):
                    if f is not None and not math.isnan(value := getattr(f, field)):
                        out.append(Observation(value, {**a, "gateway.drift.distribution": name}))
            return out
        return observe

    def quality(field: str):
        def observe(_: CallbackOptions):
            out = []
            for d in drift():
                a = attrs(d)
                for inp in d.inputs:
                    values = getattr(inp, field)[:max_features]
                    out += [Observation(v, {**a, "gateway.input.name": inp.input, "gateway.input.feature": f})
                            for f, v in enumerate(values) if not math.isnan(v)]
            return out
        return observe

    def outlier_rate(_: CallbackOptions):
        return [Observation(d.outlier_rate, attrs(d)) for d in drift() if not math.isnan(d.outlier_rate)]

    def graded(_: CallbackOptions):
        out = []
        for d in drift():
            grades = [f.grade for inp in d.inputs for f in inp.features]
            out += [Observation(grades.count(g), {**attrs(d), "gateway.drift.grade": g})
                    for g in ("ok", "warn", "alert")]
        return out

    for field, what in (("psi", "Population stability index"), ("js", "Jensen-Shannon distance (base 2)"),
                        ("ks", "Kolmogorov-Smirnov statistic of the binned distributions")):
        meter.create_observable_gauge(
            f"gateway.drift.{field}", [gauge(field)], unit="1",
            description=f"{what} of a version's recent window against its reference, per input feature "
                        "(or output distribution).")
    meter.create_observable_gauge(
        "gateway.drift.features", [graded], unit="{feature}",
        description="Input features of a version at each drift grade (ok, warn, alert).")
    meter.create_observable_gauge(
        "gateway.data_quality.outlier_rate", [outlier_rate], unit="1",
        description="Share of a version's rows in the drift window that were outliers against the reference "
                    "(from a sample of its executed batches).")
    for field, what in (("nan_rate", "NaN"), ("inf_rate", "infinite"),
                        ("out_of_range_rate", "finite but outside the reference's range")):
        meter.create_observable_gauge(
            f"gateway.data_quality.{field}", [quality(field)], unit="1",
            description=f"Share of a feature's values in the drift window that were {what}.")


def register_rollback_instruments(meter: Meter, rollbacks: Callable[[], Mapping[tuple[str, str], int]]) -> None:
    """Automatic rollbacks per (model, candidate version) since start."""
    def observe(_: CallbackOptions):
        return [Observation(n, {"gateway.model.name": m, "gateway.model.version": v})
                for (m, v), n in rollbacks().items()]

    meter.create_observable_counter("gateway.rollbacks", [observe], unit="{rollback}",
                                    description="Candidate versions rolled back by traffic.rollback rules.")


def register_process_instruments(meter: Meter) -> None:
    """OTel semantic-convention process metrics: ``process.cpu.time`` and ``process.memory.usage``."""
    def cpu(_: CallbackOptions):
        t = os.times()
        return [Observation(t.user, {"cpu.mode": "user"}), Observation(t.system, {"cpu.mode": "system"})]

    def memory(_: CallbackOptions):
        return [Observation(_rss_bytes())]

    meter.create_observable_counter("process.cpu.time", [cpu], unit="s",
                                    description="CPU time used by the gateway process.")
    meter.create_observable_up_down_counter("process.memory.usage", [memory], unit="By",
                                            description="Resident memory of the gateway process.")


def register_gpu_instruments(meter: Meter) -> bool:
    """GPU utilisation and memory through NVML; registers nothing (returns False) when NVML
    or a GPU is absent."""
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except Exception as exc:  # no library, no driver, no GPU: the metrics are simply absent
        log.debug("NVML unavailable (%s): no GPU metrics", exc)
        return False
    if count == 0:
        return False
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]

    def utilization(_: CallbackOptions):
        out = []
        for i, h in enumerate(handles):
            try:
                out.append(Observation(pynvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0,
                                       {"gpu.index": i}))
            except Exception:  # a GPU that fell off the bus: skip it this round
                pass
        return out

    def memory(_: CallbackOptions):
        out = []
        for i, h in enumerate(handles):
            try:
                info = pynvml.nvmlDeviceGetMemoryInfo(h)
                out.append(Observation(int(info.used), {"gpu.index": i, "gpu.memory.state": "used"}))
                out.append(Observation(int(info.free), {"gpu.index": i, "gpu.memory.state": "free"}))
            except Exception:
                pass
        return out

    meter.create_observable_gauge("gateway.gpu.utilization", [utilization], unit="1",
                                  description="GPU busy fraction over the last sample period (NVML).")
    meter.create_observable_up_down_counter("gateway.gpu.memory.usage", [memory], unit="By",
                                            description="GPU memory used and free (NVML).")
    return True
