"""The bundled demo repository, generated with onnx.helper (no downloads)."""
from .models import DEMO_MODELS, demo_repository, write_demo_repository

__all__ = ["DEMO_MODELS", "demo_repository", "write_demo_repository"]
