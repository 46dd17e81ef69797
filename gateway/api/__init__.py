"""The leaf package every layer shares: immutable request/response types, tensor specs, model
descriptions, status codes and the table of protocol calls. It imports nothing of the gateway."""
from .calls import CallTable, RpcCall
from .errors import GatewayError, Status, invalid, not_found
from .types import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    ModelSummary,
    TensorSpec,
    VersionState,
    dtype_name,
)

__all__ = ["CallTable", "GatewayError", "InferRequest", "InferResponse", "ModelMetadata", "ModelSummary",
           "RpcCall", "Status", "TensorSpec", "VersionState", "dtype_name", "invalid", "not_found"]
