"""The installed stubs are what protos/generate.py makes from protos/ today."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import gateway._proto

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_generated_stubs_match_the_proto_sources(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), str(tmp_path)], check=True,
                   capture_output=True)
    installed = pathlib.Path(gateway._proto.__file__).parent
    for name in ("gateway_pb2.py", "gateway_pb2_grpc.py", "gateway_pb2.pyi"):
        assert (tmp_path / name).read_text() == (installed / name).read_text(), f"{name} is stale: rebuild"
