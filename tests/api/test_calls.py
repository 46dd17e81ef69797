"""The call table: one index per protocol call, append-only, at most 256 (one byte in the record)."""
from __future__ import annotations

import threading

import pytest

from gateway.api import CallTable, RpcCall
from gateway.api.calls import MAX_CALLS


def test_the_same_call_gets_the_same_index_and_a_new_one_the_next():
    table = CallTable()
    predict = table.register("grpc", "gateway.v1.Gateway", "Predict")
    stream = table.register("grpc", "gateway.v1.Gateway", "PredictStream")
    assert (predict, stream) == (0, 1)
    assert table.register("grpc", "gateway.v1.Gateway", "Predict") == 0
    assert table.register("http", "gateway.v1.Gateway", "Predict") == 2     # another system: another call
    assert len(table) == 3
    assert table.get(1) == RpcCall("grpc", "gateway.v1.Gateway", "PredictStream")
    assert table.get(3) is None and table.get(-1) is None


def test_indices_handed_out_keep_naming_their_call():
    table = CallTable()
    first = table.register("grpc", "S", "A")
    for i in range(10):
        table.register("grpc", "S", f"B{i}")
    assert table.get(first) == RpcCall("grpc", "S", "A") and table.register("grpc", "S", "A") == first


def test_at_most_256_calls_and_known_ones_still_resolve_at_the_limit():
    table = CallTable()
    assert MAX_CALLS == 256
    for i in range(MAX_CALLS):
        assert table.register("grpc", "S", f"M{i}") == i
    with pytest.raises(ValueError, match="more than 256 protocol calls registered"):
        table.register("grpc", "S", "one too many")
    assert table.register("grpc", "S", "M255") == 255 and len(table) == MAX_CALLS


def test_concurrent_registration_agrees_on_every_index():
    table = CallTable()
    results: list[list[int]] = []
    start = threading.Barrier(4)

    def register():
        start.wait()
        results.append([table.register("grpc", "S", f"M{i % 50}") for i in range(200)])

    threads = [threading.Thread(target=register) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(table) == 50 and all(r == results[0] for r in results)
    assert sorted(set(results[0])) == list(range(50))
    assert all(table.get(i).method == f"M{m}" for m, i in enumerate(results[0][:50]))
