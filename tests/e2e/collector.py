"""A real OTLP collector for tests and benchmarks: ``rotel-agent`` (PyPI ``rotel``) on loopback,
with its debug log parsed back into metrics, spans, log records (``logs=True``) and resource
attributes."""
from __future__ import annotations

import pathlib
import re
import subprocess
import tempfile
import time

_ATTR = re.compile(r"^\s+-> ([\w.]+): \w+\((.*)\)$")


def agent_path() -> pathlib.Path | None:
    try:
        import rotel
    except ImportError:
        return None
    path = pathlib.Path(rotel.__file__).parent / "rotel-agent"
    return path if path.exists() else None


def agent_runs() -> tuple[bool, str]:
    path = agent_path()
    if path is None:
        return False, "the rotel package (rotel-agent) is not installed"
    try:
        out = subprocess.run([str(path), "--help"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"rotel-agent cannot run here: {exc}"
    return (out.returncode == 0, f"rotel-agent --help exited {out.returncode}")


class Collector:
    def __init__(self, grpc_port: int, http_port: int, *, logs: bool = False):
        self.grpc_port, self.http_port = grpc_port, http_port
        self.logs = logs
        self.endpoint = f"http://127.0.0.1:{grpc_port}"
        self._log = pathlib.Path(tempfile.mkstemp(prefix="rotel-", suffix=".log")[1])
        self._offset = 0
        self.proc: subprocess.Popen | None = None

    def start(self, wait_s: float = 10.0) -> "Collector":
        out = open(self._log, "ab")
        self.proc = subprocess.Popen(
            [str(agent_path()), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
             "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}", "--exporter", "blackhole",
             "--debug-log", "metrics", "--debug-log", "traces", *(("--debug-log", "logs") if self.logs else ()),
             "--debug-log-verbosity", "detailed"],
            stdout=out, stderr=subprocess.STDOUT)
        out.close()
        deadline = time.monotonic() + wait_s
        while "Starting Rotel" not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rotel-agent did not start:\n{self.text()[-2000:]}")
            time.sleep(0.05)
        self._offset = len(self.text())
        time.sleep(0.2)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def text(self) -> str:
        return self._log.read_text(errors="replace")

    # -- parsing ----------------------------------------------------------------------
    def metric_points(self) -> list[dict]:
        """Every data point received: {name, type, temporality, attrs, count|value}, in arrival
        order (temporality: "DELTA", "CUMULATIVE" or None for gauges)."""
        points, name, dtype, temporality, cur = [], None, None, None, None
        in_dp = False
        for line in self.text().splitlines():
            s = line.strip()
            if s.startswith("-> Name: "):
                name, temporality, in_dp = s[len("-> Name: "):], None, False
            elif s.startswith("-> DataType: "):
                dtype = s[len("-> DataType: "):]
            elif s.startswith("-> AggregationTemporality: "):
                temporality = s.rsplit("_", 1)[-1]
            elif re.match(r"^\w*DataPoints #\d+$", s):
                cur = {"name": name, "type": dtype, "temporality": temporality, "attrs": {}}
                points.append(cur)
                in_dp = True
            elif in_dp and (m := _ATTR.match(line)):
                cur["attrs"][m.group(1)] = m.group(2)
            elif in_dp and s.startswith("Count: "):
                cur["count"] = int(s[len("Count: "):])
            elif in_dp and s.startswith("Value: "):
                cur["value"] = float(s[len("Value: "):])
            elif s.startswith(("Metric #", "ResourceMetrics", "ResourceSpans")):
                in_dp = False
        return points

    def metric_names(self) -> set[str]:
        return {p["name"] for p in self.metric_points()}

    def spans(self) -> list[dict]:
        spans, cur, section = [], None, None
        for line in self.text().splitlines():
            s = line.strip()
            if re.match(r"^Span #\d+$", s):
                cur = {"attrs": {}}
                spans.append(cur)
                section = None
            elif cur is not None and ":" in s and s.split(":")[0].strip() in (
                    "Trace ID", "Parent ID", "ID", "Name", "Kind"):
                key, value = s.split(":", 1)
                cur[key.strip().lower().replace(" ", "_")] = value.strip()
            elif s == "Attributes:":
                section = "attrs"
            elif s.startswith(("Events:", "Links:", "SpanEvent", "SpanLink")):
                section = None
            elif cur is not None and section == "attrs" and (m := _ATTR.match(line)):
                cur["attrs"][m.group(1)] = m.group(2)
            elif s.startswith(("ResourceSpans", "ResourceMetrics")):
                cur = None
        return spans

    def log_records(self) -> list[dict]:
        """Every log record received (``logs=True``): {event_name, severity_text, severity_number,
        body, attrs}, in arrival order."""
        records, cur, in_attrs = [], None, False
        for line in self.text().splitlines():
            s = line.strip()
            if re.match(r"^LogRecord #\d+$", s):
                cur, in_attrs = {"attrs": {}}, False
                records.append(cur)
            elif s.startswith(("ResourceLog", "ScopeLogs", "ResourceMetrics", "ResourceSpans")):
                cur, in_attrs = None, False
            elif cur is None:
                continue
            elif s == "Attributes:":
                in_attrs = True
            elif in_attrs and (m := _ATTR.match(line)):
                cur["attrs"][m.group(1)] = m.group(2)
            elif ": " in s and not s.startswith("->"):
                key, value = s.split(": ", 1)
                key = key.strip().lower().replace(" ", "_")
                if key in ("eventname", "severitytext", "severitynumber", "body"):
                    in_attrs = False
                    key = {"eventname": "event_name", "severitytext": "severity_text",
                           "severitynumber": "severity_number"}.get(key, key)
                    cur[key] = value[4:-1] if key == "body" and value.startswith("Str(") else value
        return records

    def resource_attributes(self) -> dict[str, str]:
        out, on = {}, False
        for line in self.text().splitlines():
            s = line.strip()
            if s == "Resource attributes:":
                on = True
            elif on and (m := _ATTR.match(line)):
                out[m.group(1)] = m.group(2)
            else:
                on = False
        return out
