"""The bit-level bucket mapping equals the frexp/log reference (twin) everywhere:
normal and subnormal values, exact powers of two, their neighbours, every scale."""
import math

import numpy as np
import pytest

from gateway.kernels import ExpHistogram
from tests.telemetry.twin import map_index


def _values():
    rng = np.random.default_rng(11)
    bits = rng.integers(1, 0x7FF0000000000000, 3000, dtype=np.int64)   # all finite > 0
    vals = bits.view(np.float64).tolist()
    for e in (-1074, -1030, -1022, -1, 0, 1, 52, 1000, 1023):
        p = math.ldexp(1.0, e)
        vals += [p, math.nextafter(p, 0.0), math.nextafter(p, math.inf)]
    vals += [5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1.0 + 2 ** -52]
    return [v for v in vals if 0.0 < v < math.inf]


@pytest.mark.parametrize("scale", [-10, -3, -1, 0, 1, 2, 3, 8, 14, 20])
def test_native_index_matches_reference(scale):
    for v in _values():
        h = ExpHistogram(max_buckets=2, max_scale=scale)
        h.add(v)
        assert h.scale == scale
        assert h.offset == map_index(v, scale), v
