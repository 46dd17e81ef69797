"""Capture for incidents: a sampled share of the answered requests, their answers and (when they
come) their labels, written to rotating JSON Lines files that ``gateway replay`` re-sends.

Opt-in (setting ``capture.enabled``). On the answer path the observer only draws the sample
(``capture.sample_ratio``) and queues references to the request and its answer (the arrays are
read-only and never changed after the answer); a writer thread encodes and writes them. A full
queue (``capture.queue`` records) drops the record and counts it. Files are
``<directory>/capture-<start>-<n>.jsonl``: a file is closed past ``max_file_bytes`` and the
oldest deleted past ``max_files``, so the capture takes at most about ``max_files x
max_file_bytes`` on disk (plus one record). A write that fails (a full disk, the directory gone)
stops the capture for good, logged once and counted (``stopped``); serving never waits on it.

Inputs are not written unless configured: ``capture.inputs`` maps model -> input -> ``keep``,
``drop`` or ``{mask: [feature, ...]}`` (those positions of the last axis written as 0), and
``capture.default_inputs`` (``drop``) covers the rest. Outputs are written (``capture.outputs``).

Format, one JSON object per line (UTF-8):

- ``{"kind": "request", "t_unix_s", "request_id", "model", "version_asked", "version",
  "served_by", "status", "degraded", "fallback_reason", "latency_ms", "inputs": {name: TENSOR},
  "outputs": {name: TENSOR}, "predicted_label": [...]}`` — ``version`` is the version whose
  answer it was ("" when none answered);
- ``{"kind": "label", "t_unix_s", "request_id", "class_label" | "class_index" | "target"}`` for a
  label of a captured request (the last 100,000 captured ids are remembered for this), with
  ``"row"`` where the label is for a row of the answer other than the first;

where TENSOR is ``{"dtype": "float32", "shape": [1, 16], "b64": "<little-endian bytes,
base64>"}``, with ``"masked": [...]`` for a masked input, or ``{"dtype", "shape", "dropped":
true}`` for one not written.
"""
from __future__ import annotations

import base64
import collections
import io
import json
import logging
import pathlib
import queue
import random
import threading
import time
from collections.abc import Sequence

import numpy as np

from ..api import InferRequest, InferResponse, Status
from ..api.feedback import FeedbackLabel
from ..config.settings import CaptureSettings
from ..core.context import Attempt

log = logging.getLogger("gateway.lifecycle")

REMEMBERED_IDS = 100_000
_STOP = object()


def encode_tensor(array: np.ndarray, *, mask: Sequence[int] | None = None) -> dict:
    a = np.ascontiguousarray(array)
    out: dict = {"dtype": a.dtype.name, "shape": list(a.shape)}
    if mask is not None and a.ndim and mask:
        a = a.copy()
        cols = [i for i in mask if -a.shape[-1] <= i < a.shape[-1]]
        a[..., cols] = 0
        out["masked"] = sorted(set(cols))
    out["b64"] = base64.b64encode(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()).decode("ascii")
    return out


def decode_tensor(t: dict) -> np.ndarray:
    """A TENSOR of the capture format back to an array (ValueError: dropped or malformed)."""
    if t.get("dropped"):
        raise ValueError("the input was not captured (dropped)")
    dtype = np.dtype(t["dtype"]).newbyteorder("<")
    data = base64.b64decode(t["b64"], validate=True)
    return np.frombuffer(data, dtype=dtype).reshape(t["shape"]).astype(dtype.newbyteorder("="), copy=False)


class RequestCapture:
    """A request observer (``on_answer``) and label sink (``on_labels``) writing capture files."""

    def __init__(self, settings: CaptureSettings, directory: pathlib.Path) -> None:
        self.settings = settings
        self.directory = directory
        self.captured = 0       # records written
        self.dropped = 0        # sampled but the queue was full
        self.stopped = ""       # why the capture stopped (empty: running)
        self._queue: queue.Queue = queue.Queue(maxsize=settings.queue)
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._ids_lock = threading.Lock()
        self._file: io.BufferedWriter | None = None
        self._file_bytes = 0
        self._seq = 0
        self._start = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._stop(exc)
        self._thread.start()

    # -- the answer path ------------------------------------------------------------------
    def on_answer(self, request: InferRequest, attempt: Attempt, status: Status,
                  response: InferResponse | None, fallback_code: int, t_responded_ns: int) -> None:
        if self.stopped or random.random() >= self.settings.sample_ratio:
            return
        if self._put(("request", time.time(), request, attempt, status, response, t_responded_ns)):
            with self._ids_lock:    # (here, not in the writer: a label may come before it writes)
                self._ids[request.request_id] = None
                while len(self._ids) > REMEMBERED_IDS:
                    self._ids.popitem(last=False)

    def on_labels(self, labels: Sequence[FeedbackLabel]) -> None:
        if self.stopped:
            return
        with self._ids_lock:
            mine = [label for label in labels if label.request_id in self._ids]
        if mine:
            self._put(("labels", time.time(), mine))

    def _put(self, item) -> bool:
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    # -- the writer thread ----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            if self.stopped:
                continue
            try:
                for line in self._lines(item):
                    self._write(line)
            except OSError as exc:
                self._stop(exc)
            except Exception:  # a record that cannot be encoded is skipped, the capture goes on
                log.exception("capture: a record could not be written; skipped")
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass

    def _lines(self, item) -> list[str]:
        if item[0] == "labels":
            _, t, labels = item
            out = []
            for label in labels:
                rec: dict = {"kind": "label", "t_unix_s": t, "request_id": label.request_id}
                if label.label is not None:
                    rec["class_label"] = label.label
                elif label.index is not None:
                    rec["class_index"] = label.index
                else:
                    rec["target"] = label.target
                if label.row:
                    rec["row"] = label.row
                out.append(json.dumps(rec))
            return out
        _, t, request, attempt, status, response, t_responded_ns = item
        policies = self.settings.inputs.get(request.model, {})
        inputs = {}
        for name, array in request.inputs.items():
            how = policies.get(name, self.settings.default_inputs)
            if how == "keep":
                inputs[name] = encode_tensor(array)
            elif how == "drop":
                inputs[name] = {"dtype": array.dtype.name, "shape": list(array.shape), "dropped": True}
            else:
                inputs[name] = encode_tensor(array, mask=how.mask)
        rec = {"kind": "request", "t_unix_s": t, "request_id": request.request_id, "model": request.model,
               "version_asked": request.version,
               "version": response.version if response is not None and not response.degraded else
               (attempt.served_by.partition("@")[2] if attempt.t_compute_end_ns else ""),
               "served_by": response.served_by if response is not None else "",
               "status": Status(status).name, "degraded": bool(response.degraded) if response is not None else False,
               "fallback_reason": response.fallback_reason if response is not None else "",
               "latency_ms": round((t_responded_ns - request.t_received_ns) / 1e6, 3) if request.t_received_ns else None,
               "inputs": inputs,
               "outputs": {k: encode_tensor(v) for k, v in response.outputs.items()}
               if response is not None and self.settings.outputs else {},
               "predicted_label": list(response.predicted_label) if response is not None else []}
        return [json.dumps(rec)]

    def _write(self, line: str) -> None:
        data = (line + "\n").encode("utf-8")
        if self._file is None or self._file_bytes + len(data) > self.settings.max_file_bytes and self._file_bytes:
            self._rotate()
        assert self._file is not None
        self._file.write(data)
        self._file.flush()
        self._file_bytes += len(data)
        if line.startswith('{"kind": "request"'):
            self.captured += 1

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
        self._seq += 1
        path = self.directory / f"capture-{self._start}-{self._seq:05d}.jsonl"
        self._file = open(path, "xb")   # noqa: SIM115 (closed at the next rotation or at stop)
        self._file_bytes = 0
        files = sorted(self.directory.glob("capture-*.jsonl"), key=lambda p: p.stat().st_mtime_ns)
        for old in files[:max(0, len(files) - self.settings.max_files)]:
            old.unlink(missing_ok=True)

    def _stop(self, exc: Exception) -> None:
        if not self.stopped:
            self.stopped = f"{type(exc).__name__}: {exc}"
            log.error("capture stopped (serving goes on): %s", self.stopped, extra={"event": "capture.stopped"})

    def stop(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (for at most ``timeout_s``) and close the file."""
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            self.stopped = self.stopped or "stopped with records still queued"
        self._thread.join(timeout_s)
