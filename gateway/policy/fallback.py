"""The fallback chain's own answers: the last-good-response cache and static defaults.

Model steps are run by :mod:`.runner` (they go through that model's own admission,
breaker and guard); this module holds the parts that answer without a model.
"""
from __future__ import annotations

import collections
import hashlib
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import CacheSettings

if TYPE_CHECKING:
    from ..api import TensorSpec


def input_key(inputs: Mapping[str, np.ndarray], output_names: tuple[str, ...]) -> bytes:
    """Hash of everything that determines an answer: names, dtypes, shapes and bytes of the inputs."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(inputs):
        array = inputs[name]
        h.update(name.encode())
        h.update(array.dtype.str.encode())
        h.update(repr(array.shape).encode())
        h.update(np.ascontiguousarray(array).data.cast("B"))
    for name in output_names:
        h.update(b"\0" + name.encode())
    return h.digest()


class ResponseCache:
    """Bounded LRU of the last good outputs per input hash. Event loop only."""

    def __init__(self, settings: CacheSettings, clock=time.monotonic):
        self.max_entries = settings.max_entries
        self.max_age_s = settings.max_age_s
        self._clock = clock
        self._entries: collections.OrderedDict[bytes, tuple[float, dict[str, np.ndarray], Any]] = \
            collections.OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: bytes, outputs: dict[str, np.ndarray], extras: Any = None) -> None:
        entries = self._entries
        entries[key] = (self._clock(), outputs, extras)
        entries.move_to_end(key)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)

    def get(self, key: bytes) -> tuple[dict[str, np.ndarray], Any] | None:
        found = self._entries.get(key)
        if found is None or (self.max_age_s is not None and self._clock() - found[0] > self.max_age_s):
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return found[1], found[2]


class StaticAnswer:
    """A configured per-row value for each output, repeated for every row of the request."""

    def __init__(self, values: Mapping[str, object], output_specs: Mapping[str, TensorSpec], batchable: bool,
                 served_by: str):
        self.rows: dict[str, np.ndarray] = {}
        self.batchable = batchable
        for name, value in values.items():
            spec = output_specs.get(name)
            if spec is None:
                raise ValueError(f"model {served_by}: static fallback names output {name!r}, but the outputs "
                                 f"are {', '.join(repr(n) for n in output_specs)}")
            row = np.asarray(value, dtype=spec.dtype)
            want = spec.shape[1:] if batchable else spec.shape
            if len(want) != row.ndim or any(w >= 0 and w != h for w, h in zip(want, row.shape)):
                raise ValueError(f"model {served_by}: static fallback for {name!r} has shape {list(row.shape)}; "
                                 f"one {'row' if batchable else 'answer'} of that output has shape "
                                 f"{[d if d >= 0 else 'any' for d in want]}")
            self.rows[name] = row

    def outputs(self, rows: int, output_names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
        """None when the request asks for an output the static answer doesn't have."""
        names = output_names or tuple(self.rows)
        if any(n not in self.rows for n in names):
            return None
        if not self.batchable:
            return {n: self.rows[n].copy() for n in names}
        return {n: np.repeat(self.rows[n][None, ...], rows, axis=0) for n in names}
