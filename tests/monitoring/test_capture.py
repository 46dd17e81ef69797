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


def test_requests_of_several_rows_and_failed_requests_are_not_captured(tmp_path):
    async def body(s, store, capture):
        s.add("clf", echo(), LABELS)
        await s.dataplane.infer(request("clf", rows([0.1, 0.7, 0.2], [0.3, 0.3, 0.4]), request_id="two"))
        with pytest.raises(GatewayError):
            await s.dataplane.infer(request("clf", rows([0.1, 0.7]), request_id="bad"))
        with pytest.raises(GatewayError):
            await s.dataplane.infer(request("missing", request_id="gone"))
        assert len(store) == 0 and capture.skipped_rows == 1
        assert store.join(FeedbackLabel("two", label="b")) is Outcome.UNKNOWN
    run(tmp_path, body)
