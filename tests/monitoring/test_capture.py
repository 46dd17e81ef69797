"""The answer-path capture of predictions for delayed labels, on real model versions (no gRPC)."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gateway.api import GatewayError
from gateway.api.feedback import FeedbackLabel, Outcome
from gateway.monitoring.capture import PredictionCapture
from gateway.monitoring.labels import PredictionStore
from tests.core.serving import LABELS, Serving, echo, linear, request, rows


class Later:
    """Forwards to the capture, which needs the registry the serving harness builds."""

    target: PredictionCapture | None = None

    def on_answer(self, *args) -> None:
        assert self.target is not None
        self.target.on_answer(*args)


def run(tmp_path, body):
    async def main():
        later = Later()
        s = Serving(tmp_path, observers=(later,))
        store = PredictionStore(capacity=100, ttl_s=60.0)
        later.target = PredictionCapture(store, s.registry)
        try:
            return await body(s, store, later.target)
        finally:
            await s.close()
    return asyncio.run(main())


def test_a_classifier_answer_is_stored_as_its_class_index_and_joins_by_name_or_index(tmp_path):
    async def body(s, store, capture):
        s.add("clf", echo(), LABELS)
        for i, x in enumerate(([0.1, 0.7, 0.2], [0.9, 0.05, 0.05], [0.0, 0.1, 0.9])):
            response = await s.dataplane.infer(request("clf", rows(x), request_id=f"c{i}"))
            assert response.predicted_label == [["b", "a", "c"][i]]
        assert len(store) == 3
        assert store.join(FeedbackLabel("c0", label="b")) is Outcome.JOINED
        assert store.join(FeedbackLabel("c1", index=2)) is Outcome.JOINED
        assert store.join(FeedbackLabel("c2", label="nope")) is Outcome.INVALID
        q = store.quality()[("clf", "1")]
        assert q.kind == "classifier" and q.classes == ("a", "b", "c")
        assert q.accuracy == 0.5 and q.confusion == (0, 0, 0, 0, 1, 0, 1, 0, 0)  # (b, b), (c, a)
    run(tmp_path, body)


def test_a_classifier_without_labels_is_stored_by_index_with_its_class_count(tmp_path):
    async def body(s, store, capture):
        s.add("clf", linear(np.eye(3, 4)), "classifier: {output: probabilities}\n")
        await s.dataplane.infer(request("clf", rows([0.1, 0.7, 0.2]), request_id="c"))
        assert store.join(FeedbackLabel("c", index=3)) is Outcome.JOINED  # the 4th class, never predicted
        q = store.quality()[("clf", "1")]
        assert q.classes == ("0", "1", "2", "3") and q.accuracy == 0.0
    run(tmp_path, body)


def test_a_regressor_answer_is_stored_as_its_first_output_value(tmp_path):
    async def body(s, store, capture):
        s.add("reg", echo())  # no labels, no classifier: a regressor
        await s.dataplane.infer(request("reg", rows([0.25, 0.7, 0.2]), request_id="r"))
        assert store.join(FeedbackLabel("r", target=1.25)) is Outcome.JOINED
        q = store.quality()[("reg", "1")]
        assert q.kind == "regressor" and q.mae == pytest.approx(1.0) and q.rmse == pytest.approx(1.0)
    run(tmp_path, body)


def test_failed_requests_are_not_captured(tmp_path):
    async def body(s, store, capture):
        s.add("clf", echo(), LABELS)
        with pytest.raises(GatewayError):
            await s.dataplane.infer(request("clf", rows([0.1, 0.7]), request_id="bad"))
        with pytest.raises(GatewayError):
            await s.dataplane.infer(request("missing", request_id="gone"))
        assert len(store) == 0
        assert store.join(FeedbackLabel("bad", label="b")) is Outcome.UNKNOWN
    run(tmp_path, body)


def test_a_many_row_answer_is_kept_row_by_row_up_to_max_rows(tmp_path):
    async def body(s, store, capture):
        s.add("clf", echo(), LABELS)
        s.add("reg", echo())
        x = rows([0.1, 0.7, 0.2], [0.9, 0.05, 0.05], [np.nan, 0.1, 0.2], [0.0, 0.1, 0.9], [0.5, 0.2, 0.3])
        response = await s.dataplane.infer(request("clf", x, request_id="five"))
        assert response.predicted_label == ["b", "a", "", "c", "a"]  # (NaN scores: no label)
        await s.dataplane.infer(request("reg", x, request_id="vals"))
        assert len(store) == 2
        join = store.join_many
        assert join([FeedbackLabel("five", label="c", row=3), FeedbackLabel("five", label="b", row=0),
                     FeedbackLabel("five", index=1, row=1), FeedbackLabel("five", label="a", row=2),
                     FeedbackLabel("five", label="a", row=3), FeedbackLabel("five", label="a", row=5)]) == \
            [Outcome.JOINED, Outcome.JOINED, Outcome.JOINED, Outcome.UNKNOWN, Outcome.DUPLICATE, Outcome.INVALID]
        q = store.quality()[("clf", "1")]
        assert (q.predictions, q.joined, q.accuracy) == (4, 3, pytest.approx(2 / 3))
        # a regressor's rows: the first value of each row of its first output
        assert join([FeedbackLabel("vals", target=1.1, row=0), FeedbackLabel("vals", target=1.5, row=4),
                     FeedbackLabel("vals", target=0.0, row=2)]) == [Outcome.JOINED, Outcome.JOINED, Outcome.UNKNOWN]
        assert store.quality()[("reg", "1")].mae == pytest.approx(1.0)
    run(tmp_path, body)


def test_rows_past_max_rows_are_counted_as_skipped(tmp_path):
    async def main():
        later = Later()
        s = Serving(tmp_path, observers=(later,))
        store = PredictionStore(capacity=100, ttl_s=60.0, max_rows=2)
        later.target = capture = PredictionCapture(store, s.registry)
        try:
            s.add("clf", echo(), LABELS)
            await s.dataplane.infer(request("clf", rows(*[[0.1, 0.7, 0.2]] * 5), request_id="five"))
            assert capture.skipped_rows == 3
            assert store.join(FeedbackLabel("five", label="b", row=1)) is Outcome.JOINED
            assert store.join(FeedbackLabel("five", label="b", row=2)) is Outcome.UNKNOWN
            assert store.quality()[("clf", "1")].predictions == 2
        finally:
            await s.close()
    asyncio.run(main())
