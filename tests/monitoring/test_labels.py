import gc
import math
import threading
import tracemalloc
import uuid

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
)

from gateway.api.feedback import FeedbackLabel, Outcome
from gateway.monitoring.labels import PredictionStore


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _assert_classifier_matches(q, y_true, y_pred, k):
    assert q.window == len(y_true)
    assert q.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    # zero_division=0: a class never predicted has precision 0, one never true recall 0
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=list(range(k)), zero_division=0)
    assert q.precision == pytest.approx(tuple(p))
    assert q.recall == pytest.approx(tuple(r))
    assert q.f1 == pytest.approx(tuple(f))
    assert q.support == tuple(int(x) for x in s)
    mp, mr, mf, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    assert (q.macro_precision, q.macro_recall, q.macro_f1) == pytest.approx((mp, mr, mf))
    assert q.confusion == tuple(confusion_matrix(y_true, y_pred, labels=list(range(k))).ravel().tolist())


@pytest.mark.parametrize("seed", range(5))
def test_classifier_metrics_equal_sklearn_with_late_out_of_order_duplicate_and_unknown_labels(seed):
    rng = np.random.default_rng(seed)
    k = 6  # class 4 is never predicted, class 3 never true, class 5 neither
    clock = Clock()
    store = PredictionStore(capacity=10_000, ttl_s=60.0, window=10_000, clock=clock)
    n = 400
    ids = [f"r{seed}-{i}" for i in range(n)]
    pred = rng.integers(0, 4, n)
    truth = rng.choice([0, 1, 2, 4], n)
    names = ("a", "b", "c", "d", "e", "f")
    late = set(range(0, 40))  # these predictions expire before their labels come
    for i in range(n):
        if i == 40:
            clock.t += 30.0
        assert store.put_class(ids[i], "m", "1", int(pred[i]), labels=names, classes=k)
    clock.t += 40.0  # the first 40 are 70 s old now (ttl 60 s), the rest 40 s
    order = rng.permutation(n)  # labels out of order
    expected_true, expected_pred = [], []
    outcomes = []
    for i in order:
        # by name or by index, alternately
        label = (FeedbackLabel(ids[i], label=names[truth[i]]) if i % 2 else
                 FeedbackLabel(ids[i], index=int(truth[i])))
        outcomes.append(store.join(label))
        if i not in late:
            expected_true.append(int(truth[i]))
            expected_pred.append(int(pred[i]))
    assert outcomes.count(Outcome.LATE) == len(late)
    assert outcomes.count(Outcome.JOINED) == n - len(late)
    for i in order[:50]:  # duplicates, of joined and of late labels
        assert store.join(FeedbackLabel(ids[i], index=int(truth[i]))) is Outcome.DUPLICATE
    for j in range(7):
        assert store.join(FeedbackLabel(f"never-{j}", index=0)) is Outcome.UNKNOWN
    q = store.quality()[("m", "1")]
    assert (q.predictions, q.joined, q.late, q.duplicate, store.unknown) == (n, n - 40, 40, 50, 7)
    assert q.join_rate == pytest.approx((n - 40) / n)
    assert q.classes == names
    # join order, not prediction order, is what the window holds; the metrics do not care
    _assert_classifier_matches(q, expected_true, expected_pred, k)


def test_the_rolling_window_holds_the_last_joined_labels_and_shows_a_drop():
    store = PredictionStore(capacity=1000, ttl_s=3600.0, window=100)
    for i in range(300):
        store.put_class(f"r{i}", "m", "1", i % 3, classes=3)
    y_true, y_pred = [], []
    for i in range(300):
        truth = i % 3 if i < 200 else (i + 1) % 3  # concept drift: the last 100 all wrong
        assert store.join(FeedbackLabel(f"r{i}", index=truth)) is Outcome.JOINED
        y_true.append(truth)
        y_pred.append(i % 3)
    q = store.quality()[("m", "1")]
    assert q.window == 100 and q.accuracy == 0.0 and q.joined == 300
    _assert_classifier_matches(q, y_true[-100:], y_pred[-100:], 3)


def test_regressor_mae_and_rmse_equal_sklearn():
    rng = np.random.default_rng(7)
    store = PredictionStore(capacity=1000, ttl_s=60.0, window=500)
    pred = rng.normal(size=300)
    truth = pred + rng.normal(scale=0.5, size=300)
    for i, p in enumerate(pred):
        assert store.put_value(f"r{i}", "reg", "2", float(p))
    for i in rng.permutation(300):
        assert store.join(FeedbackLabel(f"r{i}", target=float(truth[i]))) is Outcome.JOINED
    q = store.quality()[("reg", "2")]
    assert q.mae == pytest.approx(mean_absolute_error(truth, pred))
    assert q.rmse == pytest.approx(math.sqrt(mean_squared_error(truth, pred)))
    assert math.isnan(q.accuracy) and q.kind == "regressor"


def test_metrics_are_per_model_version():
    store = PredictionStore(capacity=100, ttl_s=60.0)
    store.put_class("a", "m", "1", 0, classes=2)
    store.put_class("b", "m", "2", 1, classes=2)
    store.join(FeedbackLabel("a", index=0))
    store.join(FeedbackLabel("b", index=0))
    q = store.quality()
    assert q[("m", "1")].accuracy == 1.0 and q[("m", "2")].accuracy == 0.0


def test_invalid_labels_are_counted_and_leave_the_prediction_open():
    store = PredictionStore(capacity=100, ttl_s=60.0)
    store.put_class("c", "m", "1", 1, labels=("x", "y"), classes=2)
    store.put_value("r", "reg", "1", 1.5)
    bad = [FeedbackLabel("c", label="z"), FeedbackLabel("c", index=2), FeedbackLabel("c", index=-1),
           FeedbackLabel("c", target=1.0), FeedbackLabel("c"), FeedbackLabel("c", label="y", index=1),
           FeedbackLabel("r", index=0), FeedbackLabel("r", target=math.nan), FeedbackLabel("r", target=math.inf)]
    assert store.join_many(bad) == [Outcome.INVALID] * len(bad)
    assert store.join(FeedbackLabel("c", label="y")) is Outcome.JOINED
    assert store.join(FeedbackLabel("r", target=2.0)) is Outcome.JOINED
    q = store.quality()
    assert q[("m", "1")].invalid == 6 and q[("reg", "1")].invalid == 3
    assert q[("m", "1")].accuracy == 1.0 and q[("reg", "1")].mae == 0.5


def test_capacity_evicts_the_oldest_first_and_their_labels_are_late():
    store = PredictionStore(capacity=3, ttl_s=60.0)
    for i in range(5):
        store.put_value(f"r{i}", "reg", "1", float(i))
    assert len(store) == 3
    assert store.join(FeedbackLabel("r0", target=0.0)) is Outcome.LATE
    assert store.join(FeedbackLabel("r0", target=0.0)) is Outcome.DUPLICATE  # late twice
    assert store.join(FeedbackLabel("r4", target=4.0)) is Outcome.JOINED


def test_the_memory_of_evicted_ids_is_bounded_then_they_are_unknown():
    store = PredictionStore(capacity=2, ttl_s=60.0, forget_after=3)
    for i in range(10):
        store.put_value(f"r{i}", "reg", "1", 0.0)
    assert len(store._gone) <= 3 and len(store._gone_order) <= 3
    assert store.join(FeedbackLabel("r7", target=0.0)) is Outcome.LATE   # 5, 6, 7 remembered
    assert store.join(FeedbackLabel("r1", target=0.0)) is Outcome.UNKNOWN


def test_ttl_expires_predictions_without_new_traffic():
    clock = Clock()
    store = PredictionStore(capacity=100, ttl_s=10.0, clock=clock)
    store.put_class("a", "m", "1", 0, classes=2)
    store.put_class("b", "m", "1", 0, classes=2)
    assert store.join(FeedbackLabel("b", index=0)) is Outcome.JOINED
    clock.t += 10.0
    assert store.join(FeedbackLabel("a", index=0)) is Outcome.LATE
    assert store.join(FeedbackLabel("b", index=0)) is Outcome.DUPLICATE  # joined, then expired
    assert len(store) == 0


def test_a_reused_request_id_keeps_its_first_prediction():
    store = PredictionStore(capacity=10, ttl_s=60.0)
    assert store.put_value("x", "reg", "1", 1.0)
    assert not store.put_value("x", "reg", "1", 9.0)
    assert store.reused_ids == 1
    store.join(FeedbackLabel("x", target=1.0))
    assert store.quality()[("reg", "1")].mae == 0.0


def test_concurrent_predictions_and_labels_lose_no_count():
    store = PredictionStore(capacity=100_000, ttl_s=600.0)
    n = 2000

    def predict(t):
        for i in range(n):
            store.put_class(f"{t}-{i}", "m", "1", i % 2, classes=2)

    threads = [threading.Thread(target=predict, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    joined = 0
    for th in threads:
        th.join()
    for t in range(4):
        joined += store.join_many([FeedbackLabel(f"{t}-{i}", index=i % 2) for i in range(n)]).count(Outcome.JOINED)
    q = store.quality()[("m", "1")]
    assert joined == q.joined == q.predictions == 4 * n and q.accuracy == 1.0


def test_memory_per_stored_prediction():
    """The docstring's figures: about 250 bytes per stored regressor prediction with a 32-char id
    (classifiers' 20 fewer: a small int index), about 100 per remembered evicted id."""
    n = 50_000
    store = PredictionStore(capacity=n, ttl_s=3600.0, forget_after=0)
    store.put_value("warm", "reg", "1", 0.0)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n - 1):
            # the id is made here, as the request path's ids are: the store keeps it alive
            store.put_value(uuid.uuid4().hex, "reg", "1", float(i) + 0.5)
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / (n - 1)
    finally:
        tracemalloc.stop()
    assert len(store) == n
    assert 150 < per_entry < 280, per_entry

    # and an evicted id that is still remembered (hash -> small int)
    store = PredictionStore(capacity=1, ttl_s=3600.0, forget_after=n)
    ids = [uuid.uuid4().hex for _ in range(n)]
    store.put_value(ids[0], "reg", "1", 0.0)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1, n):
            store.put_value(ids[i], "reg", "1", 0.5)
        per_gone = (tracemalloc.get_traced_memory()[0] - before) / (n - 1)
    finally:
        tracemalloc.stop()
    assert 50 < per_gone < 110, per_gone


@pytest.mark.parametrize("seed", range(3))
def test_five_row_answers_labelled_per_row_equal_sklearn(seed):
    """Answers of 5 rows; labels for rows 0..4 out of order, some late, duplicated, for a row
    past the answer (invalid) or past max_rows (unknown), for ids never seen (unknown)."""
    rng = np.random.default_rng(100 + seed)
    clock = Clock()
    k, n, rows = 4, 60, 5
    store = PredictionStore(capacity=1000, ttl_s=60.0, window=10_000, clock=clock)
    pred = rng.integers(0, k, (n, rows))
    truth = rng.integers(0, k, (n, rows))
    pred[30, 2] = -1  # a row with no class (NaN scores): not captured
    for i in range(n):
        if i == 10:
            clock.t += 30.0
        assert store.put_classes(f"q{i}", "m", "1", pred[i], classes=k)
    clock.t += 40.0  # the first 10 answers expire (70 s > 60 s), the rest are 40 s old
    pairs = [(i, r) for i in range(n) for r in range(rows)]
    order = rng.permutation(len(pairs))
    outcomes: dict[tuple[int, int], Outcome] = {}
    for j in order:
        i, r = pairs[j]
        outcomes[i, r] = store.join(FeedbackLabel(f"q{i}", index=int(truth[i, r]), row=r))
    assert outcomes.pop((30, 2)) is Outcome.UNKNOWN
    late = {key for key, o in outcomes.items() if o is Outcome.LATE}
    assert late == {(i, r) for i in range(10) for r in range(rows)}
    joined = [key for key, o in outcomes.items() if o is Outcome.JOINED]
    assert len(joined) == (n - 10) * rows - 1
    for i, r in [pairs[j] for j in order[:40]]:  # duplicates, of joined and of late rows
        expected = Outcome.UNKNOWN if (i, r) == (30, 2) else Outcome.DUPLICATE
        assert store.join(FeedbackLabel(f"q{i}", index=int(truth[i, r]), row=r)) is expected
    duplicates = sum(1 for j in order[:40] if pairs[j] != (30, 2))
    # a row past the end of a 5-row answer: invalid (the request is known, the row never was)
    assert store.join(FeedbackLabel("q20", index=0, row=5)) is Outcome.INVALID
    assert store.join(FeedbackLabel("q0", index=0, row=7)) is Outcome.INVALID  # (expired: still known)
    assert store.join(FeedbackLabel("never", index=0, row=1)) is Outcome.UNKNOWN
    q = store.quality()[("m", "1")]
    assert (q.predictions, q.joined, q.late, q.duplicate, q.invalid) == \
        (n * rows - 1, (n - 10) * rows - 1, 10 * rows, duplicates, 2)
    assert store.unknown == 1 + sum(1 for j in order[:40] if pairs[j] == (30, 2)) + 1
    assert q.join_rate == pytest.approx(((n - 10) * rows - 1) / (n * rows - 1))
    y_true = [int(truth[i, r]) for i, r in joined]
    y_pred = [int(pred[i, r]) for i, r in joined]
    _assert_classifier_matches(q, y_true, y_pred, k)


def test_five_row_regressor_answers_mae_rmse_equal_sklearn():
    rng = np.random.default_rng(5)
    store = PredictionStore(capacity=100, ttl_s=60.0)
    pred = rng.normal(size=(20, 5))
    pred[4, 1] = np.nan  # not captured
    truth = pred + rng.normal(scale=0.2, size=pred.shape)
    for i in range(20):
        assert store.put_values(f"v{i}", "reg", "1", pred[i])
    pairs = [(i, r) for i in range(20) for r in range(5)]
    y_true, y_pred = [], []
    for j in rng.permutation(len(pairs)):
        i, r = pairs[j]
        outcome = store.join(FeedbackLabel(f"v{i}", target=float(truth[i, r]), row=r))
        if (i, r) == (4, 1):
            assert outcome is Outcome.UNKNOWN
            continue
        assert outcome is Outcome.JOINED
        y_true.append(truth[i, r])
        y_pred.append(pred[i, r])
    q = store.quality()[("reg", "1")]
    assert (q.predictions, q.joined) == (99, 99)
    assert q.mae == pytest.approx(mean_absolute_error(y_true, y_pred))
    assert q.rmse == pytest.approx(math.sqrt(mean_squared_error(y_true, y_pred)))


def test_rows_past_max_rows_are_not_kept_and_their_labels_are_unknown():
    store = PredictionStore(capacity=10, ttl_s=60.0, max_rows=3, forget_after=10)
    assert store.put_values("big", "reg", "1", [1.0, 2.0, 3.0, 4.0, 5.0])
    assert store.put_classes("wide", "m", "1", [0, 1, 2, 0, 1], classes=3)
    assert store.join(FeedbackLabel("big", target=3.0, row=2)) is Outcome.JOINED
    assert store.join(FeedbackLabel("big", target=4.0, row=3)) is Outcome.UNKNOWN   # past max_rows
    assert store.join(FeedbackLabel("big", target=6.0, row=5)) is Outcome.INVALID   # past the answer
    assert store.join(FeedbackLabel("wide", index=0, row=4)) is Outcome.UNKNOWN
    assert store.quality()[("reg", "1")].predictions == 3
    for i in range(10):  # both leave the store; the remembered rows keep the same answers
        store.put_value(f"x{i}", "reg", "1", 0.0)
    assert store.join(FeedbackLabel("big", target=3.0, row=2)) is Outcome.DUPLICATE
    assert store.join(FeedbackLabel("big", target=2.0, row=1)) is Outcome.LATE
    assert store.join(FeedbackLabel("big", target=2.0, row=1)) is Outcome.DUPLICATE
    assert store.join(FeedbackLabel("big", target=4.0, row=3)) is Outcome.UNKNOWN
    assert store.join(FeedbackLabel("big", target=4.0, row=5)) is Outcome.INVALID
    assert store.join(FeedbackLabel("wide", label="c", row=0)) is Outcome.INVALID  # (no names: by index)
    assert store.join(FeedbackLabel("wide", index=0, row=0)) is Outcome.LATE
    # a one-row answer has row 0 only
    store.put_value("one", "reg", "1", 1.0)
    assert store.join(FeedbackLabel("one", target=1.0, row=1)) is Outcome.INVALID
    assert store.join(FeedbackLabel("one", target=1.0)) is Outcome.JOINED
    with pytest.raises(ValueError):
        PredictionStore(capacity=1, ttl_s=1.0, max_rows=0)


def test_an_answer_with_no_row_captured_is_not_stored():
    store = PredictionStore(capacity=10, ttl_s=60.0)
    assert not store.put_values("nan", "reg", "1", [math.nan, math.inf])
    assert not store.put_classes("none", "m", "1", [-1, -1, 5000], classes=3)
    assert len(store) == 0


def _per_entry_bytes(store, n, put) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            put(uuid.uuid4().hex, i)
        return (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("rows", [5, 64])
def test_memory_per_stored_many_row_answer(rows):
    """The docstring's figures for many-row entries: about 250 bytes plus 2 a row (classes) or
    8 a row (values); a remembered many-row id 145 to 220 (its masks grow past 30 rows)."""
    n = 20_000
    classes = np.arange(rows) % 3
    values = np.linspace(0.5, 1.5, rows)
    store = PredictionStore(capacity=n + 1, ttl_s=3600.0, forget_after=0, max_rows=rows)
    store.put_classes("warm", "m", "1", classes, classes=3)
    per_class_entry = _per_entry_bytes(store, n, lambda rid, i: store.put_classes(rid, "m", "1", classes))
    assert len(store) == n + 1
    store = PredictionStore(capacity=n + 1, ttl_s=3600.0, forget_after=0, max_rows=rows)
    store.put_values("warm", "reg", "1", values)
    per_value_entry = _per_entry_bytes(store, n, lambda rid, i: store.put_values(rid, "reg", "1", values))
    assert 200 < per_class_entry < 300 + 2 * rows, per_class_entry
    assert 200 < per_value_entry < 300 + 8 * rows, per_value_entry
    # a remembered evicted many-row id (hash -> (slot, rows, captured, joined))
    store = PredictionStore(capacity=1, ttl_s=3600.0, forget_after=n + 1, max_rows=rows)
    store.put_values("warm", "reg", "1", values)
    per_gone = _per_entry_bytes(store, n, lambda rid, i: store.put_values(rid, "reg", "1", values))
    assert 100 < per_gone < 260, per_gone


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        PredictionStore(capacity=0, ttl_s=1.0)
    with pytest.raises(ValueError):
        PredictionStore(capacity=1, ttl_s=math.nan)


class NaiveStore:
    """The store's rules written the slow, obvious way (lists, scans, sets of rows) to check
    the O(1) one."""

    def __init__(self, capacity, ttl_s, forget_after, max_rows):
        self.capacity, self.ttl_s, self.forget_after, self.max_rows = capacity, ttl_s, forget_after, max_rows
        self.live = []   # [id, t, rows, joined rows], oldest first
        self.evictions = []  # ids as they were evicted, oldest first: the last forget_after
        self.gone = {}   # id -> [rows, joined rows], while one of its evictions is among those

    def _evict_one(self):
        rid, _, rows, joined = self.live.pop(0)
        if not self.forget_after:
            return
        self.evictions.append(rid)
        self.gone[rid] = [rows, joined]
        if len(self.evictions) > self.forget_after:
            old = self.evictions.pop(0)
            if old not in self.evictions:
                del self.gone[old]

    def _expire(self, now):
        while self.live and self.live[0][1] <= now - self.ttl_s:
            self._evict_one()

    def put(self, rid, rows, now):
        self._expire(now)
        if any(e[0] == rid for e in self.live):
            return False
        self.live.append([rid, now, rows, set()])
        if len(self.live) > self.capacity:
            self._evict_one()
        return True

    def _row(self, rows, joined, row, found):
        if row >= rows:
            return Outcome.INVALID
        if row >= self.max_rows:
            return Outcome.UNKNOWN
        if row in joined:
            return Outcome.DUPLICATE
        joined.add(row)
        return found

    def join(self, rid, row, now):
        self._expire(now)
        for e in self.live:
            if e[0] == rid:
                return self._row(e[2], e[3], row, Outcome.JOINED)
        if rid in self.gone:
            rows, joined = self.gone[rid]
            return self._row(rows, joined, row, Outcome.LATE)
        return Outcome.UNKNOWN


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_OPS = st.lists(st.tuples(st.sampled_from(["put", "join", "wait"]), st.integers(0, 15), st.integers(0, 3)),
                max_size=150)


@settings(max_examples=200, deadline=None)
@given(ops=_OPS, capacity=st.integers(1, 6), forget_after=st.integers(0, 6), max_rows=st.integers(1, 3))
def test_outcomes_follow_the_rules_whatever_the_order(ops, capacity, forget_after, max_rows):
    clock = Clock()
    store = PredictionStore(capacity=capacity, ttl_s=5.0, forget_after=forget_after, max_rows=max_rows,
                            clock=clock)
    naive = NaiveStore(capacity, 5.0, forget_after, max_rows)
    for op, n, row in ops:
        rid = f"r{n}"
        if op == "put":
            rows = row + 1  # answers of 1 to 4 rows
            assert store.put_values(rid, "reg", "1", [1.0] * rows) == naive.put(rid, rows, clock.t)
        elif op == "join":
            assert store.join(FeedbackLabel(rid, target=1.0, row=row)) is naive.join(rid, row, clock.t)
        else:
            clock.t += n / 3
        assert len(store) == len(naive.live) <= capacity
        assert len(store._gone_copies) <= len(store._gone) <= len(store._gone_order) <= forget_after
