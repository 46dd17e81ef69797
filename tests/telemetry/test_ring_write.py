"""RequestRing.write (positional-only fast path) stores every field as given."""
import math

import pytest

from gateway.kernels import RequestRing


def test_write_round_trip_all_fields():
    ring = RequestRing(4)
    big = 5_600_000_000_000_123                      # monotonic_ns-sized timestamps
    assert ring.write(7, big, big + 1, big + 2, big + 3, big + 4, big + 5, 32, 31, 14,
                      True, 3, 0.25, 1 << 40, 1)
    assert ring.write(2**32 - 1, 0, 0, 0, 0, 0, 0, 0, 0, -1, False, 65535, math.nan, 0, 255)
    r = ring.drain()
    assert r[0].tolist() == (big, big + 1, big + 2, big + 3, big + 4, big + 5, 1 << 40,
                             7, 32, 31, 14, 0.25, 3, 1, 1)
    assert r[1]["rpc"] == 255
    assert r[1]["model_id"] == 2**32 - 1 and r[1]["status_code"] == -1
    assert math.isnan(r[1]["confidence"]) and r[1]["fallback_code"] == 65535


def test_write_rejects_bad_arguments():
    ring = RequestRing(4)
    with pytest.raises(TypeError):
        ring.write(0, 0, 0, 0, 0, 0, 0, 1, 1, 0, False, 0, 0.5, 0)       # 14 arguments
    with pytest.raises(TypeError):
        ring.write(0, 0, 0, 0, 0, 0, 0, 1, 1, 0, False, 0, 0.5, 0, rpc=0)
    with pytest.raises(OverflowError):
        ring.write(-1, 0, 0, 0, 0, 0, 0, 1, 1, 0, False, 0, 0.5, 0, 0)   # uint32 model id
    with pytest.raises(OverflowError):
        ring.write(0, 0, 0, 0, 0, 0, 0, 1, 1, 0, False, 0, 0.5, 0, 256)  # one-byte rpc index
    assert ring.written == 0 and len(ring.drain()) == 0
