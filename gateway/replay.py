"""``gateway replay``: re-send captured requests (``gateway.lifecycle.capture`` files) to a gateway
and report the answers that differ from the captured ones.

A captured request is replayed when every input was written (kept or masked: a masked input is
sent as captured, zeros included, and its answer is reported apart as ``masked``). It goes to the
same model, pinned to the version that answered it (``--version`` pins another), and each captured
output is compared: exactly (the bytes), or within ``--atol`` / ``--rtol`` (``numpy.allclose``).
Captured requests that did not get an OK answer from a model (errors, degraded answers) are not
replayed (counted as skipped). Bounded: ``--limit`` requests at most, ``--timeout-s`` each.
"""
from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .lifecycle.capture import decode_tensor


@dataclass
class ReplayReport:
    replayed: int = 0
    same: int = 0
    differ: int = 0
    masked: int = 0                       # replayed with masked inputs (their answers may differ)
    errors: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    differences: list[dict] = field(default_factory=list)   # the first 20

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def as_dict(self) -> dict:
        return {"replayed": self.replayed, "same": self.same, "differ": self.differ, "masked": self.masked,
                "errors": self.errors, "skipped": self.skipped, "differences": self.differences}


def records(paths: list[pathlib.Path]) -> Iterator[dict]:
    """The request records of capture files, in file order (a directory: its capture-*.jsonl)."""
    files: list[pathlib.Path] = []
    for p in paths:
        files.extend(sorted(p.glob("capture-*.jsonl")) if p.is_dir() else [p])
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    raise ValueError(f"{f}:{n}: not a JSON line") from None
                if isinstance(rec, dict) and rec.get("kind") == "request":
                    yield rec


def compare(captured: dict, got: dict[str, np.ndarray], atol: float, rtol: float) -> str | None:
    """None when every captured output is matched; else what differs, in a sentence."""
    for name, t in captured.items():
        want = decode_tensor(t)
        have = got.get(name)
        if have is None:
            return f"output {name!r} missing"
        if have.shape != want.shape or have.dtype != want.dtype:
            return f"output {name!r}: {have.dtype}{list(have.shape)} instead of {want.dtype}{list(want.shape)}"
        if atol == 0 and rtol == 0:
            if have.tobytes() != want.tobytes():
                diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
                return f"output {name!r} differs (max |diff| {float(np.nanmax(diff)):.3g})"
        elif not np.allclose(have, want, atol=atol, rtol=rtol, equal_nan=True):
            diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
            return f"output {name!r} differs beyond the tolerance (max |diff| {float(np.nanmax(diff)):.3g})"
    return None


def replay(client, paths: list[pathlib.Path], *, version: str = "", atol: float = 0.0, rtol: float = 0.0,
           limit: int = 100_000, timeout_s: float = 10.0) -> ReplayReport:
    import grpc

    from ._proto import gateway_pb2 as pb
    from .client import from_numpy, to_numpy_outputs

    report = ReplayReport()
    for rec in records(paths):
        if report.replayed >= limit:
            report.skip("over --limit")
            continue
        if rec.get("status") != "OK" or rec.get("degraded") or not rec.get("version"):
            report.skip("not answered OK by a model when captured")
            continue
        inputs = rec.get("inputs", {})
        if any(t.get("dropped") for t in inputs.values()):
            report.skip("inputs not captured (capture.inputs: drop)")
            continue
        if not rec.get("outputs"):
            report.skip("outputs not captured (capture.outputs: false)")
            continue
        masked = any("masked" in t for t in inputs.values())
        request = pb.PredictRequest(model=rec["model"], version=version or rec["version"],
                                    request_id=f"replay-{rec['request_id']}",
                                    inputs=[from_numpy(k, decode_tensor(t)) for k, t in inputs.items()],
                                    output_names=list(rec["outputs"]))
        report.replayed += 1
        report.masked += masked
        try:
            answer = client.stub.Predict(request, timeout=timeout_s)
        except grpc.RpcError as exc:
            code = exc.code().name
            report.errors[code] = report.errors.get(code, 0) + 1
            continue
        problem = compare(rec["outputs"], to_numpy_outputs(answer), atol, rtol)
        if problem is None:
            report.same += 1
        else:
            report.differ += 1
            if len(report.differences) < 20:
                report.differences.append({"request_id": rec["request_id"], "captured_version": rec["version"],
                                           "replayed_by": answer.served_by, "masked": masked, "what": problem})
    return report
