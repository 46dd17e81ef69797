"""A gRPC inference gateway for ONNX models with native telemetry and fallback policies."""

__version__ = "0.1.0"
