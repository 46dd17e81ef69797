"""Regenerate the Python protobuf and gRPC stubs from protos/ into gateway/_proto/.

One command, run from anywhere:  python protos/generate.py [OUT_DIR]
setup.py calls the same function at build time, so the stubs always match the
.proto files and the grpcio-tools version the package was built with.
"""
from __future__ import annotations

import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "gateway" / "_proto"


def generate(out_dir: pathlib.Path = DEFAULT_OUT) -> list[pathlib.Path]:
    from grpc_tools import protoc
    import grpc_tools

    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(HERE.glob("*.proto"))
    args = ["protoc", f"-I{HERE}", f"-I{well_known}", f"--python_out={out_dir}",
            f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}"]
    if protoc.main(args + [str(p) for p in protos]) != 0:
        raise RuntimeError(f"protoc failed for {[p.name for p in protos]}")
    written = []
    for proto in protos:
        stem = proto.stem
        grpc_file = out_dir / f"{stem}_pb2_grpc.py"
        # protoc writes a top-level import; the stubs live inside a package.
        text = re.sub(rf"^import {stem}_pb2 as", f"from . import {stem}_pb2 as",
                      grpc_file.read_text(), flags=re.M)
        grpc_file.write_text(text)
        written += [out_dir / f"{stem}_pb2.py", out_dir / f"{stem}_pb2.pyi", grpc_file]
    init = out_dir / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated from protos/ by protos/generate.py; do not edit."""\n')
    return written


if __name__ == "__main__":
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    for path in generate(out):
        print(path)
