"""Build: Cython kernels from ext/ into gateway._native, protobuf stubs from protos/.

Options (environment, since PEP 517 front ends pass no flags to build_ext):
  GATEWAY_DEBUG_BUILD=1    keep bounds/wraparound checks on, add line tracing, -O0 -g
  GATEWAY_CYTHON_ANNOTATE=1  write the Cython HTML annotation next to each .pyx
"""
from __future__ import annotations

import os
import pathlib
import shutil
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).resolve().parent
DEBUG = os.environ.get("GATEWAY_DEBUG_BUILD", "") not in ("", "0")


def _generate_protos() -> None:
    try:
        import grpc_tools  # noqa: F401  (a build requirement; absent only in hand-made environments)
    except ImportError:
        if (ROOT / "gateway" / "_proto" / "gateway_pb2.py").exists():
            print("grpcio-tools not installed: keeping the existing gateway/_proto stubs")
            return
        raise
    sys.path.insert(0, str(ROOT / "protos"))
    try:
        from generate import generate
    finally:
        sys.path.pop(0)
    generate(ROOT / "gateway" / "_proto")


class BuildPyWithProtos(build_py):
    """Regenerates the gRPC stubs before the Python files are collected."""

    def run(self) -> None:
        _generate_protos()
        super().run()


def _extensions() -> list[Extension]:
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
    compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]
    if DEBUG:
        macros.append(("CYTHON_TRACE_NOGIL", "1"))
    # Cython looks up a module's own .pxd by its qualified name, so each ext/<name>.pxd is
    # mirrored as gateway/_native/<name>.pxd under an include directory.
    pxd_dir = ROOT / "build" / "cython" / "pxd"
    (pxd_dir / "gateway" / "_native").mkdir(parents=True, exist_ok=True)
    for pxd in sorted((ROOT / "ext").glob("*.pxd")):
        mirror = pxd_dir / "gateway" / "_native" / pxd.name
        if not mirror.exists() or mirror.read_bytes() != pxd.read_bytes():
            shutil.copy2(pxd, mirror)
    exts = []
    for pyx in sorted((ROOT / "ext").glob("*.pyx")):
        exts.append(Extension(
            f"gateway._native.{pyx.stem}",
            [str(pyx.relative_to(ROOT))],
            include_dirs=[numpy.get_include(), "ext"],
            define_macros=macros,
            extra_compile_args=compile_args,
        ))
    directives = {"language_level": 3, "embedsignature": True}
    if DEBUG:
        directives.update(linetrace=True, boundscheck=True, wraparound=True)
    return cythonize(
        exts,
        include_path=["ext", str(pxd_dir)],
        compiler_directives=directives,
        annotate=os.environ.get("GATEWAY_CYTHON_ANNOTATE", "") not in ("", "0"),
        build_dir="build/cython",
    )


# Stubs are generated whenever setup.py runs, so editable installs get them too.
_generate_protos()
setup(ext_modules=_extensions(), cmdclass={"build_py": BuildPyWithProtos})
