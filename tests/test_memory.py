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


_THRESHOLD_CHECK = """
import ctypes, sys
from gateway.memory import malloc_trim, set_mmap_threshold
sys.path.insert(0, {tests!r})
from test_memory import _libc
assert set_mmap_threshold(1 << 20).startswith("glibc ")
libc = _libc()
libc.free(libc.malloc(8 << 20))
mapped = libc.mallinfo2().hblkhd
block = libc.malloc(4 << 20)
grown = libc.mallinfo2().hblkhd - mapped
libc.free(block)
print(grown, libc.mallinfo2().hblkhd - mapped, malloc_trim())
"""


@glibc
def test_a_fixed_threshold_keeps_large_blocks_mapped_after_a_larger_one_was_freed():
    """glibc's dynamic threshold would rise to 8 MiB when the first block is freed and serve the
    4 MiB one from the heap (no new mapping), where it stays resident once freed. Checked in a
    fresh process: in this one, after the other tests, a free chunk of 4 MiB or more left in
    the heap would serve the block whatever the threshold (glibc maps only what its free
    chunks and the heap's top cannot hold)."""
    import pathlib
    import subprocess
    import sys

    code = _THRESHOLD_CHECK.format(tests=str(pathlib.Path(__file__).parent))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    grown, left, trimmed = out.stdout.split()
    assert int(grown) >= 4 << 20 and int(left) == 0 and trimmed == "True", out.stdout   # mapped, then unmapped


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


def test_passes_follow_large_requests_and_collect_once_they_stop():
    """Driven one interval at a time (``step``), as ``run`` does after each sleep."""
    answered, failed = [0], [0]

    async def main():
        memory = MemoryReturn(lambda: answered[0], lambda: failed[0])
        gc.disable()                                   # only a pass may collect the cycle
        try:
            assert [await memory.step() for _ in range(3)] == [False] * 3   # nothing large: no pass
            kept = _cycle()
            for _ in range(5):                         # large requests answered OK in every interval
                answered[0] += 1 << 20
                assert await memory.step()
            assert kept() is not None and memory.collections == 0   # trims only while they go on
            quiet = [await memory.step() for _ in range(2 * MemoryReturn.QUIET_AT[-1])]
            assert [i + 1 for i, ran in enumerate(quiet) if ran] == list(MemoryReturn.QUIET_AT)
            assert kept() is None and memory.collections == len(MemoryReturn.QUIET_AT)
            assert memory.passes == 5 + len(MemoryReturn.QUIET_AT)
        finally:
            gc.enable()
    asyncio.run(main())


def test_while_large_requests_fail_passes_collect_at_most_every_collect_every_s():
    answered, failed = [0], [0]

    async def main():
        memory = MemoryReturn(lambda: answered[0], lambda: failed[0], collect_every_s=3600)
        gc.disable()
        try:
            kept = _cycle()
            answered[0] += 1 << 20
            failed[0] += 1 << 20                       # a large request refused
            assert await memory.step()
            assert kept() is None and memory.collections == 1      # collected while they go on
            kept = _cycle()
            for _ in range(3):                         # more refused, within collect_every_s
                answered[0] += 1 << 20
                failed[0] += 1 << 20
                assert await memory.step()
            assert kept() is not None and memory.collections == 1
            memory.collect_every_s = 0
            answered[0] += 1 << 20
            failed[0] += 1 << 20
            assert await memory.step()
            assert kept() is None and memory.collections == 2
            answered[0] += 1 << 20                     # answered OK, soon after the failures
            assert await memory.step()
            assert memory.collections == 3
            memory.FAILED_WINDOW_S = -1.0              # long after them: OK answers only trim
            answered[0] += 1 << 20
            assert await memory.step()
            assert memory.collections == 3
        finally:
            gc.enable()
    asyncio.run(main())


def test_run_steps_every_interval():
    answered = [0]

    async def main():
        memory = MemoryReturn(lambda: answered[0], lambda: 0, interval_s=0.001, trim=False)
        task = asyncio.create_task(memory.run())
        try:
            answered[0] = 1 << 20
            for _ in range(1000):                      # bounded: 1000 loop turns of 1 ms at most
                if memory.passes == 1 + len(MemoryReturn.QUIET_AT):
                    break
                await asyncio.sleep(0.001)
            assert memory.passes == 1 + len(MemoryReturn.QUIET_AT)
        finally:
            task.cancel()
    asyncio.run(main())
