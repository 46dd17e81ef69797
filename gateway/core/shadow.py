"""Shadow traffic: a sampled share of a model's answered requests mirrored to candidate versions,
off the response path, and the two answers compared.

A model's ``traffic.shadow`` maps candidate versions to the share of its requests each gets
(0..1, drawn per request). Once the primary version has answered (not degraded), the pipeline
hands the request to :meth:`Shadowing.mirror`, which decides at once and, for a request to
mirror, only creates a task: the client's answer, its status and its timing never wait on a
shadow. The task runs the request through the candidate's batcher as an attempt of its own
(``Attempt.shadow``; its batches feed the candidate's input and confidence statistics, its
requests are not counted as the model's), under its own deadline (``timeout_ms``), without the
candidate's breaker, admission, guard or fallback chain, and compares:

- classifiers (both with labels): the share of rows whose predicted labels agree;
- every output both answers have with the same shape: the mean absolute difference.

Shed first under load: a shadow is not sent (and is counted as shed) when ``max_in_flight``
shadows are already running or ``max_inflight_bytes`` of request payload are held by them (so
their memory is bounded by that many bytes, plus the answers), or when the primary's or the
candidate's batch queue is at least half full. Stats per (primary, candidate) pair: mirrored,
shed, errors (by status), agreement, mean absolute difference, latency (the last
:data:`LATENCY_KEPT` shadows' percentiles) — read by GetStats, ``gateway stats`` and the
``gateway.shadow.*`` metrics.
"""
from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..api import GatewayError, InferRequest, InferResponse
from ..api.stats import ShadowSnapshot
from .context import Attempt
from .validation import validate

log = logging.getLogger("gateway.core")

LATENCY_KEPT = 1024   # shadow latencies kept per pair for its percentiles


@dataclass(frozen=True)
class ShadowBudget:
    max_in_flight: int = 64
    max_inflight_bytes: int = 64 << 20
    timeout_ms: int = 1000


class _Pair:
    __slots__ = ("mirrored", "shed", "errors", "agree_rows", "compared_rows", "abs_diff_sum",
                 "abs_diff_values", "latencies_ms")

    def __init__(self) -> None:
        self.mirrored = 0                      # sent to the candidate
        self.shed = 0                          # sampled but not sent (over budget, queues full)
        self.errors: dict[str, int] = {}       # status name -> shadows that ended with it
        self.agree_rows = 0
        self.compared_rows = 0
        self.abs_diff_sum = 0.0
        self.abs_diff_values = 0
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_KEPT)


class Shadowing:
    """The gateway's shadows (one per data plane). ``mirror`` runs on the event loop; the
    stats are read from other threads under the lock."""

    def __init__(self, budget: ShadowBudget | None = None) -> None:
        self.budget = budget or ShadowBudget()
        self.in_flight = 0
        self.inflight_bytes = 0
        self._pairs: dict[tuple[str, str], _Pair] = {}
        self._tasks: set[asyncio.Task] = set()
        self._lock = threading.Lock()

    def _pair(self, primary: str, shadow: str) -> _Pair:
        key = (primary, shadow)
        pair = self._pairs.get(key)
        if pair is None:
            with self._lock:
                pair = self._pairs.setdefault(key, _Pair())
        return pair

    def mirror(self, primary, candidates, request: InferRequest, response: InferResponse) -> None:
        """``primary``: the version that answered; ``candidates``: (ModelVersion, share) pairs."""
        for target, share in candidates:
            if target is primary or random.random() >= share:
                continue
            pair = self._pair(primary.served_by, target.served_by)
            b = self.budget
            if self.in_flight >= b.max_in_flight or \
                    self.inflight_bytes + request.payload_bytes > b.max_inflight_bytes or \
                    _half_full(primary.batcher) or _half_full(target.batcher):
                pair.shed += 1
                continue
            pair.mirrored += 1
            self.in_flight += 1
            self.inflight_bytes += request.payload_bytes
            task = asyncio.get_running_loop().create_task(self._run(target, request, response, pair))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, target, request: InferRequest, primary: InferResponse, pair: _Pair) -> None:
        start = time.monotonic_ns()
        try:
            model = target.model
            attempt = Attempt(target.served_by, target.telemetry_id, shadow=True)
            attempt.rows = validate(request, model.inputs, model.input_by_name, model.output_names,
                                    target.served_by, model.batchable)
            attempt.deadline_ns = start + self.budget.timeout_ms * 1_000_000
            result = await asyncio.wait_for(target.batcher.submit(request, attempt), self.budget.timeout_ms / 1000)
            labels = target.head.label_of(result.classes) if result.confidence is not None and \
                target.head is not None else None
            self._compare(pair, primary, result.outputs, labels)
            pair.latencies_ms.append((time.monotonic_ns() - start) / 1e6)
        except GatewayError as exc:
            self._error(pair, exc.status.name)
        except asyncio.TimeoutError:
            self._error(pair, "DEADLINE_EXCEEDED")
        except asyncio.CancelledError:
            self._error(pair, "CANCELLED")
            raise
        except Exception:  # a shadow never hurts serving: counted and logged
            log.exception("shadow of %s on %s failed", request.request_id, target.served_by)
            self._error(pair, "INTERNAL")
        finally:
            self.in_flight -= 1
            self.inflight_bytes -= request.payload_bytes

    def _error(self, pair: _Pair, status: str) -> None:
        with self._lock:
            pair.errors[status] = pair.errors.get(status, 0) + 1

    def _compare(self, pair: _Pair, primary: InferResponse, outputs: dict[str, np.ndarray],
                 labels: list[str] | None) -> None:
        agree = compared = 0
        if labels is not None and primary.predicted_label and len(labels) == len(primary.predicted_label):
            compared = len(labels)
            agree = sum(a == b for a, b in zip(labels, primary.predicted_label))
        diff_sum, diff_n = 0.0, 0
        for name, mine in primary.outputs.items():
            theirs = outputs.get(name)
            if theirs is None or theirs.shape != mine.shape or mine.dtype.kind not in "fiu" \
                    or theirs.dtype.kind not in "fiu":
                continue
            d = np.abs(mine.astype(np.float64) - theirs.astype(np.float64))
            finite = d[np.isfinite(d)]
            diff_sum += float(finite.sum())
            diff_n += int(finite.size)
        with self._lock:
            pair.agree_rows += agree
            pair.compared_rows += compared
            pair.abs_diff_sum += diff_sum
            pair.abs_diff_values += diff_n

    def snapshot(self) -> tuple[ShadowSnapshot, ...]:
        with self._lock:
            items = [(k, p, dict(p.errors), list(p.latencies_ms)) for k, p in sorted(self._pairs.items())]
        out = []
        for (primary, shadow), p, errors, lat in items:
            pct = np.percentile(lat, [50, 99]) if lat else (float("nan"), float("nan"))
            out.append(ShadowSnapshot(
                primary=primary, shadow=shadow, mirrored=p.mirrored, shed=p.shed, errors=errors,
                agreement=p.agree_rows / p.compared_rows if p.compared_rows else float("nan"),
                compared_rows=p.compared_rows,
                mean_abs_diff=p.abs_diff_sum / p.abs_diff_values if p.abs_diff_values else float("nan"),
                p50_ms=float(pct[0]), p99_ms=float(pct[1])))
        return tuple(out)

    async def drain(self) -> None:
        """Cancel the shadows still running (shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _half_full(batcher) -> bool:
    return batcher.queue_depth * 2 >= batcher.max_queue_size
