"""How Cython converts Python arguments to the C types of the kernels' signatures, so the
twins accept and reject the same arguments as the compiled kernels."""
from __future__ import annotations

import operator

import numpy as np


def c_int(value, bits: int, signed: bool) -> int:
    """A C integer argument: exact ints as they are, other numbers through ``__int__``
    (floats truncate toward zero, NaN -> ValueError, inf -> OverflowError), anything else
    (strings, objects with only ``__index__``) -> TypeError; out of range -> OverflowError."""
    if isinstance(value, int):
        n = int(value)
    elif isinstance(value, (str, bytes, bytearray)) or not hasattr(type(value), "__int__"):
        raise TypeError("an integer is required")
    else:
        n = int(value)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if n < lo:
        raise OverflowError("can't convert negative value" if not signed and n < 0
                            else "value too small to convert")
    if n > hi:
        raise OverflowError("value too large to convert")
    return n


def c_ssize(value) -> int:
    """A ``Py_ssize_t`` argument: ``__index__`` only (floats -> TypeError), 64-bit range."""
    n = operator.index(value)
    if not -(1 << 63) <= n < (1 << 63):
        raise OverflowError("Python int too large to convert to C ssize_t")
    return n


def c_double(value) -> float:
    """A C double argument (PyFloat_AsDouble): ``__float__`` or ``__index__``; no strings."""
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError(f"must be real number, not {type(value).__name__}")
    return float(value)


def c_float(value) -> np.float32:
    """A C float argument: the double rounded to float32 (overflow gives +/-inf)."""
    d = c_double(value)
    with np.errstate(over="ignore"):
        return np.float64(d).astype(np.float32)


def c_bint(value) -> bool:
    return bool(value)
