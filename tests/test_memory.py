"""gateway.memory on this process's real C library: the fixed mmap threshold (a large block
freed goes back to the system, and the next large one is mapped again instead of coming from
the heap) and the memory return's passes (trims after large requests, collects cycles after
failed ones, nothing after small ones)."""
from __future__ import annotations

import asyncio
import ctypes
import gc
import platform
import weakref

import pytest

from gateway.memory import MAX_MMAP_THRESHOLD_BYTES, MemoryReturn, malloc_trim, set_mmap_threshold

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


def _libc():
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _Mallinfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    return libc


@glibc
def test_a_fixed_threshold_keeps_large_blocks_mapped_after_a_larger_one_was_freed():
    """glibc's dynamic threshold would rise to 8 MiB when the first block is freed and serve the
    4 MiB one from the heap (no new mapping), where it stays resident once freed."""
    assert set_mmap_threshold(1 << 20).startswith("glibc ")
    libc = _libc()
    libc.free(libc.malloc(8 << 20))
    mapped = libc.mallinfo2().hblkhd
    block = libc.malloc(4 << 20)
    try:
        assert libc.mallinfo2().hblkhd - mapped >= 4 << 20
    finally:
        libc.free(block)
    assert libc.mallinfo2().hblkhd == mapped                  # and unmapped when freed
    assert malloc_trim()


@pytest.mark.parametrize("threshold", [0, -1, MAX_MMAP_THRESHOLD_BYTES + 1])
def test_a_threshold_glibc_would_refuse_is_refused_first(threshold):
    with pytest.raises(ValueError, match="mmap threshold must be in"):
        set_mmap_threshold(threshold)


def _cycle() -> weakref.ref:
    class Node:
        pass
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_passes_follow_large_requests_and_collect_only_after_failed_ones():
    answered, failed = [0], [0]

    async def turns(n: int) -> None:
        for _ in range(n):
            await asyncio.sleep(0.005)

    async def main():
        memory = MemoryReturn(lambda: answered[0], lambda: failed[0], interval_s=0.001)
        task = asyncio.create_task(memory.run())
        gc.disable()                                   # only a pass may collect the cycle
        try:
            kept = _cycle()
            await turns(10)
            assert memory.passes == 0                  # nothing large answered: no pass at all
            answered[0] += 1 << 20                     # a large request answered OK
            for _ in range(200):
                if memory.passes == 2:
                    break
                await turns(1)
            await turns(10)
            assert memory.passes == 2                  # its pass and one more, then none
            assert kept() is not None                  # trims only: OK answers leave no cycles
            answered[0] += 1 << 20
            failed[0] += 1 << 20                       # a large request refused
            for _ in range(200):
                if kept() is None:
                    break
                await turns(1)
            assert kept() is None
        finally:
            gc.enable()
            task.cancel()
    asyncio.run(main())
