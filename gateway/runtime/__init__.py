"""onnxruntime sessions: provider choice, metadata and execution."""
from .session import ModelLoadError, OnnxModel

__all__ = ["ModelLoadError", "OnnxModel"]
