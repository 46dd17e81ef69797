"""The classifier head: per-row top-1 confidence, class and label of a classifier's scores.

Decided here, once, for every answer (model, cache or static), whether telemetry runs or
not; telemetry only observes it. A row whose scores hold a NaN gets confidence NaN and no
label (``""``); a row of all ``-inf`` gets 0.0 and no label; on ties the first (lowest
index) class wins. ``logits: true`` applies a softmax first (so confidence is a probability).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import kernels

NO_LABEL = ""


class ClassifierHead:
    """Built per model version from its ``classifier:`` / ``labels`` config."""

    __slots__ = ("output", "logits", "labels")

    def __init__(self, output: str, logits: bool, labels: Sequence[str]) -> None:
        self.output = output
        self.logits = logits
        self.labels = tuple(labels)

    def top1(self, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(confidence float32[rows], class int64[rows], -1 for rows without one)."""
        return kernels.top1(outputs[self.output], self.logits)

    def label_of(self, classes: np.ndarray) -> list[str]:
        labels = self.labels
        n = len(labels)
        return [NO_LABEL if c < 0 else (labels[c] if c < n else str(c)) for c in classes.tolist()]

    def answer(self, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray | None, list[str]]:
        """Confidence and labels of outputs that did not come from a batch (fallback answers)."""
        if self.output not in outputs:
            return None, []
        scores = outputs[self.output]
        confidence, classes = kernels.top1(scores if scores.ndim > 1 else scores[None, :], self.logits)
        return confidence, self.label_of(classes)
