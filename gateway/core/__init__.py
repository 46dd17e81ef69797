"""The protocol-independent core: validation → routing → policy → batching → runtime → fallback.

gRPC (and later Open Inference Protocol) servicers convert wire messages into
:class:`InferRequest` and call :meth:`DataPlane.infer`; nothing here imports grpc.
"""
from .errors import GatewayError, Status
from .types import InferRequest, InferResponse, TensorSpec

__all__ = ["GatewayError", "Status", "InferRequest", "InferResponse", "TensorSpec"]
