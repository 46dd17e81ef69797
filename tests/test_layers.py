"""The layer contracts of pyproject.toml ([tool.importlinter]) hold, so plain `pytest` checks them
too; and the one that keeps gateway._native behind gateway.kernels still breaks on each form of
import (grimp cannot see compiled modules, so that contract leans on how it records them)."""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def lint_imports(cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    bindir = pathlib.Path(sys.executable).parent
    tool = shutil.which("lint-imports", path=str(bindir)) or shutil.which("lint-imports")
    assert tool, "import-linter is part of the test extra: pip install -e '.[test]'"
    return subprocess.run([tool, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_layer_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("line", [
    "from gateway._native.histogram import ExpHistogram",
    "from .._native.histogram import ExpHistogram",
    "from gateway._native import histogram",
    "import gateway._native.histogram",
])
def test_a_native_import_outside_kernels_breaks_a_contract(tmp_path, line):
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(ROOT / "gateway", tmp_path / "gateway",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd"))
    with open(tmp_path / "gateway" / "telemetry" / "models.py", "a") as f:
        f.write(f"\n{line}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "gateway.telemetry.models" in result.stdout and "BROKEN" in result.stdout, result.stdout
