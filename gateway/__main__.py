"""``python -m gateway``: the ``gateway`` command.

``python -m`` puts the current directory first on ``sys.path``, so from the root of a source
checkout whose kernels are not built in place (a plain ``pip install .`` builds them into
site-packages only) this runs the checkout's ``gateway/``, which cannot serve. When an installed
copy with its kernels is there too, this re-runs the command on it, saying so on stderr; with
none, the command runs as is and whatever needs the kernels says how to build them.
"""
import importlib.machinery
import os
import pathlib
import sys

# Runs in the fresh interpreter: drops the shadowing directory from sys.path, then runs the
# installed package's __main__ (argv[1] is that directory).
_RERUN = ("import os, runpy, sys; shadow = sys.argv.pop(1); "
          "sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != shadow]; "
          "runpy.run_module('gateway', run_name='__main__', alter_sys=True)")


def _has_kernels(package_dir: pathlib.Path) -> bool:
    """Every kernel whose stub (``_native/*.pyi``, shipped with the package) has a compiled module."""
    native = package_dir / "_native"
    stubs = list(native.glob("*.pyi"))
    return bool(stubs) and all(any((native / (s.stem + suffix)).exists()
                                   for suffix in importlib.machinery.EXTENSION_SUFFIXES) for s in stubs)


def _installed_elsewhere(shadow_root: str) -> pathlib.Path | None:
    """The package directory another ``sys.path`` entry or import hook (an editable install's
    finder) would give, when it has its kernels."""
    path = [p for p in sys.path if os.path.realpath(p or os.curdir) != shadow_root]
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        try:
            spec = find_spec("gateway", path)
        except (ImportError, TypeError, ValueError):
            continue
        if spec is None or not spec.submodule_search_locations:
            continue
        candidate = pathlib.Path(list(spec.submodule_search_locations)[0]).resolve()
        if str(candidate.parent) != shadow_root and _has_kernels(candidate):
            return candidate
    return None


def _rerun_installed() -> None:
    here = pathlib.Path(__file__).resolve().parent
    if _has_kernels(here):
        return
    shadow_root = str(here.parent)
    installed = _installed_elsewhere(shadow_root)
    if installed is None:
        return
    print(f"gateway: {here} has no built kernels (a source tree on sys.path); running the installed "
          f"package at {installed} instead (to run this tree, build it in place: "
          f"python setup.py build_ext --inplace)", file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, "-c", _RERUN, shadow_root, *sys.argv[1:]])


if __name__ == "__main__":
    _rerun_installed()
    from .cli import main

    sys.exit(main())
