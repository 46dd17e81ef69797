"""Reads ``<root>/<model>/<version>/model.onnx`` (+ optional ``<root>/<model>/config.yaml`` and
``<root>/<model>/<version>/profile.npz``, the version's reference profile)."""
from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

from ..config.profile import PROFILE_FILE

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.yaml"


def _fingerprint(path: pathlib.Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size)


@dataclass
class ModelDir:
    name: str
    path: pathlib.Path
    config_fingerprint: tuple[int, int] | None
    # version -> fingerprints of its model file and of its profile (None: no profile): a
    # changed profile reloads the version like a changed model
    versions: dict[str, tuple[tuple[int, int], tuple[int, int] | None]] = field(default_factory=dict)

    @property
    def config_path(self) -> pathlib.Path:
        return self.path / CONFIG_FILE

    def model_path(self, version: str) -> pathlib.Path:
        return self.path / version / MODEL_FILE

    def profile_path(self, version: str) -> pathlib.Path:
        return self.path / version / PROFILE_FILE


def scan(root: pathlib.Path) -> dict[str, ModelDir]:
    """Every model directory under ``root``; versions are subdirectories holding model.onnx."""
    found: dict[str, ModelDir] = {}
    for model_path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        entry = ModelDir(model_path.name, model_path, _fingerprint(model_path / CONFIG_FILE))
        for version_path in sorted(p for p in model_path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            fp = _fingerprint(version_path / MODEL_FILE)
            if fp is not None:
                entry.versions[version_path.name] = (fp, _fingerprint(version_path / PROFILE_FILE))
        found[entry.name] = entry
    return found
