"""Which CPUs run the models (``execution_cpus``) and which run the rest of the server.

On a machine where the front end (gRPC, the event loop, telemetry) and the models share a few
cores, the scheduler puts the event loop beside a compute-bound session and the model's
thread gets time-sliced: its batches take longer than they would alone. With
``execution_cpus`` set, the threads that call onnxruntime (the ``onnx`` pool), the threads that
create sessions (so a session's own intra-op threads start there too) run on those CPUs only,
and every other thread of the process, present and future, on the CPUs left (Triton's host
policy ``cpu-cores`` does the same for model instances). Models fast enough to run on the
event loop (``inline_execution_below_us``) run with the front end, by design.

Linux only (a thread's affinity is its own there: ``os.sched_setaffinity`` on a thread id).
:func:`plan` splits the process's CPUs (the settings check the CPUs named); :func:`apply` moves the
process's threads; :func:`pin_execution` and :func:`pin_front` are the pools' initializers.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from ..config.settings import cpu_ranges

log = logging.getLogger("gateway.runtime")


@dataclass(frozen=True)
class CpuPlan:
    execution: frozenset[int]   # the threads that run and create sessions
    front: frozenset[int]       # every other thread


_active: CpuPlan | None = None


def plan(execution_cpus: list[int], allowed: set[int] | None = None) -> CpuPlan:
    """The split for ``execution_cpus`` (checked by the settings: Linux, CPUs this process may
    use) among ``allowed``, by default the process's CPUs. When they are all of them, the front
    end keeps them too (nothing is set apart)."""
    if allowed is None:
        allowed = os.sched_getaffinity(0)
    execution = frozenset(execution_cpus)
    front = frozenset(allowed) - execution
    return CpuPlan(execution, front or frozenset(allowed))


def apply(p: CpuPlan) -> None:
    """Move every thread this process has now to ``p.front`` (the threads started later from
    them inherit it); the pools' initializers move theirs."""
    global _active
    _active = p
    _move_all(p.front)
    log.info("execution threads on CPUs %s, the rest of the server on %s",
             cpu_ranges(p.execution), cpu_ranges(p.front),
             extra={"event": "runtime.cpu_affinity", "execution_cpus": sorted(p.execution),
                    "front_cpus": sorted(p.front)})


def restore(p: CpuPlan) -> None:
    """Every thread back to all of the plan's CPUs, the plan forgotten (a server stopped in a
    process that goes on: tests)."""
    global _active
    _active = None
    _move_all(p.execution | p.front)


def _move_all(cpus: frozenset[int]) -> None:
    for tid in map(int, os.listdir("/proc/self/task")):
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:   # (a thread that ended meanwhile)
            pass


def _pin(cpus: frozenset[int]) -> None:
    try:
        os.sched_setaffinity(threading.get_native_id(), cpus)
    except OSError as exc:
        log.warning("cannot set this thread's CPUs to %s: %s", cpu_ranges(cpus), exc,
                    extra={"event": "runtime.cpu_affinity_failed"})


def pin_execution() -> None:
    """A thread that runs or creates sessions: to the execution CPUs (nothing without a plan)."""
    if _active is not None:
        _pin(_active.execution)


def pin_front() -> None:
    """A background thread started from an execution thread: back to the front end's CPUs."""
    if _active is not None:
        _pin(_active.front)
