"""One load-generating client process (``python -m bench.worker SPEC_JSON``), started by
:mod:`bench.driver`, which splits the load over several of them and merges what they report.

Closed loop (``mode: closed``): ``concurrency`` workers, each with one request outstanding (a
stream worker keeps one message outstanding on its own stream). Open loop (``mode: open``): sends
at ``rate`` per second, evenly spaced (``arrival: constant``) or with exponential gaps
(``poisson``), whatever the answers do; latency runs from the *scheduled* send time, so a client
or server that falls behind shows as latency, not as fewer samples. Streams in open loop spread
the messages over ``streams`` streams and match answers by id.

``distinct`` > 0: that many different requests (rows drawn once), sent in turn, instead of one
per worker re-sent (input statistics then see a distribution, not a few fixed rows).

Events, in seconds from the start of the measured window: ``spike`` (``at_s``, ``for_s``,
``factor``: concurrency or rate times ``factor``) and ``drift`` (``at_s``, ``shift``: from then on
the inputs are the same rows shifted by ``shift`` standard deviations).

Every second a progress line goes to stdout as JSON; the last line is ``{"final": ...}``: the
measured window's histogram (bench.histogram), counts, errors by name, degraded answers, and a
per-second series (warm-up included). Bounded: the run ends at warm-up + duration, the drain after
it by ``timeout_s``, open-loop requests outstanding by ``max_outstanding``.
"""
from __future__ import annotations

import asyncio
import collections
import json
import random
import sys
import time
from typing import Any

import grpc

from bench.histogram import Histogram
from bench.wire import GRPC_OPTIONS, NoSuchService, Wire, check_loopback


class Recorder:
    def __init__(self, t0: float, measure_from: float, measure_until: float, rows: int):
        self.t0, self.measure_from, self.measure_until, self.rows = t0, measure_from, measure_until, rows
        self.hist = Histogram()
        self.errors: collections.Counter[str] = collections.Counter()
        self.degraded = 0
        self.total = 0
        self.seconds: dict[int, dict[str, Any]] = {}

    def _second(self, t: float) -> dict[str, Any]:
        s = int(t - self.t0)
        sec = self.seconds.get(s)
        if sec is None:
            sec = self.seconds[s] = {"ok": 0, "errors": 0, "degraded": 0, "hist": Histogram()}
        return sec

    def done(self, t_start: float, t_end: float, error: str | None, degraded: bool) -> None:
        self.total += 1
        sec = self._second(t_end)
        measured = self.measure_from <= t_end < self.measure_until
        if error is not None:
            sec["errors"] += 1
            if measured:
                self.errors[error] += 1
            return
        lat_ns = int((t_end - t_start) * 1e9)
        sec["ok"] += 1
        sec["hist"].record(lat_ns)
        if degraded:
            sec["degraded"] += 1
        if measured:
            self.hist.record(lat_ns)
            if degraded:
                self.degraded += 1


class Run:
    def __init__(self, spec: dict):
        self.spec = spec
        self.clock = time.perf_counter
        wall_wait = max(0.0, spec["start_at"] - time.time())
        self.t0 = self.clock() + wall_wait
        self.measure_from = self.t0 + spec["warmup_s"]
        self.end = self.measure_from + spec["duration_s"]
        self.rec = Recorder(self.t0, self.measure_from, self.end, spec["batch"])
        spike = spec.get("spike") or {}
        self.spike_from = self.measure_from + spike["at_s"] if spike else float("inf")
        self.spike_until = self.spike_from + spike.get("for_s", 0.0) if spike else float("inf")
        self.spike_factor = float(spike.get("factor", 1.0)) if spike else 1.0
        drift = spec.get("drift") or {}
        self.drift_from = self.measure_from + drift["at_s"] if drift else float("inf")

    def request(self, k: int) -> Any:
        """Worker ``k``'s request, or with ``distinct`` requests the next of them in turn."""
        reqs = self.drifted if self.clock() >= self.drift_from else self.reqs
        if self.rotate:
            self.sent += 1
            return reqs[self.sent % len(reqs)]
        return reqs[k % len(reqs)]

    def stopped(self) -> bool:
        return self.clock() >= self.end or self.rec.total >= self.spec["max_requests"]

    # -- closed loop ------------------------------------------------------------------------
    async def closed_unary(self, k: int, active: tuple[float, float], w: Wire) -> None:
        timeout_s = self.spec["timeout_s"]
        while not self.stopped():
            now = self.clock()
            if now < active[0] or now >= active[1]:
                await asyncio.sleep(max(0.0, min(active[0], self.end) - now) if now < active[0] else
                                    max(0.0, self.end - now))
                continue
            t0 = self.clock()
            try:
                answer = await w.unary(self.request(k), timeout_s)
            except grpc.aio.AioRpcError as exc:
                self.rec.done(t0, self.clock(), exc.code().name, False)
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    await asyncio.sleep(0.05)
                continue
            _, degraded, err = w.read_answer(answer)
            self.rec.done(t0, self.clock(), err, degraded)

    async def closed_stream(self, k: int, active: tuple[float, float], w: Wire) -> None:
        timeout_s = self.spec["timeout_s"]
        while not self.stopped():
            now = self.clock()
            if now < active[0] or now >= active[1]:
                await asyncio.sleep(max(0.0, min(active[0], self.end) - now) if now < active[0] else
                                    max(0.0, self.end - now))
                continue
            call = w.open_stream()
            try:
                while not self.stopped() and self.clock() < active[1]:
                    request = self.request(k)
                    t0 = self.clock()
                    await call.write(request)
                    answer = await asyncio.wait_for(call.read(), timeout_s)
                    t1 = self.clock()
                    if answer is grpc.aio.EOF:
                        self.rec.done(t0, t1, "STREAM_CLOSED", False)
                        break
                    rid, degraded, err = w.read_answer(answer)
                    if err is None and rid != (request.request_id if w.method == "stream" else request.id):
                        err = "WRONG_REQUEST_ID"
                    self.rec.done(t0, t1, err, degraded)
            except grpc.aio.AioRpcError as exc:
                self.rec.done(self.clock(), self.clock(), exc.code().name, False)
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    await asyncio.sleep(0.05)
            except asyncio.TimeoutError:
                self.rec.done(self.clock(), self.clock(), "DEADLINE_EXCEEDED", False)
            finally:
                await _close(call)

    # -- open loop --------------------------------------------------------------------------
    async def open_loop(self) -> None:
        spec, w = self.spec, self.wire
        rate = float(spec["rate"])
        rng = random.Random(spec["seed"])
        poisson = spec.get("arrival", "constant") == "poisson"
        outstanding: set[asyncio.Task] = set()
        pending: dict[str, float] = {}
        queues: list[asyncio.Queue] = []
        stream_tasks: list[asyncio.Task] = []
        if w.method in ("stream", "stream_infer"):
            for s in range(max(1, spec.get("streams", 4))):
                q: asyncio.Queue = asyncio.Queue()
                queues.append(q)
                stream_tasks.append(asyncio.create_task(self._open_stream(q, pending)))
        t_next = self.t0
        n = 0
        while not self.stopped():
            factor = self.spike_factor if self.spike_from <= t_next < self.spike_until else 1.0
            gap = 1.0 / (rate * factor)
            t_next += rng.expovariate(1.0 / gap) if poisson else gap
            delay = t_next - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.stopped():
                break
            n += 1
            if len(outstanding) + len(pending) >= spec["max_outstanding"]:
                self.rec.done(t_next, self.clock(), "CLIENT_OVERLOADED", False)
                continue
            if queues:
                queues[n % len(queues)].put_nowait((f"o{n}", t_next, n))
            else:
                task = asyncio.create_task(self._one(n, t_next))
                outstanding.add(task)
                task.add_done_callback(outstanding.discard)
        drain_until = self.clock() + spec["timeout_s"]
        while (outstanding or pending) and self.clock() < drain_until:
            await asyncio.sleep(0.01)
        for task in list(outstanding) + stream_tasks:
            task.cancel()
        await asyncio.gather(*outstanding, *stream_tasks, return_exceptions=True)

    async def _one(self, k: int, t_sched: float) -> None:
        try:
            answer = await self.wire.unary(self.request(k), self.spec["timeout_s"])
        except grpc.aio.AioRpcError as exc:
            self.rec.done(t_sched, self.clock(), exc.code().name, False)
            return
        _, degraded, err = self.wire.read_answer(answer)
        self.rec.done(t_sched, self.clock(), err, degraded)

    async def _open_stream(self, queue: asyncio.Queue, pending: dict[str, float]) -> None:
        w = self.wire
        while True:
            call = w.open_stream()
            mine: set[str] = set()

            async def reader() -> None:
                while True:
                    answer = await call.read()
                    if answer is grpc.aio.EOF:
                        return
                    rid, degraded, err = w.read_answer(answer)
                    t_sched = pending.pop(rid, None)
                    mine.discard(rid)
                    if t_sched is not None:
                        self.rec.done(t_sched, self.clock(), err, degraded)

            read_task = asyncio.create_task(reader())
            try:
                while True:
                    rid, t_sched, k = await queue.get()
                    request = self.request(k)
                    w.set_id(request, rid)
                    pending[rid] = t_sched
                    mine.add(rid)
                    await call.write(request)
            except grpc.aio.AioRpcError as exc:
                for rid in mine:
                    if pending.pop(rid, None) is not None:
                        self.rec.done(self.clock(), self.clock(), exc.code().name, False)
            finally:
                read_task.cancel()
                await asyncio.gather(read_task, return_exceptions=True)
                await _close(call)

    # -- progress ---------------------------------------------------------------------------
    async def progress(self) -> None:
        s = 0
        while True:
            await asyncio.sleep(max(0.0, self.t0 + s + 1 - self.clock()))
            sec = self.rec.seconds.get(s)
            line = {"sec": s, "ok": 0, "errors": 0, "degraded": 0, "hist": None}
            if sec is not None:
                line.update(ok=sec["ok"], errors=sec["errors"], degraded=sec["degraded"], hist=sec["hist"].to_json())
            print(json.dumps({"progress": line}), flush=True)
            s += 1

    async def main(self) -> dict:
        spec = self.spec
        check_loopback(spec["address"])
        channels = [grpc.aio.insecure_channel(spec["address"], options=GRPC_OPTIONS + [("grpc.channel_id", i)])
                    for i in range(max(1, spec.get("channels", 1)))]
        try:
            self.wire = Wire(spec["method"], channels[0], spec["model"])
            await self.wire.metadata()
            distinct = int(spec.get("distinct") or 0)
            self.rotate, self.sent = distinct > 0, 0
            n_reqs = max(1, distinct or spec.get("concurrency", 1))
            self.reqs = self.wire.requests(spec["batch"], n_reqs, spec["seed"])
            self.drifted = (self.wire.requests(spec["batch"], n_reqs, spec["seed"], spec["drift"]["shift"])
                            if spec.get("drift") else self.reqs)
            wires = [self.wire] + [Wire(spec["method"], ch, spec["model"]) for ch in channels[1:]]
            for extra in wires[1:]:
                extra.inputs, extra.oip_dtypes = self.wire.inputs, getattr(self.wire, "oip_dtypes", {})
            await asyncio.sleep(max(0.0, self.t0 - self.clock()))
            reporter = asyncio.create_task(self.progress())
            if spec["mode"] == "open":
                await self.open_loop()
            else:
                base = spec["concurrency"]
                extra_n = int(round(base * (self.spike_factor - 1))) if spec.get("spike") else 0
                windows = [(0.0, float("inf"))] * base + [(self.spike_from, self.spike_until)] * extra_n
                fn = self.closed_stream if spec["method"] in ("stream", "stream_infer") else self.closed_unary
                tasks = [asyncio.create_task(fn(k, active, wires[k % len(wires)]))
                         for k, active in enumerate(windows)]
                done, pend = await asyncio.wait(tasks, timeout=self.end - self.clock() + spec["timeout_s"] + 2)
                for t in pend:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for t in done:
                    if not t.cancelled() and t.exception() is not None:
                        self.rec.errors[f"CLIENT_{type(t.exception()).__name__}"] += 1
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
        finally:
            for ch in channels:
                await ch.close()
        r = self.rec
        return {"hist": r.hist.to_json(), "errors": dict(r.errors), "degraded": r.degraded,
                "duration_s": min(self.clock(), self.end) - self.measure_from,
                "seconds": {s: {"ok": v["ok"], "errors": v["errors"], "degraded": v["degraded"],
                                "hist": v["hist"].to_json()} for s, v in sorted(r.seconds.items())}}


async def _close(call: Any) -> None:
    try:
        await asyncio.wait_for(call.done_writing(), 1.0)
    except Exception:  # noqa: BLE001 - already failed or closed: nothing left to do
        pass
    call.cancel()


def main() -> int:
    spec = json.loads(sys.argv[1])
    try:
        final = asyncio.run(Run(spec).main())
    except NoSuchService as exc:
        print(json.dumps({"final": {"skipped": str(exc)}}), flush=True)
        return 0
    print(json.dumps({"final": final}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
