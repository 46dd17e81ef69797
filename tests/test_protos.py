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
    names = [f"{p.stem}{suffix}" for p in sorted((ROOT / "protos").glob("*.proto"))
             for suffix in ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")]
    assert "oip_pb2.py" in names
    for name in names:
        assert (tmp_path / name).read_text() == (installed / name).read_text(), f"{name} is stale: rebuild"


def test_the_environment_is_consistent_with_tritonclient_installed():
    """The test extra installs tritonclient[grpc] beside the gateway: pip resolved one set that
    both accept (tritonclient caps protobuf below 7), and the stubs, generated at build time,
    run on the protobuf it chose. In a fresh process, as a user's would be."""
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    code = ("import tritonclient.grpc, gateway.app, gateway._proto.oip_pb2 as o, google.protobuf as p; "
            "print(p.__version__, o.DESCRIPTOR.package)")
    run = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[1] == "gateway.oip"
