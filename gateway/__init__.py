"""A gRPC inference gateway for ONNX models with native telemetry and fallback policies."""

from . import _grpc_core

_grpc_core.apply()  # before anything imports grpc: see gateway/_grpc_core.py

from ._version import __version__  # noqa: E402  (after the line above, on purpose)

__all__ = ["__version__"]
