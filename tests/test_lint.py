"""The Cython kernels stay cython-lint clean (the tool runs from the test environment's bin/)."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_cython_lint_is_clean():
    bindir = pathlib.Path(sys.executable).parent
    tool = shutil.which("cython-lint", path=str(bindir)) or shutil.which("cython-lint")
    assert tool, "cython-lint is part of the test extra: pip install -e '.[test]'"
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}  # it runs pycodestyle
    result = subprocess.run([tool, *sorted(str(p) for p in (ROOT / "ext").glob("*.p*"))],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
