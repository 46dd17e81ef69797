"""Plain Python/numpy reference twins of the native kernels (``gateway.kernels``) and one
parity suite per kernel that runs the same cases against native and twin.

A twin has the kernel's public API (constructor arguments, methods, attributes, the keys
and types of ``state()`` / ``snapshot()``) and is written to be obviously correct, not
fast: dicts and Python loops, one value at a time, in the order the documentation gives.
"""
