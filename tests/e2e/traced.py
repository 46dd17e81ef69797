"""A classifier request with or without a W3C ``traceparent`` (shared by the export tests)."""
from __future__ import annotations

import numpy as np

from gateway._proto import gateway_pb2 as pb
from gateway.client import from_numpy

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


def predict(gw, traceparent=None):
    x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    md = (("traceparent", traceparent),) if traceparent else None
    return gw.stub.Predict(pb.PredictRequest(model="classifier", inputs=[from_numpy("features", x)]),
                           metadata=md, timeout=10)
