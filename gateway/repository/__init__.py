"""The model repository on disk: discovery, loading, hot reload."""
from .manager import RepositoryManager
from .scanner import scan

__all__ = ["RepositoryManager", "scan"]
