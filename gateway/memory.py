"""Process memory: glibc's allocator set up so that large freed buffers go back to the system,
and a background pass that hands back what large requests left behind.

glibc serves an allocation of at least its mmap threshold with a mapping of its own, unmapped
when freed. The threshold starts at 128 KiB but is dynamic: each time such a mapping is freed
the threshold rises to its size (up to 32 MiB). After one burst of large requests, buffers of
up to 32 MiB (request bytes, decoded tensors, batches, outputs) come from the heaps instead,
and a heap only returns memory from its top: the freed middle stays resident (bench/memory.py
and bench/RESULTS.md measure it). Setting the threshold with ``mallopt`` turns the adjustment
off; blocks below it are still reused from the heaps (no system call per small allocation).

What the threshold cannot return: gRPC receives a message into many small buffers, so a burst
of large requests leaves their freed space scattered through the heaps (only ``malloc_trim``
gives that back), and memory held in reference cycles waits for the cyclic garbage collector's
next full pass, which may be long in coming (a request refused with ``context.abort`` stayed in
one of grpc.aio's: the gRPC adapter sets the status instead). :class:`MemoryReturn` trims and
collects after large requests only, off the request path.

What no pass returns while a connection that carried large messages stays open: gRPC's threads
allocate small blocks of their own among the buffers a burst was received into, and the pages
they sit on stay resident (5-50 MB after twenty 60 MB requests over four connections, not
growing with repeated bursts; freed when those connections close).
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("gateway.server")

# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MAX_MMAP_THRESHOLD_BYTES = 32 << 20  # glibc refuses more on 64-bit (HEAP_MAX_SIZE / 2)


@functools.cache  # one handle: each CDLL made leaves ctypes' reference cycles to the collector
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # musl and others have no gnu_get_libc_version, and their mallopt (if any) means other things
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc


def set_mmap_threshold(threshold_bytes: int) -> str | None:
    """Fix glibc's mmap threshold at ``threshold_bytes`` and its trim threshold at twice that
    (the ratio glibc's own adjustment keeps). Returns the glibc version it was set on, or None
    where the C library is not glibc (nothing changed)."""
    if not 0 < threshold_bytes <= MAX_MMAP_THRESHOLD_BYTES:
        raise ValueError(f"mmap threshold must be in (0, {MAX_MMAP_THRESHOLD_BYTES}] bytes, got {threshold_bytes}")
    libc = _glibc()
    if libc is None:
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    if not libc.mallopt(_M_MMAP_THRESHOLD, threshold_bytes) or \
            not libc.mallopt(_M_TRIM_THRESHOLD, 2 * threshold_bytes):
        raise OSError(f"glibc mallopt refused an mmap threshold of {threshold_bytes} bytes")
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    return "glibc " + libc.gnu_get_libc_version().decode()


def malloc_trim() -> bool:
    """Give free heap memory back to the system (glibc); False where there is no such call."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    libc.malloc_trim(0)  # (ctypes releases the GIL for the call)
    return True


class MemoryReturn:
    """Passes that hand back what large requests left: every ``interval_s`` while they are being
    answered (``answered_bytes``, a monotonic count of their payload bytes: the data plane's
    ``large_payload_bytes``), and four more once they stop (:data:`QUIET_AT`: 0.25, 0.5, 2 and
    8 s after), each trimming the heaps on a worker thread. Those four also collect reference
    cycles, and so do passes within :data:`FAILED_WINDOW_S` of a large request failing
    (``failed_bytes``: the data plane's ``large_failed_bytes``: a failed call's frames are
    the likeliest to sit in a cycle), at most every ``collect_every_s``.

    Small requests never cause a pass. A trim takes well under 1 ms when there is little to give
    back (~20 ms after a burst of twenty 60 MB requests) and does not hold the GIL; a collection
    runs on the event loop: 17-50 ms with the demo models loaded on this project's 2-core box."""

    # Passes after the last large answer, in intervals since it: what is freed late (a failed
    # call's cycle is unreachable only once gRPC has finished with the call) is returned too.
    QUIET_AT = (1, 2, 8, 32)
    FAILED_WINDOW_S = 10.0  # how long after a large request failed passes collect (each collect_every_s)

    def __init__(self, answered_bytes: Callable[[], int], failed_bytes: Callable[[], int], *,
                 interval_s: float = 0.25, collect_every_s: float = 1.0, trim: bool = True) -> None:
        self._answered = answered_bytes
        self._failed = failed_bytes
        self.interval_s = interval_s
        self.collect_every_s = collect_every_s
        self._trim = trim
        self._seen = (answered_bytes(), failed_bytes())
        self._idle = self.QUIET_AT[-1]  # intervals since the last large answer (none pending at start)
        self._collected_at = self._failed_at = -float("inf")
        self.passes = 0
        self.collections = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.step()

    async def step(self) -> bool:
        """One interval's decision (and pass, when due); True when a pass ran."""
        now = (self._answered(), self._failed())
        if now != self._seen:
            t = time.monotonic()
            if now[1] != self._seen[1]:
                self._failed_at = t
            # a failed call's cycle may become unreachable well after it was counted: keep
            # collecting for a while after failures, not only in the interval that saw them
            collect = t - self._failed_at <= self.FAILED_WINDOW_S and t - self._collected_at >= self.collect_every_s
            self._seen, self._idle = now, 0
        elif self._idle < self.QUIET_AT[-1]:
            self._idle += 1
            if self._idle not in self.QUIET_AT:
                return False
            collect = True
        else:
            return False
        began = time.perf_counter()
        freed = 0
        if collect:
            freed = gc.collect()
            self._collected_at = time.monotonic()
            self.collections += 1
        collected = time.perf_counter()
        if self._trim:
            await asyncio.get_running_loop().run_in_executor(None, malloc_trim)
        self.passes += 1
        log.debug("memory return: %d objects collected in %.1f ms, heaps trimmed in %.1f ms", freed,
                  (collected - began) * 1e3, (time.perf_counter() - collected) * 1e3,
                  extra={"event": "server.memory_return"})
        return True
