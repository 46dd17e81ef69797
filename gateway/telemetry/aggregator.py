"""The aggregator: drains the recorder's ring in bulk and folds the records into each version's
histograms (end-to-end per call, queue, compute, batch size; seconds), windowed counters,
outcome totals and running totals (:mod:`.totals`). Runs on its own daemon thread every ``interval_s``; nothing here is on the
request path."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import numpy as np

from .models import ModelTelemetry
from .recorder import Recorder, Records

log = logging.getLogger("gateway.telemetry")

_NS_PER_S = 1e9


def fold(records: Records, models: Sequence[ModelTelemetry]) -> int:
    """Fold drained records into ``models`` (indexed by telemetry id); returns how many named
    an id that is not registered (they are skipped)."""
    recv = records.t_received_ns
    start = records.t_compute_start_ns
    e2e = (records.t_responded_ns - recv) / _NS_PER_S
    queue = (start - records.t_enqueued_ns) / _NS_PER_S
    compute = (records.t_compute_end_ns - start) / _NS_PER_S
    batch = records.batch_size.astype(np.float64)
    status = records.status_code
    call = records.call
    ids = records.telemetry_id
    key = ((ids.astype(np.int64) << 40) | (call.astype(np.int64) << 32) | (status.astype(np.int64) & 0xFFFFFFFF))
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(key)]))
    t_resp = records.t_responded_ns
    rows = records.rows.astype(np.int64)
    errors = (status != 0).astype(np.int64)
    degraded = records.degraded.astype(np.int64)
    conf = records.confidence
    fallback = records.fallback_code
    unknown = 0
    for s, e in zip(starts, ends):
        idx = order[s:e]
        first = idx[0]
        model_id = int(ids[first])
        if model_id >= len(models):
            unknown += int(e - s)
            continue
        state = models[model_id]
        code = int(status[first])
        # End-to-end latency per call (rpc.server.call.duration has rpc.method); the stages
        # below are the same whichever call a request came in on.
        state.hist(code, "e2e", int(call[first])).record_array(np.ascontiguousarray(e2e[idx]))
        # Queue, compute and batch size exist only for requests that reached an execution;
        # those rejected before it (bad input, shed, unknown version) would record zeros.
        ran = idx[start[idx] > 0]
        if len(ran):
            state.hist(code, "queue").record_array(np.ascontiguousarray(queue[ran]))
            state.hist(code, "compute").record_array(np.ascontiguousarray(compute[ran]))
            state.hist(code, "batch_size").record_array(np.ascontiguousarray(batch[ran]))
        state.counters.add_arrays(np.ascontiguousarray(t_resp[idx]), np.ascontiguousarray(rows[idx]),
                                  np.ascontiguousarray(errors[idx]), np.ascontiguousarray(degraded[idx]))
        for fb, n in enumerate(np.bincount(fallback[idx]).tolist()):
            if n:
                state.outcomes[(code, fb)] = state.outcomes.get((code, fb), 0) + n
        c = conf[idx]
        c = c[~np.isnan(c)]
        state.conf_sum += float(c.sum(dtype=np.float64))
        state.conf_n += len(c)
    _fold_totals(records, models, order)
    return unknown


def _fold_totals(records: Records, models: Sequence[ModelTelemetry], order: np.ndarray) -> None:
    """Each version's running totals, from its records (contiguous in ``order``: sorted by id first)."""
    ids = records.telemetry_id[order]
    bounds = np.flatnonzero(np.diff(ids)) + 1
    recv = records.t_received_ns.astype(np.int64)
    start = records.t_compute_start_ns.astype(np.int64)
    end = records.t_compute_end_ns.astype(np.int64)
    responded = records.t_responded_ns.astype(np.int64)
    e2e = responded - recv
    queue = start - records.t_enqueued_ns.astype(np.int64)
    compute = end - start
    ok = records.status_code == 0
    ran = start > 0
    rows = records.rows.astype(np.int64)
    sizes = records.batch_size.astype(np.int64)
    for s, e in zip(np.concatenate(([0], bounds)), np.concatenate((bounds, [len(ids)]))):
        model_id = int(ids[s])
        if model_id >= len(models):
            continue
        idx = order[s:e]
        models[model_id].totals.fold(ok[idx], e2e[idx], queue[idx], compute[idx], ran[idx], rows[idx],
                                     start[idx], sizes[idx], responded[idx])


class Aggregator:
    """Calls ``flush`` every ``interval_s`` on a daemon thread until stopped."""

    def __init__(self, flush: Callable[[], None], interval_s: float) -> None:
        self._flush = flush
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gateway-telemetry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._flush()
            except Exception:  # keep aggregating; the error is logged once per tick
                log.exception("telemetry aggregation failed")


def drain_into(recorder: Recorder, models: Sequence[ModelTelemetry]) -> int:
    """Drain everything the recorder holds into ``models``; returns records with unknown ids."""
    unknown = 0
    while True:
        records = recorder.drain()
        if records is None:
            return unknown
        unknown += fold(records, models)
