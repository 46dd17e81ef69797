"""Where a server's CPU time goes, by shared object: ``perf record`` on every process of the
server's process group while a load runs, then ``perf report --sort dso``. Shows the split
between the model runtime (libonnxruntime), the interpreter (libpython / python3.x), gRPC core
(cygrpc), the kernel, and the rest, for any server alike. Needs ``perf`` and the permission to
trace those processes (root, or ``perf_event_paranoid`` <= 1); otherwise says why not.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[2]) == pgid:
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


class Recording:
    """``with Recording(pgid, seconds) as rec: <load>`` then ``rec.top()``."""

    def __init__(self, pgid: int, seconds: float, frequency_hz: int = 499):
        self.pgid, self.seconds, self.frequency_hz = pgid, min(seconds, 120.0), frequency_hz
        self.error: str | None = None
        self.proc: subprocess.Popen | None = None
        self.path = os.path.join(tempfile.mkdtemp(prefix="bench-perf-"), "perf.data")

    def __enter__(self) -> "Recording":
        perf = shutil.which("perf")
        pids = group_pids(self.pgid)
        if perf is None:
            self.error = "perf is not installed"
        elif not pids:
            self.error = f"no process in group {self.pgid}"
        else:
            self.proc = subprocess.Popen([perf, "record", "-F", str(self.frequency_hz), "-o", self.path,
                                          "-p", ",".join(map(str, pids)), "--", "sleep", f"{self.seconds:.1f}"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        try:
            _, err = self.proc.communicate(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if self.proc.returncode != 0 or not os.path.exists(self.path):
            self.error = f"perf record failed (rc {self.proc.returncode}): {(err or '').strip()[-300:]}"

    def top(self, n: int = 8) -> dict:
        """The ``n`` shared objects with the most samples, as shares of all samples."""
        if self.error:
            return {"error": self.error}
        proc = subprocess.run(["perf", "report", "-i", self.path, "--sort", "dso", "--stdio", "-q"],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            return {"error": f"perf report failed: {proc.stderr.strip()[-300:]}"}
        shares = []
        for line in proc.stdout.splitlines():
            m = re.match(r"\s*([\d.]+)%\s+(\S.*)$", line)
            if m:
                shares.append((m.group(2).strip(), float(m.group(1))))
        shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)
        return {"dso_share_pct": dict(sorted(shares, key=lambda x: -x[1])[:n])}
