"""A gRPC inference gateway for ONNX models with native telemetry and fallback policies."""

from ._version import __version__

__all__ = ["__version__"]
