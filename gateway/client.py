"""A small synchronous Python client for gateway.v1 (used by the CLI; handy in scripts)."""
from __future__ import annotations

import grpc
import numpy as np

from ._proto import gateway_pb2 as pb
from ._proto import gateway_pb2_grpc as pb_grpc
from .adapters.grpc_v1.converters import encode_tensor
from .adapters.grpc_v1.dtypes import WIRE_TO_NUMPY


def to_numpy_outputs(msg: pb.PredictResponse) -> dict[str, np.ndarray]:
    """The outputs of a response as numpy arrays."""
    return {t.name: np.frombuffer(t.data, dtype=WIRE_TO_NUMPY[t.dtype]).reshape(tuple(t.shape))
            for t in msg.outputs}


def from_numpy(name: str, array: np.ndarray) -> pb.Tensor:
    """A numpy array as a request tensor."""
    return encode_tensor(name, array)


class GatewayClient:
    def __init__(self, address: str = "127.0.0.1:8001", *, max_message_bytes: int = 64 * 1024 * 1024):
        self.channel = grpc.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes)])
        self.stub = pb_grpc.GatewayStub(self.channel)
        self.admin = pb_grpc.AdminStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    @staticmethod
    def token_metadata(token: str) -> tuple[tuple[str, str], ...]:
        """The metadata admin calls carry (``gateway.v1.Admin``, repository load/unload)."""
        return (("authorization", f"Bearer {token}"),)

    def __enter__(self) -> "GatewayClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def models(self, timeout_s: float = 5.0) -> list[pb.ModelSummary]:
        return list(self.stub.ListModels(pb.ListModelsRequest(), timeout=timeout_s).models)

    def metadata(self, model: str, version: str = "", timeout_s: float = 5.0) -> pb.ModelMetadata:
        return self.stub.GetModel(pb.GetModelRequest(name=model, version=version), timeout=timeout_s)

    def predict(self, model: str, inputs: dict[str, np.ndarray], *, version: str = "",
                timeout_s: float = 30.0) -> tuple[pb.PredictResponse, dict[str, np.ndarray]]:
        request = pb.PredictRequest(model=model, version=version,
                                    inputs=[from_numpy(k, v) for k, v in inputs.items()])
        response = self.stub.Predict(request, timeout=timeout_s)
        return response, to_numpy_outputs(response)

    def stats(self, model: str = "", window_s: float = 10.0, timeout_s: float = 5.0) -> pb.StatsResponse:
        return self.stub.GetStats(pb.GetStatsRequest(model=model, window_s=window_s), timeout=timeout_s)

    def alerts(self, model: str = "", timeout_s: float = 5.0) -> pb.ListAlertsResponse:
        """The alerts firing now, the most severe first."""
        return self.stub.ListAlerts(pb.ListAlertsRequest(model=model), timeout=timeout_s)

    def history(self, model: str = "", limit: int = 100, timeout_s: float = 5.0) -> pb.ModelHistoryResponse:
        """The newest ``limit`` version-history events (of ``model``), newest first."""
        return self.stub.ModelHistory(pb.ModelHistoryRequest(model=model, limit=limit), timeout=timeout_s)

    def feedback(self, labels: list[pb.Label], timeout_s: float = 30.0) -> pb.FeedbackResponse:
        """Send delayed labels (at most 10000 per call; see :meth:`feedback_all` for more)."""
        return self.stub.Feedback(pb.FeedbackRequest(labels=labels), timeout=timeout_s)

    def feedback_all(self, labels: list[pb.Label], *, per_call: int = 10_000,
                     timeout_s: float = 30.0) -> pb.FeedbackResponse:
        """Send any number of labels, ``per_call`` at a time; the counts summed over the calls."""
        total = pb.FeedbackResponse()
        for start in range(0, len(labels), per_call):
            reply = self.feedback(labels[start:start + per_call], timeout_s)
            total.accepted += reply.accepted
            total.unknown += reply.unknown
            total.late += reply.late
            total.duplicate += reply.duplicate
            total.invalid += reply.invalid
        return total
