"""The table of protocol calls requests arrive on.

Each protocol adapter registers its calls when it starts and stamps the index into every
request it builds; the index travels in the request's telemetry record (one byte), and the
exporters name the call from this table. The core never knows which protocols exist.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

MAX_CALLS = 256  # the index is one byte in the ring record


@dataclass(frozen=True, slots=True)
class RpcCall:
    """One call as the OpenTelemetry RPC conventions name it."""

    system: str   # rpc.system: "grpc"
    service: str  # rpc.service: "gateway.v1.Gateway"
    method: str   # rpc.method: "Predict"


class CallTable:
    """Append-only: an index, once handed out, names the same call for the table's lifetime."""

    def __init__(self) -> None:
        self._calls: list[RpcCall] = []
        self._index: dict[RpcCall, int] = {}
        self._lock = threading.Lock()

    def register(self, system: str, service: str, method: str) -> int:
        """The call's index (registering it if new; the same call always gets the same index)."""
        call = RpcCall(system, service, method)
        with self._lock:
            found = self._index.get(call)
            if found is not None:
                return found
            if len(self._calls) >= MAX_CALLS:
                raise ValueError(f"more than {MAX_CALLS} protocol calls registered")
            self._calls.append(call)
            self._index[call] = len(self._calls) - 1
            return len(self._calls) - 1

    def get(self, index: int) -> RpcCall | None:
        calls = self._calls
        return calls[index] if 0 <= index < len(calls) else None

    def __len__(self) -> int:
        return len(self._calls)
