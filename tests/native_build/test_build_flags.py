"""The kernels are built one way as a whole (setup.py): a release build has no Cython checks
left in any function, a debug build has them in every one, and the debug checks really catch
an out-of-bounds index and a zero divisor inside a noexcept nogil kernel."""
from __future__ import annotations

import importlib
import importlib.util
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODULES = ("changepoint", "confidence", "counters", "featurestats", "histogram", "ring")
# The message of Cython's __Pyx_RaiseBufferIndexError, which is compiled into a module only
# when some memoryview access in it is bounds-checked (memoryview objects' own indexing
# raises "... (axis %zd)", present in every module).
BOUNDS_MESSAGE = b"Out of bounds on buffer access (axis %d)"


def _native(name: str):
    return importlib.import_module(f"gateway._native.{name}")


def _is_debug_build(name: str) -> bool:
    """A debug build traces lines (linetrace): calling into the module reaches sys.settrace."""
    seen: set[str] = set()

    def tracer(frame, event, arg):
        seen.add(frame.f_code.co_filename)
        return tracer

    calls = {
        "changepoint": lambda m: m.ChangeDetector([0.0], [1.0]).state(),
        "confidence": lambda m: m.ConfidenceStats(3).state(),
        "counters": lambda m: m.WindowedCounters(4).totals(),
        "featurestats": lambda m: m.FeatureStats(2, value_range=(0.0, 1.0)).state(),
        "histogram": lambda m: m.ExpHistogram().snapshot(),
        "ring": lambda m: m.RequestRing(4).drain(),
    }
    module = _native(name)
    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        calls[name](module)
    finally:
        sys.settrace(previous)
    return any(f.endswith(f"{name}.pyx") for f in seen)


def _load_setup_py():
    spec = importlib.util.spec_from_file_location("gateway_setup_py", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_kernel_module_comes_from_one_kind_of_build():
    kinds = {name: _is_debug_build(name) for name in MODULES}
    assert len(set(kinds.values())) == 1, f"mixed debug/release modules: {kinds}"


def test_bounds_checks_are_compiled_in_exactly_in_the_debug_build():
    debug = _is_debug_build("confidence")
    for name in MODULES:
        binary = pathlib.Path(_native(name).__file__).read_bytes()
        if not debug:
            assert BOUNDS_MESSAGE not in binary, f"{name}: a release function keeps bounds checks"
        elif name not in ("featurestats", "changepoint", "confidence"):  # raw pointers only
            assert BOUNDS_MESSAGE in binary, f"{name}: the debug build has no bounds checks"


def test_importing_setup_py_does_nothing():
    proto = ROOT / "gateway" / "_proto"
    before = {p.name: p.stat().st_mtime_ns for p in proto.iterdir()}
    last = ROOT / "build" / "cython" / "last-build"
    last_before = last.stat().st_mtime_ns if last.exists() else None
    setup_py = _load_setup_py()
    assert {p.name: p.stat().st_mtime_ns for p in proto.iterdir()} == before
    assert (last.stat().st_mtime_ns if last.exists() else None) == last_before
    assert setup_py.build_settings(debug=False, sanitize=False)["directives"]["boundscheck"] is False


def test_a_build_without_grpc_tools_fails_instead_of_keeping_the_old_stubs(monkeypatch):
    setup_py = _load_setup_py()
    monkeypatch.setitem(sys.modules, "grpc_tools", None)    # import grpc_tools -> ImportError
    with pytest.raises(RuntimeError, match="grpcio-tools"):
        setup_py.generate_protos()


PROBE = textwrap.dedent("""
    # cython: language_level=3
    cdef double _at(const double[::1] a, Py_ssize_t i) noexcept nogil:
        return a[i]

    cdef double _ratio(double a, double b) noexcept nogil:
        return a / b

    def at(const double[::1] a, Py_ssize_t i):
        cdef double v
        with nogil:
            v = _at(a, i)
        return v

    def ratio(double a, double b):
        return _ratio(a, b)
""")

BUILD_PROBE = textwrap.dedent("""
    import importlib.util
    import sys
    from Cython.Build import cythonize
    from setuptools import Extension, setup
    spec = importlib.util.spec_from_file_location("gateway_setup_py", sys.argv[1])
    setup_py = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup_py)
    cfg = setup_py.build_settings(debug=True, sanitize=False)
    ext = Extension("probe", ["probe.pyx"], define_macros=cfg["macros"],
                    extra_compile_args=cfg["compile_args"], extra_link_args=cfg["link_args"])
    setup(name="probe", script_args=["-q", "build_ext", "--inplace"],
          ext_modules=cythonize([ext], compiler_directives=cfg["directives"], quiet=True))
""")


@pytest.mark.slow
def test_debug_checks_catch_an_out_of_bounds_index_in_a_nogil_kernel(tmp_path, monkeypatch):
    if not _is_debug_build("confidence"):
        pytest.skip("the installed kernels are a release build (GATEWAY_DEBUG_BUILD=1 builds debug)")
    # A probe compiled with the debug build's settings (the kernels' own out-of-bounds
    # indices are unreachable from Python): the same checks as every debug kernel.
    (tmp_path / "probe.pyx").write_text(PROBE)
    (tmp_path / "build.py").write_text(BUILD_PROBE)
    subprocess.run([sys.executable, "build.py", str(ROOT / "setup.py")], cwd=tmp_path,
                   check=True, timeout=240)
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = importlib.import_module("probe")
    raised = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: raised.append(u.exc_type))
    a = np.arange(3.0)
    assert probe.at(a, 2) == 2.0 and probe.at(a, -1) == 2.0     # wraparound
    assert raised == []
    assert probe.at(a, 3) == 0.0                 # noexcept: the IndexError is reported, not raised
    assert raised == [IndexError]
    assert probe.ratio(1.0, 0.0) == 0.0          # Python division: a zero divisor is caught too
    assert raised == [IndexError, ZeroDivisionError]
