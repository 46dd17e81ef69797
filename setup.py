"""Build: Cython kernels from ext/ into gateway._native, gRPC stubs from protos/ into gateway/_proto.

Importing this file does nothing; the work happens in the setuptools commands. ``build_py``
regenerates the stubs (protos/generate.py) before it collects the Python files, and
``build_ext --inplace`` (which runs without build_py) does too, so ``pip install .``,
``pip install -e .`` and ``python setup.py build_ext --inplace`` all end with stubs that match
protos/. A build that cannot generate them (grpcio-tools missing, protoc failing) fails.

The kernels are built one way for the whole build, chosen by environment variables (PEP 517
front ends pass no flags to build_ext); no function in ext/ overrides these directives:

  (default)                release: -O3; Cython boundscheck, wraparound and initializedcheck
                           off, C division (cdivision) on.
  GATEWAY_DEBUG_BUILD=1    debug: -O0 -g; boundscheck, wraparound and initializedcheck on,
                           Python division (a zero divisor raises ZeroDivisionError), line
                           tracing (linetrace, CYTHON_TRACE_NOGIL). A failed check inside a
                           noexcept kernel goes to sys.unraisablehook (pytest fails the test).
  GATEWAY_SANITIZE=1       AddressSanitizer and UndefinedBehaviorSanitizer (address, undefined,
                           float-cast-overflow; -fno-wrapv so signed overflow is caught),
                           stopping at the first finding; -O1 -g unless combined with
                           GATEWAY_DEBUG_BUILD=1. Python must load the sanitizer runtimes first:
                             LD_PRELOAD="$(gcc -print-file-name=libasan.so) \\
                                         $(gcc -print-file-name=libubsan.so)" \\
                             ASAN_OPTIONS=detect_leaks=0 python -m pytest tests/telemetry
                           (detect_leaks=0: CPython does not free everything at exit).
  GATEWAY_CYTHON_ANNOTATE=1  also write Cython's HTML annotation next to each generated .c

Generated C goes to build/cython/<build>-<hash of its settings>/ext/. Switching builds in one
tree recompiles the modules, instead of keeping those of the previous build.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parent


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def build_settings(debug: bool, sanitize: bool) -> dict:
    """Cython directives, C macros and compiler/linker flags of one kind of build."""
    directives: dict[str, object] = {"language_level": 3, "embedsignature": True}
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
    if debug:
        # (no performance hints: they ask for the checks this build is for to be turned off)
        directives.update(boundscheck=True, wraparound=True, initializedcheck=True,
                          cdivision=False, linetrace=True, show_performance_hints=False)
        macros.append(("CYTHON_TRACE_NOGIL", "1"))
        compile_args = ["-O0", "-g"]
    else:
        directives.update(boundscheck=False, wraparound=False, initializedcheck=False,
                          cdivision=True)
        compile_args = ["-O3"]
    link_args: list[str] = []
    if sanitize:
        sanitizers = "-fsanitize=address,undefined,float-cast-overflow"
        if not debug:
            compile_args = ["-O1", "-g"]
        # -fno-wrapv: Python's CFLAGS carry -fwrapv, which makes signed overflow defined and
        # hides it from UBSan.
        compile_args += [sanitizers, "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
                         "-fno-wrapv"]
        link_args.append(sanitizers)
    from Cython.Compiler.Options import get_directive_defaults
    known = get_directive_defaults()    # (show_performance_hints is newer than some Cython 3)
    directives = {k: v for k, v in directives.items() if k in known}
    name = ("debug" if debug else "release") + ("-sanitize" if sanitize else "")
    return {"name": name, "directives": directives, "macros": macros,
            "compile_args": compile_args, "link_args": link_args}


_PROTOS_DONE = False


def generate_protos() -> None:
    """Regenerate gateway/_proto from protos/ (once per process); raises when it cannot."""
    global _PROTOS_DONE
    if _PROTOS_DONE:
        return
    try:
        import grpc_tools  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            "grpcio-tools is needed to build: it generates gateway/_proto from protos/ "
            "(a build requirement in pyproject.toml; without build isolation, install it)"
        ) from exc
    sys.path.insert(0, str(ROOT / "protos"))
    try:
        from generate import generate
    finally:
        sys.path.pop(0)
    generate(ROOT / "gateway" / "_proto")
    _PROTOS_DONE = True


def _extensions(settings: dict, annotate: bool) -> list:
    import Cython
    import numpy
    from Cython.Build import cythonize
    from setuptools import Extension

    # Cython looks up a module's own .pxd by its qualified name, so each ext/<name>.pxd is
    # mirrored as gateway/_native/<name>.pxd under an include directory.
    pxd_dir = ROOT / "build" / "cython" / "pxd"
    (pxd_dir / "gateway" / "_native").mkdir(parents=True, exist_ok=True)
    for pxd in sorted((ROOT / "ext").glob("*.pxd")):
        mirror = pxd_dir / "gateway" / "_native" / pxd.name
        if not mirror.exists() or mirror.read_bytes() != pxd.read_bytes():
            shutil.copy2(pxd, mirror)
    # One directory of generated C per kind of build (and per Cython version and settings),
    # so the C of one build is never taken for another's. The stamp is rewritten whenever the
    # build kind differs from the previous build in this tree: every module is a dependent of
    # it, so modules compiled by another kind of build are older than it and get rebuilt.
    key = hashlib.sha256(json.dumps([Cython.__version__, numpy.__version__, settings],
                                    sort_keys=True).encode()).hexdigest()[:10]
    c_dir = ROOT / "build" / "cython" / f"{settings['name']}-{key}"
    c_dir.mkdir(parents=True, exist_ok=True)
    stamp = c_dir / "build.stamp"
    last = ROOT / "build" / "cython" / "last-build"
    if not stamp.exists() or not last.exists() or last.read_text() != c_dir.name:
        stamp.write_text(c_dir.name + "\n")
        last.write_text(c_dir.name)
    exts = []
    for pyx in sorted((ROOT / "ext").glob("*.pyx")):
        exts.append(Extension(
            f"gateway._native.{pyx.stem}",
            [str(pyx.relative_to(ROOT))],
            include_dirs=[numpy.get_include(), "ext"],
            define_macros=list(settings["macros"]),
            extra_compile_args=list(settings["compile_args"]),
            extra_link_args=list(settings["link_args"]),
            depends=[str(stamp.relative_to(ROOT))],
        ))
    return cythonize(
        exts,
        include_path=["ext", str(pxd_dir)],
        compiler_directives=settings["directives"],
        annotate=annotate,
        build_dir=str(c_dir.relative_to(ROOT)),
    )


def main() -> None:
    from setuptools import setup
    from setuptools.command.build_ext import build_ext
    from setuptools.command.build_py import build_py

    class BuildPyWithProtos(build_py):
        """Regenerates the gRPC stubs before the Python files are collected."""

        def run(self) -> None:
            generate_protos()
            super().run()

    class BuildExtWithProtos(build_ext):
        """An in-place build (build_ext --inplace, editable installs) regenerates the stubs."""

        def run(self) -> None:
            if self.inplace:
                generate_protos()
            super().run()

    settings = build_settings(_flag("GATEWAY_DEBUG_BUILD"), _flag("GATEWAY_SANITIZE"))
    print(f"gateway: {settings['name']} build of the kernels", file=sys.stderr)
    setup(ext_modules=_extensions(settings, _flag("GATEWAY_CYTHON_ANNOTATE")),
          cmdclass={"build_py": BuildPyWithProtos, "build_ext": BuildExtWithProtos})


# setuptools (python setup.py, and the PEP 517 backend) runs this file as __main__.
if __name__ == "__main__":
    main()
