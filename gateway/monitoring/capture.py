"""The request observer that keeps answers for delayed labels (:mod:`.labels`).

Only answers that can be joined unambiguously to one label are kept:

- status OK and not degraded (a fallback's answer says nothing about the version asked for);
- every row, up to the store's ``max_rows``: a label names a request and a row of its answer
  (0 by default), so an answer of N rows is kept as one entry of its first
  ``min(N, max_rows)`` predictions (``skipped_rows`` counts the rows past the cap; their labels
  count as unknown);
- classifiers (the answer carries the classifier head's ``predicted_label``): the predicted
  class index, read back from the label through the version's labels (or the index itself,
  where the version has no name for it); a row with no label (NaN scores) is not captured;
- every other model is taken as a regressor: each row's first value of the answer's first
  output (the model's first output, unless the request named others), when it is a finite
  number.

Cost on the answer path: a few dict lookups and one locked insert. ``bench/feedback_capture.py``
timed the observer alone at 1.6-3.2 µs per answer, and ``DataPlane.infer`` of a batch-1 demo
request 7-12 µs slower with a full 100000-entry store than without (54 -> 61 µs classifier,
39 -> 50 µs regressor; on a shared 2-core machine, where rounds vary by more than that).
A many-row answer costs one pass over its kept rows' labels (classifiers) or a few numpy calls
(regressors) more: ``bench/feedback_capture.py --rows N``, the observer alone, on the same
machine under heavy load (where one row took 5-6 µs): 11 µs (classifier) / 20 µs (regressor)
at 5 rows, 35 / 18 µs at 64. The composition root installs it only with
``feedback_store_entries`` above 0.
"""
from __future__ import annotations

import logging
import math

from ..api import InferRequest, InferResponse, Status
from ..core.context import Attempt
from ..core.registry import ModelRegistry, ModelVersion
from .labels import MAX_CLASSES, PredictionStore

log = logging.getLogger("gateway.monitoring")


class _Classes:
    __slots__ = ("version", "labels", "classes", "index_of")

    def __init__(self, mv: ModelVersion) -> None:
        self.version = mv
        head = mv.head
        self.labels: tuple[str, ...] = tuple(head.labels) if head is not None else tuple(mv.labels)
        classes = len(self.labels)
        if head is not None:
            for spec in mv.model.outputs:
                if spec.name == head.output and spec.shape and spec.shape[-1] > 0:
                    classes = max(classes, spec.shape[-1])
        self.classes = min(classes, MAX_CLASSES)
        self.index_of = {name: i for i, name in enumerate(self.labels)}


class PredictionCapture:
    """A :class:`gateway.core.observers.RequestObserver` feeding a :class:`PredictionStore`."""

    def __init__(self, store: PredictionStore, registry: ModelRegistry) -> None:
        self.store = store
        self._registry = registry
        self._classes: dict[tuple[str, str], _Classes] = {}
        self.skipped_rows = 0  # rows of OK answers past the store's max_rows (not kept)

    def on_answer(self, request: InferRequest, attempt: Attempt, status: Status,
                  response: InferResponse | None, fallback_code: int, t_responded_ns: int) -> None:
        if status is not Status.OK or response is None or response.degraded:
            return
        store = self.store
        if response.confidence is not None:
            labels = response.predicted_label
            n = len(labels)
            if not n:
                return
            known = self._known(response.model, response.version)
            if known is None:
                return
            if n == 1:
                index = _index(known, labels[0])
                if index >= 0:
                    store.put_class(response.request_id, response.model, response.version, index,
                                    labels=known.labels, classes=known.classes)
                return
            kept = min(n, store.max_rows)
            self.skipped_rows += n - kept
            store.put_classes(response.request_id, response.model, response.version,
                              [_index(known, label) for label in labels[:kept]], rows=n,
                              labels=known.labels, classes=known.classes)
            return
        outputs = response.outputs
        if not outputs:
            return
        entry = self._registry.get(response.model)
        mv = entry.versions.get(response.version) if entry is not None else None
        if mv is None or not mv.monitored:
            return
        first = next(iter(outputs.values()))
        if first.ndim == 0 or first.size == 0 or first.dtype.kind not in "fiu":
            return
        n = first.shape[0]
        if n == 1:
            value = float(first.flat[0])
            if math.isfinite(value):
                store.put_value(response.request_id, response.model, response.version, value)
            return
        kept = min(n, store.max_rows)
        self.skipped_rows += n - kept
        store.put_values(response.request_id, response.model, response.version,
                         first[:kept].reshape(kept, -1)[:, 0], rows=n)

    def _known(self, model: str, version: str) -> _Classes | None:
        """The version's class names and count, cached while the registry serves the same version."""
        entry = self._registry.get(model)
        mv = entry.versions.get(version) if entry is not None else None
        if mv is None or not mv.monitored:
            return None
        key = (model, version)
        known = self._classes.get(key)
        if known is None or known.version is not mv:
            known = self._classes[key] = _Classes(mv)
        return known


def _index(known: _Classes, label: str) -> int:
    """A row's predicted label as its class index; -1 for none (no label: NaN scores)."""
    if not label:
        return -1
    index = known.index_of.get(label)
    if index is None:
        if not label.isdigit() or len(label) > 6:
            return -1
        index = int(label)
    return index
