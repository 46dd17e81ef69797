"""The classifier head: top-1 confidence and class per row, labels, and answers that did not come
from a batch (cache or static rows, 1-D)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.core.postprocess import NO_LABEL, ClassifierHead


def test_labels_of_classes_none_named_and_unnamed():
    head = ClassifierHead("p", False, ["approve", "review"])
    assert head.label_of(np.array([-1, 0, 1, 2, 7], np.int64)) == [NO_LABEL, "approve", "review", "2", "7"]
    assert NO_LABEL == ""
    assert ClassifierHead("p", False, []).label_of(np.array([0, -1], np.int64)) == ["0", ""]


def test_top1_per_row_with_ties_nan_and_all_minus_infinity():
    head = ClassifierHead("p", False, ["a", "b", "c"])
    scores = np.array([[0.2, 0.7, 0.1], [0.4, 0.4, 0.2], [np.nan, 0.5, 0.5], [-np.inf] * 3], np.float32)
    confidence, classes = head.top1({"p": scores, "other": np.zeros(4)})
    assert confidence.dtype == np.float32 and classes.dtype == np.int64
    assert confidence[:2].tolist() == pytest.approx([0.7, 0.4]) and math.isnan(confidence[2])
    assert confidence[3] == 0.0
    assert classes.tolist() == [1, 0, -1, -1]                 # a tie goes to the first class
    assert head.label_of(classes) == ["b", "a", "", ""]


def test_logits_are_softmaxed_first():
    head = ClassifierHead("p", True, ["a", "b"])
    confidence, classes = head.top1({"p": np.array([[0.0, math.log(3.0)]], np.float32)})
    assert confidence.tolist() == pytest.approx([0.75]) and classes.tolist() == [1]


def test_answer_of_a_one_dimensional_static_row():
    head = ClassifierHead("p", False, ["a", "b", "c"])
    confidence, labels = head.answer({"p": np.array([0.2, 0.5, 0.3], np.float32)})
    assert confidence.shape == (1,) and confidence.tolist() == pytest.approx([0.5]) and labels == ["b"]


def test_answer_of_rows_and_of_outputs_without_the_scores():
    head = ClassifierHead("p", True, ["a", "b", "c"])
    confidence, labels = head.answer({"p": np.array([[0.0, 0.0, 5.0], [2.0, 0.0, 0.0]], np.float32)})
    softmax = math.exp(5) / (math.exp(5) + 2)
    assert confidence.tolist() == pytest.approx([softmax, math.exp(2) / (math.exp(2) + 2)], rel=1e-6)
    assert labels == ["c", "a"]
    assert head.answer({"q": np.ones(3, np.float32)}) == (None, [])
