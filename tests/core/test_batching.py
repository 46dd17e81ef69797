"""The dynamic batcher on a real event loop (``asyncio.run``) over real onnxruntime sessions."""
from __future__ import annotations

import asyncio
import logging

import numpy as np
from onnx import TensorProto, helper

from gateway.telemetry import Telemetry
from tests.core.serving import Serving, request, rows


def identity(width="n"):
    """features[batch, width] -> out[batch, width], the same values."""
    return helper.make_graph(
        [helper.make_node("Identity", ["features"], ["out"])], "identity",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", width])])


def test_a_failing_batch_observer_never_changes_the_answer(tmp_path, caplog):
    """Telemetry's input statistics take the width of the first batch of a dynamic-width input;
    a batch of another width makes them raise. The model ran: its answer goes out regardless."""
    telemetry = Telemetry()

    async def main():
        s = Serving(tmp_path, telemetry=telemetry)
        try:
            s.add("id", identity())
            for x in (rows([1, 2, 3]), rows([1, 2, 3, 4]), rows([5, 6, 7, 8, 9])):
                response = await s.dataplane.infer(request("id", x))
                np.testing.assert_array_equal(response.outputs["out"], x)
        finally:
            await s.close()

    with caplog.at_level(logging.ERROR, logger="gateway.batching"):
        asyncio.run(main())
    failed = [r for r in caplog.records if "batch observer" in r.getMessage()]
    assert len(failed) == 1 and "id@1" in failed[0].getMessage()   # logged once, not per batch
    (stats,) = [f for f in telemetry.feature_stats() if f.model == "id"]
    assert stats.count.tolist() == [1, 1, 1]                        # the first width's statistics stand
