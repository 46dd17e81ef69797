"""gRPC core settings applied before grpc loads: which experiments are turned off, the operator's
GRPC_EXPERIMENTS kept and winning, and a fresh interpreter importing gateway getting them."""
from __future__ import annotations

import subprocess
import sys

import pytest

from gateway import _grpc_core


@pytest.mark.parametrize(("given", "after", "added"), [
    (None, "-optimization_04", ("optimization_04",)),
    ("", "-optimization_04", ("optimization_04",)),
    ("event_engine_client, -tcp_rcv_lowat", "event_engine_client,-tcp_rcv_lowat,-optimization_04",
     ("optimization_04",)),
    ("optimization_04", "optimization_04", ()),       # the operator turned it on: it stays on
    ("-optimization_04", "-optimization_04", ()),     # already off: not added twice
])
def test_the_experiments_are_added_to_what_the_operator_gave(given, after, added):
    environ = {} if given is None else {"GRPC_EXPERIMENTS": given}
    assert _grpc_core.apply(environ) == added
    assert environ["GRPC_EXPERIMENTS"] == after


def _fresh(code: str, **env: str) -> str:
    environ = {k: v for k, v in __import__("os").environ.items() if k != "GRPC_EXPERIMENTS"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**environ, **env}, timeout=60).stdout.strip()


def test_importing_gateway_first_sets_it_for_grpc_and_importing_grpc_first_is_recorded_as_too_late():
    show = "import os; from gateway import _grpc_core; print(os.environ['GRPC_EXPERIMENTS'], _grpc_core.too_late)"
    assert _fresh("import gateway; " + show) == "-optimization_04 ()"
    assert _fresh("import grpc; import gateway; " + show) == "-optimization_04 ('optimization_04',)"
    assert _fresh("import grpc; import gateway; " + show, GRPC_EXPERIMENTS="optimization_04") == \
        "optimization_04 ()"
