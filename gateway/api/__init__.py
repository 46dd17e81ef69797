"""The leaf package every layer shares: immutable request/response types, tensor specs, model
descriptions, status codes, bounded echoes of client text (:mod:`.text`) and the table of
protocol calls. It imports nothing of the gateway."""
from .calls import CallTable, RpcCall
from .errors import GatewayError, Status, invalid, not_found
from .text import dims, quote
from .types import (
    BatchingInfo,
    InferRequest,
    InferResponse,
    ModelMetadata,
    ModelSummary,
    TensorSpec,
    VersionState,
    dtype_name,
)

__all__ = ["BatchingInfo", "CallTable", "GatewayError", "InferRequest", "InferResponse", "ModelMetadata", "ModelSummary",
           "RpcCall", "Status", "TensorSpec", "VersionState", "dims", "dtype_name", "invalid", "not_found",
           "quote"]
