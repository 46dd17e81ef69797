"""What may watch the request path, as protocols the composition root passes in.

Observers observe; they never decide what the client gets, and they must not raise (an
exception from one is logged and the answer goes out regardless).

- :class:`RequestObserver` sees every answered request once, with the attempt that answered
  (telemetry's recorder, span export, the access log).
- :class:`DecisionObserver` sees each fallback-policy decision and breaker transition (the
  fallback event log, span events).
- :class:`BatchObserver` sees each executed batch's inputs and outputs on the executor thread
  (input and confidence statistics).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from ..api import InferRequest, InferResponse, Status
from ..config.profile import ReferenceProfile
from .context import Attempt

log = logging.getLogger("gateway.core")


class RequestObserver(Protocol):
    def on_answer(self, request: InferRequest, attempt: Attempt, status: Status,
                  response: InferResponse | None, fallback_code: int, t_responded_ns: int) -> None: ...


class DecisionObserver(Protocol):
    """``request`` is None for decisions about no one request (a breaker transition)."""

    def __call__(self, request: InferRequest | None, event: str, attributes: dict) -> None: ...


class BatchObserver(Protocol):
    def observe_batch(self, feeds: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None: ...


class ModelObservers(Protocol):
    """Per-model-version hooks a telemetry backend offers when a version is assembled."""

    def register(self, name: str, version: str, *, inputs: dict[str, int], classes: int | None,
                 logits: bool, labels: list[str] | None, input_stats: object,
                 profile: ReferenceProfile | None = None,
                 outlier_thresholds: tuple[int, float | None] | None = None) -> int:
        """Register a version; returns its telemetry id (stamped into its records). With a
        reference ``profile`` its input statistics bin by the profile's edges.
        ``outlier_thresholds``: (max features out of range, max robust z or None) that make a
        row an outlier in the sampled outlier rate (None: policy.outliers' defaults)."""
        ...

    def batch_observer(self, telemetry_id: int, classifier_output: str | None,
                       logits: bool, value_output: str | None = None) -> BatchObserver | None:
        """``value_output``: for a model that is no classifier, the output whose values are its
        predictions (their statistics and drift are watched like an input's)."""
        ...


class Decisions:
    """Fans one decision out to every decision observer; a failing observer is logged once."""

    __slots__ = ("_observers", "_failed")

    def __init__(self, observers: tuple[DecisionObserver, ...] = ()) -> None:
        self._observers = observers
        self._failed: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self._observers)

    def __call__(self, request: InferRequest | None, event: str, **attributes) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("policy decision %s request=%s %s", event, request.request_id if request else "",
                      " ".join(f"{k}={v}" for k, v in attributes.items()))
        for observer in self._observers:
            try:
                observer(request, event, attributes)
            except Exception:
                if id(observer) not in self._failed:
                    self._failed.add(id(observer))
                    log.exception("decision observer %r failed", observer)
