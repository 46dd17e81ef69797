"""Dynamic batching per model version: a bounded queue, batch formation, execution off the loop.

Requests are concatenated along axis 0 when the model has a dynamic leading
dimension; otherwise each runs alone. ``instance_count`` executions may be in
flight at once; while they run, new requests queue up and the next batch takes
them all without waiting (the busier the model, the larger the batches).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import cast

import numpy as np

from ..api import GatewayError, InferRequest, Status
from .context import Attempt
from .observers import BatchObserver
from .placement import ExecutionPlace
from .postprocess import ClassifierHead

log = logging.getLogger("gateway.batching")


class _Item:
    __slots__ = ("request", "attempt", "future", "rows", "signature")

    def __init__(self, request: InferRequest, attempt: Attempt, future: asyncio.Future, rows: int,
                 signature: tuple):
        self.request = request
        self.attempt = attempt
        self.future = future
        self.rows = rows
        self.signature = signature


class BatchResult:
    """One request's share of an executed batch: outputs, and for classifiers the head's
    per-row confidence and class (None otherwise), row-sliced."""

    __slots__ = ("outputs", "confidence", "classes")

    def __init__(self, outputs: dict[str, np.ndarray], confidence: np.ndarray | None = None,
                 classes: np.ndarray | None = None):
        self.outputs = outputs
        self.confidence = confidence
        self.classes = classes


class DynamicBatcher:
    def __init__(self, model, executor: Executor, *, max_batch_size: int, max_queue_delay_us: int,
                 preferred_batch_sizes: list[int], max_queue_size: int, instance_count: int,
                 head: ClassifierHead | None = None, observer: BatchObserver | None = None,
                 inline_below_us: int = 0):
        self.model = model
        self._executor = executor
        self.max_batch_size = max(1, max_batch_size)
        self._batching = max_batch_size > 0
        self._delay_s = max_queue_delay_us / 1e6
        self.max_queue_delay_us = max_queue_delay_us
        self.preferred_batch_sizes = tuple(sorted(set(preferred_batch_sizes)))
        self.instance_count = instance_count
        self.batching = max_batch_size > 0  # (False: every request runs alone)
        self._preferred = frozenset(preferred_batch_sizes)
        self.max_queue_size = max_queue_size
        self._instances = instance_count
        self._slots = asyncio.Semaphore(instance_count)
        self._head = head
        self._observer = observer
        self._observer_failed = False  # logged once
        self._queue: collections.deque[_Item] = collections.deque()
        self._queued_rows = 0
        self._wake: asyncio.Future | None = None
        self._closing = False
        self._task: asyncio.Task | None = None
        self.in_flight = 0
        self.executions = 0  # batches run so far (tests and stats read these)
        self.executed_requests = 0
        self.inline_executions = 0
        self._place = ExecutionPlace(inline_below_us)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher {self.model.served_by}")

    async def close(self) -> None:
        """Stop taking requests; finish everything already queued or running."""
        self._closing = True
        self._notify()
        if self._task is not None:
            await self._task

    def submit(self, request: InferRequest, attempt: Attempt) -> asyncio.Future:
        """Queue a validated request for ``attempt`` (its rows and deadline); the future
        resolves to a :class:`BatchResult`. The batcher stamps the attempt's timeline."""
        if self._closing:
            raise GatewayError(Status.UNAVAILABLE, f"model {self.model.served_by} is being unloaded", reason="unloading")
        if len(self._queue) >= self.max_queue_size:
            # Requests whose client left (cancelled, or their deadline passed) wait in the queue
            # until the next batch is taken: under a deadline flood they would fill it and refuse
            # live requests for as long as an execution lasts.
            self._drop_gone(time.monotonic_ns())
        if len(self._queue) >= self.max_queue_size:
            raise GatewayError(Status.RESOURCE_EXHAUSTED,
                               f"model {self.model.served_by}: queue is full "
                               f"({self.max_queue_size} request{'s' if self.max_queue_size != 1 else ''} "
                               f"waiting)", retry_after_ms=50, reason="queue_full")
        future = asyncio.get_running_loop().create_future()
        signature = tuple((k, v.shape[1:]) for k, v in request.inputs.items()) if self._batching else ()
        rows = attempt.rows
        attempt.t_enqueued_ns = time.monotonic_ns()
        self._queue.append(_Item(request, attempt, future, rows, signature))
        self._queued_rows += rows
        if self._queued_rows >= self.max_batch_size or len(self._queue) == 1 or self._queued_rows in self._preferred:
            self._notify()
        return future

    def _notify(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _wait(self, timeout_s: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._wake = wake = loop.create_future()
        handle = loop.call_later(timeout_s, _resolve, wake) if timeout_s is not None else None
        try:
            await wake
        finally:
            if handle is not None:
                handle.cancel()
            self._wake = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            while not self._queue and not self._closing:
                await self._wait(None)
            if not self._queue:  # closing and drained
                self._slots.release()
                break
            if self._batching and self._delay_s > 0 and self._queued_rows < self.max_batch_size \
                    and self._queued_rows not in self._preferred:
                give_up_at = self._queue[0].attempt.t_enqueued_ns / 1e9 + self._delay_s
                while not self._closing and self._queued_rows < self.max_batch_size \
                        and self._queued_rows not in self._preferred:
                    remaining = give_up_at - time.monotonic()
                    if remaining <= 0:
                        break
                    await self._wait(remaining)
            batch = self._take()
            if not batch:
                self._slots.release()
                continue
            self.in_flight += 1
            if self._place.inline_next(batch[0].attempt.batch_size):
                fut = loop.create_future()
                try:
                    fut.set_result(self._execute(batch, True))
                except Exception as exc:  # handed to the requests by _finish, as from a thread
                    fut.set_exception(exc)
                self.inline_executions += 1
                self._finish(fut, batch)
                # This frame outlives the batch: bound here, its inputs and outputs (tens of MB
                # for a large request) would stay alive until this model's next batch.
                del fut, batch
                await asyncio.sleep(0)  # let the handlers that queue requests run between batches
                continue
            fut = loop.run_in_executor(self._executor, self._execute, batch, False)
            fut.add_done_callback(cast("Callable[[asyncio.Future], object]",  # (mypy can't infer the lambda)
                                       lambda f, b=batch: self._finish(f, b)))
            del fut, batch  # (as above: the callback holds them until the execution ends)
        for _ in range(self._instances):  # wait for executions still running
            await self._slots.acquire()

    def _take(self) -> list[_Item]:
        """Pop the next batch: as many compatible, still-wanted requests as fit."""
        batch: list[_Item] = []
        rows = 0
        now = time.monotonic_ns()
        queue = self._queue
        while queue:
            item = queue[0]
            if item.future.done():  # cancelled by the client
                queue.popleft()
                self._queued_rows -= item.rows
                continue
            deadline = item.attempt.deadline_ns
            if deadline and deadline <= now:
                queue.popleft()
                self._queued_rows -= item.rows
                self._expire(item, now)
                continue
            if batch and (not self._batching or rows + item.rows > self.max_batch_size
                          or item.signature != batch[0].signature):
                break
            queue.popleft()
            self._queued_rows -= item.rows
            batch.append(item)
            rows += item.rows
            if not self._batching:
                break
        for item in batch:
            item.attempt.t_batch_ns = now
            item.attempt.batch_size = rows
        return batch

    def _expire(self, item: _Item, now: int) -> None:
        item.future.set_exception(GatewayError(
            Status.DEADLINE_EXCEEDED, f"model {self.model.served_by}: deadline passed after "
            f"{(now - item.attempt.t_enqueued_ns) / 1e6:.1f} ms in the queue", reason="deadline"))

    def _drop_gone(self, now: int) -> None:
        """Drop the queued requests that are cancelled or past their deadline (the latter get
        DEADLINE_EXCEEDED), keeping the others in order."""
        kept: collections.deque[_Item] = collections.deque()
        for item in self._queue:
            if item.future.done():
                self._queued_rows -= item.rows
            elif item.attempt.deadline_ns and item.attempt.deadline_ns <= now:
                self._queued_rows -= item.rows
                self._expire(item, now)
            else:
                kept.append(item)
        self._queue = kept

    def _execute(self, batch: list[_Item], inline: bool):
        """Runs on an executor thread (or inline on the loop for very fast models)."""
        # CPU time of this thread, not wall time: on a busy worker thread the wall clock also
        # counts waits for the GIL, which would keep a tiny model off the inline path for good.
        began = time.thread_time_ns()
        try:
            return self._execute_batch(batch)
        finally:
            self._place.timed(time.thread_time_ns() - began, inline, batch[0].attempt.batch_size)

    def _execute_batch(self, batch: list[_Item]):
        requests = [item.request for item in batch]
        if len(batch) == 1:
            feeds = requests[0].inputs
        else:
            feeds = {name: np.concatenate([r.inputs[name] for r in requests], axis=0)
                     for name in requests[0].inputs}
        start = time.monotonic_ns()
        try:
            values = self.model.run(feeds)
        finally:
            end = time.monotonic_ns()
            for item in batch:
                item.attempt.t_compute_start_ns = start
                item.attempt.t_compute_end_ns = end
        outputs = dict(zip(self.model.output_names, values))
        head = self._head
        confidence, classes = head.top1(outputs) if head is not None else (None, None)
        if self._observer is not None:
            try:
                self._observer.observe_batch(feeds, outputs)
            except Exception:  # observers observe: a failing one never changes the answer
                if not self._observer_failed:
                    self._observer_failed = True
                    log.exception("model %s: batch observer %r failed", self.model.served_by, self._observer)
        return outputs, confidence, classes

    def _finish(self, fut: asyncio.Future, batch: list[_Item]) -> None:
        self.in_flight -= 1
        self.executions += 1
        self.executed_requests += len(batch)
        self._slots.release()
        exc = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
        if exc is not None:
            if not isinstance(exc, GatewayError):
                log.error("model %s: execution failed: %s", self.model.served_by, exc,
                          extra={"event": "model.execution_failed", "model": self.model.name,
                                 "version": self.model.version})
                exc = GatewayError(Status.INTERNAL,
                                   f"model {self.model.served_by}: inference failed: {exc}")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        outputs, confidence, classes = fut.result()
        if self._batching:
            for name, value in outputs.items():
                if value.ndim == 0 or value.shape[0] != sum(i.rows for i in batch):
                    err = GatewayError(Status.INTERNAL, f"model {self.model.served_by}: output {name!r} "
                                       f"has shape {list(value.shape)}, not one row per input row")
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(err)
                    return
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_result(BatchResult(outputs, confidence, classes))
            return
        start = 0
        for item in batch:
            stop = start + item.rows
            if not item.future.done():
                item.future.set_result(BatchResult(
                    {k: v[start:stop] for k, v in outputs.items()},
                    confidence[start:stop] if confidence is not None else None,
                    classes[start:stop] if classes is not None else None))
            start = stop


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
