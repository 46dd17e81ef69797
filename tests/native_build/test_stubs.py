"""gateway/_native/*.pyi describe the compiled kernels: mypy's stubtest compares every stub
with the module it types (names, signatures, defaults), and mypy accepts the stubs."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import gateway

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODULES = [f"gateway._native.{p.stem}" for p in sorted((ROOT / "ext").glob("*.pyx"))]
# What Cython adds to every cdef class and module (pickling hooks, doctest table). (Cython's
# extension types are also PEP 800 disjoint bases, which the stubs do not declare.)
ALLOWLIST = r"""gateway\._native\.\w+\.(__reduce_cython__|__setstate_cython__|__test__)
gateway\._native\.\w+\.\w+\.(__reduce_cython__|__setstate_cython__)
"""


def _run(args, tmp_path):
    # The package this test session imported (its stubs and modules), run from tmp_path so
    # that mypy's cache stays out of the tree.
    tree = pathlib.Path(gateway.__file__).resolve().parents[1]
    path = os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "MYPY_CACHE_DIR": str(tmp_path / "mypy-cache")}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=240)


def test_every_kernel_module_has_a_stub():
    stubs = {p.stem for p in (ROOT / "gateway" / "_native").glob("*.pyi")}
    assert stubs == {p.stem for p in (ROOT / "ext").glob("*.pyx")}


def test_stubs_match_the_compiled_modules(tmp_path):
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text(ALLOWLIST)
    flags = ["--allowlist", str(allowlist)]
    if "--ignore-disjoint-bases" in _run(["mypy.stubtest", "--help"], tmp_path).stdout:
        flags.append("--ignore-disjoint-bases")     # mypy >= 1.18 checks PEP 800
    result = _run(["mypy.stubtest", *flags, *MODULES], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_accepts_the_stubs(tmp_path):
    stubs = sorted(str(p) for p in (ROOT / "gateway" / "_native").glob("*.pyi"))
    result = _run(["mypy", "--strict", *stubs], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
