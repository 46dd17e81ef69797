"""Online quality from delayed labels: predictions kept by request id until their label comes.

:class:`PredictionStore` holds one entry per request id — the model, the version, the
predicted class index (classifiers) or value (regressors) of each of its rows and when it was
made — for at most ``ttl_s`` seconds and at most ``capacity`` entries, the oldest leaving
first. A label (:meth:`PredictionStore.join`) names a request id and a row of its answer
(``row``, 0 by default: the first) and ends as one :class:`~gateway.api.feedback.Outcome`:

- *joined*: it meets a stored prediction not joined before; the pair enters that version's
  rolling window (the last ``window`` joined labels);
- *duplicate*: the prediction was joined already (stored, or gone after being joined);
- *late*: the prediction left the store (TTL or capacity) before any label came;
- *unknown*: no prediction with that id (and row) was captured — a row past ``max_rows``, or
  one with no prediction (no class, a non-finite value) — or it left the store so long ago that
  the store has forgotten it too;
- *invalid*: the prediction cannot take it (a class the version does not have, a non-finite
  target, a class for a regressor or a target for a classifier), or the row is past the end of
  the answer (row 3 of a 2-row answer: the request is known, the row never existed; counted
  on that version); the prediction stays open.

Rows: an answer of one row is stored as one number (the common case, and the cheapest); an
answer of N rows as one entry holding its first ``min(N, max_rows)`` predictions packed in a
``bytes`` (2 bytes a row for classes, 8 for values, a sentinel for a row not captured), the
answer's row count and a bitmask of the rows joined. Each kept row counts as one prediction
(``predictions`` and the join rate count rows). Labels for rows past ``max_rows`` (default 64,
``feedback_max_rows``) are unknown: those rows were not kept.

Late and duplicate after eviction are told from unknown by a second bounded memory: each id
that leaves the store leaves behind its 64-bit ``hash()`` (of this process) mapped to a small
int (its version's slot and whether it had been joined; for a many-row answer a tuple of the
slot, its row count and the bitmasks of rows captured and joined), for the last
``forget_after`` evictions (default: ``capacity``; an id evicted again is remembered until its
last eviction leaves). A label whose id hashes like a forgotten one that was never
captured would be called late instead of unknown: with 64-bit hashes, about one in 10^13 per
label at a million remembered ids.

Insert, lookup and eviction are O(1): a dict by id plus a deque of ids in insertion order
(predictions are stored with the clock's time, so the deque is in time order too; TTL eviction
pops from its left). A request id captured again while its prediction is still stored keeps
the first prediction (``reused_ids`` counts these): a label for an id that answered twice is
ambiguous.

Class indices are the version's as the answer was made: a reload that renames a version's
classes (its ``labels``) renames them in its metrics too, pairs already joined included.

Metrics (:meth:`PredictionStore.quality`), per (model, version), over its last ``window``
joined labels, from a fixed ring of (truth, prediction) pairs (16 bytes a pair):

- classifiers: accuracy; per class precision, recall, F1 and support; their macro means; the
  confusion matrix (rows true, columns predicted). As scikit-learn computes them with
  ``zero_division=0``: a class never predicted has precision 0, one never true recall 0, F1 is
  ``2 tp / (2 tp + fp + fn)`` (0 when that is 0/0); the macro means average the classes that
  occur in the window (as true or predicted), as ``precision_recall_fscore_support`` without
  ``labels=`` does. Per-class lists and the matrix cover every class the version has.
- regressors: MAE and RMSE.
- both: predictions captured, joined, late, duplicate, invalid and the join rate (joined /
  captured; predictions whose label has yet to come count as not joined).

Memory: one stored one-row prediction with a 32-character id costs about 230 bytes (a
classifier's: the id string 88, the entry tuple 72, a float for its time 24, its dict slot ~40
and deque slot 8) or 250 (a regressor's, whose value is a float object too); each remembered
evicted id about 100 (its hash, an int object, 32; dict slot ~55; deque slot 8). An N-row
entry costs about 250 bytes plus 2 a kept row (classifiers) or 8 (regressors): its rows are
one ``bytes`` object; its joined bitmask adds 28 bytes + 4 per 30 rows once rows are joined;
a remembered N-row id costs about 145 (up to 8 rows) to 220 (64 rows: the tuple and its masks).
Measured with tracemalloc by tests/monitoring/test_labels.py (one row: fails above 280 and
110; 5 and 64 rows: above 300 + 2 or 8 a row, and 260; measured 257 / 287 / 145 at 5 rows,
375 / 759 / 181 at 64). Bound: ``capacity`` x (about 300 + ``max_rows`` x 8) bytes for the
entries plus ``forget_after`` x about 220: with ``capacity`` 1,000,000 of one-row answers,
about 350 MB at most; of 64-row regressor answers (the default ``max_rows``), about 1 GB.
The rings take 16 bytes per pair of ``window`` per version.

Thread-safe: one lock; predictions come from the answer path, labels from the event loop.
"""
from __future__ import annotations

import dataclasses
import math
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from ..api.feedback import FeedbackLabel, Outcome
from ..api.stats import QualitySnapshot

CLASSIFIER = "classifier"
REGRESSOR = "regressor"
MAX_CLASSES = 4096
"""Class indices a version may have; a larger index is an invalid label (or not captured)."""
MAX_CONFUSION_CLASSES = 64
"""Above this many classes the confusion matrix is not reported (per-class metrics still are)."""
DEFAULT_MAX_ROWS = 64
"""Rows of one answer kept for labels (``feedback_max_rows``); labels for later rows are unknown."""
MAX_ROWS = 4096

_CLASS_ROW = struct.Struct("<h")   # a kept row of a classifier: its class index, -1 for none
_VALUE_ROW = struct.Struct("<d")   # of a regressor: its value, NaN for none

# (slot, prediction, time, joined) for one row; (slot, packed rows, time, joined bitmask, rows)
_Entry = tuple[int, float | int, float, bool] | tuple[int, bytes, float, int, int]


def _row_prediction(kind: str, packed: bytes, row: int) -> float | None:
    """Row ``row``'s prediction in a packed entry; None where it was not kept."""
    if kind == CLASSIFIER:
        if row >= len(packed) // 2:
            return None
        index = _CLASS_ROW.unpack_from(packed, row * 2)[0]
        return None if index < 0 else float(index)
    if row >= len(packed) // 8:
        return None
    value = _VALUE_ROW.unpack_from(packed, row * 8)[0]
    return None if math.isnan(value) else value


def _captured_mask(kind: str, packed: bytes) -> int:
    """The bitmask of the rows of a packed entry that hold a prediction."""
    if kind == CLASSIFIER:
        kept = np.frombuffer(packed, _CLASS_ROW.format) >= 0
    else:
        kept = ~np.isnan(np.frombuffer(packed, _VALUE_ROW.format))
    return int.from_bytes(np.packbits(kept, bitorder="little").tobytes(), "little")


class _Version:
    """One (model, version): its counters and the ring of its last ``window`` joined pairs."""

    __slots__ = ("slot", "model", "version", "kind", "labels", "classes", "index_of", "predictions",
                 "joined", "late", "duplicate", "invalid", "truth", "pred", "filled", "pos")

    def __init__(self, slot: int, model: str, version: str, kind: str, window: int) -> None:
        self.slot = slot
        self.model = model
        self.version = version
        self.kind = kind
        self.labels: tuple[str, ...] = ()
        self.classes = 0
        self.index_of: dict[str, int] = {}
        self.predictions = self.joined = self.late = self.duplicate = self.invalid = 0
        self.truth = np.zeros(window, np.float64)
        self.pred = np.zeros(window, np.float64)
        self.filled = 0
        self.pos = 0

    def set_classes(self, labels: Sequence[str], classes: int) -> None:
        labels = tuple(labels)
        if labels != self.labels:
            self.labels = labels
            self.index_of = {name: i for i, name in enumerate(labels)}
        self.classes = min(MAX_CLASSES, max(self.classes, classes, len(labels)))

    def truth_of(self, label: FeedbackLabel) -> float | None:
        """The label as this version's truth value, or None when it cannot take it."""
        given = (label.label is not None) + (label.index is not None) + (label.target is not None)
        if given != 1:
            return None
        if self.kind == REGRESSOR:
            if label.target is None or not math.isfinite(label.target):
                return None
            return float(label.target)
        if label.label is not None:
            index = self.index_of.get(label.label)
            if index is None and label.label.isdigit() and len(label.label) < 6:  # a version without labels
                index = int(label.label)
                if index < len(self.labels):  # that class has a name: the label should use it
                    return None
        else:
            index = label.index
        if index is None or not 0 <= index < self.classes:
            return None
        return float(index)

    def add(self, truth: float, pred: float) -> None:
        pos = self.pos
        self.truth[pos] = truth
        self.pred[pos] = pred
        self.pos = (pos + 1) % len(self.truth)
        self.filled = min(self.filled + 1, len(self.truth))

    def snapshot(self) -> QualitySnapshot:
        n = self.filled
        truth, pred = self.truth[:n], self.pred[:n]
        nan = math.nan
        base = QualitySnapshot(kind=self.kind, predictions=self.predictions, joined=self.joined, late=self.late,
                               duplicate=self.duplicate, invalid=self.invalid,
                               join_rate=self.joined / self.predictions if self.predictions else nan, window=n,
                               accuracy=nan, macro_precision=nan, macro_recall=nan, macro_f1=nan)
        if self.kind == REGRESSOR:
            err = truth - pred
            return dataclasses.replace(base, mae=float(np.mean(np.abs(err))) if n else nan,
                                       rmse=float(np.sqrt(np.mean(err * err))) if n else nan)
        k = self.classes
        cm = np.zeros((k, k), np.int64)
        np.add.at(cm, (truth.astype(np.intp), pred.astype(np.intp)), 1)
        tp = np.diag(cm)
        predicted = cm.sum(axis=0)
        true = cm.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(predicted > 0, tp / predicted, 0.0)
            recall = np.where(true > 0, tp / true, 0.0)
            denominator = predicted + true  # 2 tp + fp + fn
            f1 = np.where(denominator > 0, 2 * tp / denominator, 0.0)
        present = (predicted + true) > 0
        names = tuple(self.labels[i] if i < len(self.labels) else str(i) for i in range(k))

        def macro(values: np.ndarray) -> float:
            return float(values[present].mean()) if n else nan

        return dataclasses.replace(
            base, accuracy=float(tp.sum() / n) if n else nan, macro_precision=macro(precision),
            macro_recall=macro(recall), macro_f1=macro(f1), classes=names,
            precision=tuple(precision.tolist()), recall=tuple(recall.tolist()), f1=tuple(f1.tolist()),
            support=tuple(true.tolist()),
            confusion=tuple(cm.ravel().tolist()) if k <= MAX_CONFUSION_CLASSES else ())


class PredictionStore:
    """See the module docstring. ``clock`` returns seconds (``time.monotonic`` by default);
    every method also takes ``now`` from it, so tests can play time."""

    def __init__(self, capacity: int, ttl_s: float, *, window: int = 1000, forget_after: int | None = None,
                 max_rows: int = DEFAULT_MAX_ROWS, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1 or not ttl_s > 0 or window < 1 or not 1 <= max_rows <= MAX_ROWS:
            raise ValueError(f"capacity and window must be at least 1, ttl_s more than 0 and max_rows "
                             f"1 to {MAX_ROWS}")
        self.capacity = capacity
        self.ttl_s = float(ttl_s)
        self.window = window
        self.max_rows = max_rows
        self.forget_after = capacity if forget_after is None else forget_after
        self._clock = clock
        self._lock = threading.Lock()
        # request id -> (version slot, prediction, time, joined) for a one-row answer, or
        # (version slot, packed predictions, time, joined rows bitmask, rows) for more: atoms
        # only (bytes, ints, floats), so the cyclic collector untracks the tuples and a full
        # store costs its passes nothing
        self._entries: dict[str, _Entry] = {}
        self._order: deque[str] = deque()
        # hash(id) -> version slot * 2 + joined, or (slot, rows, captured rows, joined rows)
        self._gone: dict[int, int | tuple[int, int, int, int]] = {}
        self._gone_order: deque[int] = deque()
        self._gone_copies: dict[int, int] = {}  # hashes in the order more than once (reused ids only)
        self._versions: dict[tuple[str, str], _Version] = {}
        self._slots: list[_Version] = []
        self.unknown = 0
        self.reused_ids = 0

    def __len__(self) -> int:
        return len(self._entries)

    # -- predictions ----------------------------------------------------------------------
    def put_class(self, request_id: str, model: str, version: str, index: int, *,
                  labels: Sequence[str] = (), classes: int = 0, now: float | None = None) -> bool:
        """Store a one-row classifier answer's predicted class ``index`` (of ``classes``
        classes, named by ``labels`` where it has them). False when not stored (the id is
        already stored, or the index is out of range)."""
        if not 0 <= index < MAX_CLASSES:
            return False
        with self._lock:
            v = self._classifier(model, version, labels, classes, index)
            return self._put(request_id, v, index, self._clock() if now is None else now)

    def put_classes(self, request_id: str, model: str, version: str, indices: Sequence[int] | np.ndarray, *,
                    rows: int | None = None, labels: Sequence[str] = (), classes: int = 0,
                    now: float | None = None) -> bool:
        """Store an answer's predicted class per row (``indices[i]`` for row ``i``; -1, or an
        index out of range, for a row with no class). ``rows``: the answer's row count (default
        ``len(indices)``); only the first ``max_rows`` are kept. False when nothing is stored."""
        n = len(indices) if rows is None else rows
        head = indices[:min(n, self.max_rows)]
        if n == 1 and len(head) == 1:
            return self.put_class(request_id, model, version, int(head[0]), labels=labels, classes=classes,
                                  now=now)
        # (plain Python: for at most a few dozen rows it is faster than numpy's per-call costs)
        kept = [int(i) if 0 <= i < MAX_CLASSES else -1 for i in head]
        captured = len(kept) - kept.count(-1)
        if not captured:
            return False
        packed = struct.pack(f"<{len(kept)}h", *kept)
        with self._lock:
            v = self._classifier(model, version, labels, classes, max(kept))
            return self._put_rows(request_id, v, packed, captured, n, self._clock() if now is None else now)

    def put_value(self, request_id: str, model: str, version: str, value: float, *,
                  now: float | None = None) -> bool:
        """Store a one-row regressor answer's predicted value (a non-finite one is not stored: False)."""
        if not math.isfinite(value):
            return False
        with self._lock:
            v = self._version(model, version, REGRESSOR)
            return self._put(request_id, v, float(value), self._clock() if now is None else now)

    def put_values(self, request_id: str, model: str, version: str, values: Sequence[float] | np.ndarray, *,
                   rows: int | None = None, now: float | None = None) -> bool:
        """Store an answer's predicted value per row (a non-finite one: that row not captured);
        ``rows`` and the ``max_rows`` cap as :meth:`put_classes`."""
        n = len(values) if rows is None else rows
        kept = np.asarray(values[:min(n, self.max_rows)], np.float64)
        if n == 1 and len(kept) == 1:
            return self.put_value(request_id, model, version, float(kept[0]), now=now)
        finite = np.isfinite(kept)
        captured = int(np.count_nonzero(finite))
        if not captured:
            return False
        if captured < len(kept):
            kept = np.where(finite, kept, np.nan)
        packed = kept.astype(_VALUE_ROW.format, copy=False).tobytes()
        with self._lock:
            v = self._version(model, version, REGRESSOR)
            return self._put_rows(request_id, v, packed, captured, n, self._clock() if now is None else now)

    def _classifier(self, model: str, version: str, labels: Sequence[str], classes: int, top: int) -> _Version:
        v = self._version(model, version, CLASSIFIER)
        if (labels and labels is not v.labels) or classes > v.classes:
            v.set_classes(labels, classes)
        if top >= v.classes:
            v.classes = top + 1
        return v

    def _version(self, model: str, version: str, kind: str) -> _Version:
        key = (model, version)
        v = self._versions.get(key)
        if v is None or v.kind != kind:  # (a version that changed kind starts again)
            v = _Version(len(self._slots), model, version, kind, self.window)
            self._versions[key] = v
            self._slots.append(v)
        return v

    def _put(self, request_id: str, v: _Version, prediction: float | int, now: float) -> bool:
        self._expire(now)
        entries = self._entries
        if request_id in entries:
            self.reused_ids += 1
            return False
        entries[request_id] = (v.slot, prediction, now, False)
        self._order.append(request_id)
        v.predictions += 1
        if len(entries) > self.capacity:
            self._evict()
        return True

    def _put_rows(self, request_id: str, v: _Version, packed: bytes, captured: int, rows: int, now: float) -> bool:
        self._expire(now)
        entries = self._entries
        if request_id in entries:
            self.reused_ids += 1
            return False
        entries[request_id] = (v.slot, packed, now, 0, rows)
        self._order.append(request_id)
        v.predictions += captured
        if len(entries) > self.capacity:
            self._evict()
        return True

    def _expire(self, now: float) -> None:
        order, entries = self._order, self._entries
        oldest_kept = now - self.ttl_s
        while order and entries[order[0]][2] <= oldest_kept:
            self._evict()

    def _evict(self) -> None:
        request_id = self._order.popleft()
        entry = self._entries.pop(request_id)
        if self.forget_after:
            code: int | tuple[int, int, int, int]
            if len(entry) == 4:
                code = entry[0] * 2 + entry[3]
            else:
                slot, packed, _, joined, rows = entry
                code = (slot, rows, _captured_mask(self._slots[slot].kind, packed), joined)
            h = hash(request_id)
            gone = self._gone
            if h in gone:  # an id captured again after it left, and left again: a second copy in the order
                self._gone_copies[h] = self._gone_copies.get(h, 1) + 1
            gone[h] = code
            self._gone_order.append(h)
            if len(self._gone_order) > self.forget_after:
                old = self._gone_order.popleft()
                copies = self._gone_copies.get(old)
                if copies is None:
                    del gone[old]
                elif copies == 2:
                    del self._gone_copies[old]
                else:
                    self._gone_copies[old] = copies - 1

    # -- labels ---------------------------------------------------------------------------
    def join(self, label: FeedbackLabel, *, now: float | None = None) -> Outcome:
        with self._lock:
            return self._join(label, self._clock() if now is None else now)

    def join_many(self, labels: Sequence[FeedbackLabel], *, now: float | None = None) -> list[Outcome]:
        """Join each label in order under one acquisition of the lock."""
        with self._lock:
            t = self._clock() if now is None else now
            return [self._join(label, t) for label in labels]

    def _join(self, label: FeedbackLabel, now: float) -> Outcome:
        self._expire(now)
        request_id = label.request_id
        row = label.row
        entry = self._entries.get(request_id)
        if entry is None:
            return self._join_gone(label, row)
        v = self._slots[entry[0]]
        if len(entry) == 4:
            slot, prediction, t, joined = entry
            if row != 0:  # past the end of a one-row answer
                v.invalid += 1
                return Outcome.INVALID
            if joined:
                v.duplicate += 1
                return Outcome.DUPLICATE
            truth = v.truth_of(label)
            if truth is None:
                v.invalid += 1
                return Outcome.INVALID
            self._entries[request_id] = (slot, prediction, t, True)
            v.add(truth, float(prediction))
        else:
            slot, packed, t, mask, rows = entry
            if not 0 <= row < rows:
                v.invalid += 1
                return Outcome.INVALID
            pred = _row_prediction(v.kind, packed, row)
            if pred is None:  # past max_rows, or a row with no prediction
                self.unknown += 1
                return Outcome.UNKNOWN
            bit = 1 << row
            if mask & bit:
                v.duplicate += 1
                return Outcome.DUPLICATE
            truth = v.truth_of(label)
            if truth is None:
                v.invalid += 1
                return Outcome.INVALID
            self._entries[request_id] = (slot, packed, t, mask | bit, rows)
            v.add(truth, pred)
        v.joined += 1
        return Outcome.JOINED

    def _join_gone(self, label: FeedbackLabel, row: int) -> Outcome:
        """A label whose prediction is no longer stored: late, duplicate or unknown."""
        h = hash(label.request_id)
        code = self._gone.get(h)
        if code is None:
            self.unknown += 1
            return Outcome.UNKNOWN
        if isinstance(code, int):
            slot, rows, captured, joined = code >> 1, 1, 1, code & 1
        else:
            slot, rows, captured, joined = code
        v = self._slots[slot]
        if not 0 <= row < rows:
            v.invalid += 1
            return Outcome.INVALID
        bit = 1 << row
        if not captured & bit:
            self.unknown += 1
            return Outcome.UNKNOWN
        if joined & bit:
            v.duplicate += 1
            return Outcome.DUPLICATE
        if v.truth_of(label) is None:
            v.invalid += 1
            return Outcome.INVALID
        # a second late copy of it is a duplicate
        self._gone[h] = code | 1 if isinstance(code, int) else (slot, rows, captured, joined | bit)
        v.late += 1
        return Outcome.LATE

    # -- metrics --------------------------------------------------------------------------
    def quality(self) -> dict[tuple[str, str], QualitySnapshot]:
        """Every (model, version) that has had a prediction captured."""
        with self._lock:
            return {key: v.snapshot() for key, v in self._versions.items()}
