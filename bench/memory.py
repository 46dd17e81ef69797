"""Resident memory of a gateway process over time through bursts of large requests.

    python bench/memory.py [--rounds 2] [--png bench/memory_rss.png] [--baseline-bin DIR]

One fresh ``gateway serve`` process per arm on the demo models (loopback, an ephemeral port),
its RSS sampled every 50 ms from /proc while this script sends, per round:

  60mb       twenty 60 MB requests to the regressor at once (near max_message_bytes)
  100k_rows  eight 100,000-row requests to the classifier (6.4 MB each), four at a time
  wide_4096  sixteen 4,096-row requests to wide_mlp (4 MB each), four at a time
  small      batch-1 requests to every model for ``--small-s`` seconds

after a warm-up of small requests (its end is the post-warm-up RSS). Arms: ``gateway`` (this
checkout, its defaults) and, with ``--baseline-bin``, ``baseline``: another install's ``gateway``
console script (as bench/ab_commits.py takes it), run one after the other. Target (issue 11):
RSS at the end of each small phase within 1.25 x the post-warm-up RSS.

The last stdout line is one JSON object: per arm and phase the peak and end RSS (MB), every
call's status counts, and the final / post-warm-up ratio; ``--png`` plots every arm's RSS over
time with the phases marked (matplotlib: the ``bench`` extra).
"""
from __future__ import annotations

import argparse
import collections
import json
import pathlib
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

BENCH = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from run_serving import Server, log  # noqa: E402  (bench/ is not a package)

from gateway._proto import gateway_pb2 as pb  # noqa: E402
from gateway._proto import gateway_pb2_grpc as pb_grpc  # noqa: E402
from gateway.client import from_numpy  # noqa: E402

MIB = 1 << 20
TARGET = 1.25
# (phase, model, rows, width, requests, at once)
BURSTS = (("60mb", "regressor", 60_000_000 // 32, 8, 20, 20),
          ("100k_rows", "classifier", 100_000, 16, 8, 4),
          ("wide_4096", "wide_mlp", 4096, 256, 16, 4))
SMALL = (("classifier", 16), ("regressor", 8), ("wide_mlp", 256))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * 4096 / MIB


class Sampler(threading.Thread):
    def __init__(self, pid: int, period_s: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.period_s = pid, period_s
        self.t0 = time.monotonic()
        self.samples: list[tuple[float, float]] = []
        self.phases: list[tuple[str, float, float]] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                self.samples.append((time.monotonic() - self.t0, rss_mb(self.pid)))
            except OSError:
                return
            self._done.wait(self.period_s)

    def stop(self) -> None:
        self._done.set()
        self.join(5)

    def phase(self, name: str, began: float) -> dict:
        end = time.monotonic() - self.t0
        self.phases.append((name, began, end))
        inside = [mb for t, mb in self.samples if began <= t <= end] or [rss_mb(self.pid)]
        return {"peak_mb": round(max(inside), 1), "end_mb": round(rss_mb(self.pid), 1)}


def _request(model: str, rows: int, width: int) -> pb.PredictRequest:
    x = np.random.default_rng(rows).random((rows, width), dtype=np.float32)
    return pb.PredictRequest(model=model, inputs=[from_numpy("features", x)])


def run_arm(label: str, argv0: list[str], args, repo: pathlib.Path, logdir: pathlib.Path) -> dict:
    server = Server(label, argv0 + ["serve", "--port", "{port}", "--model-repository", str(repo)],
                    {"GATEWAY_GRACE_PERIOD_S": "1", "GATEWAY_ADMIN_PORT": "0", "GATEWAY_RELOAD_INTERVAL_S": "0"},
                    logdir)
    server.start()
    options = [("grpc.max_send_message_length", 64 * MIB), ("grpc.max_receive_message_length", 64 * MIB),
               ("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.insecure_channel(server.address, options=options) for _ in range(4)]
    stubs = [pb_grpc.GatewayStub(c) for c in channels]
    small = [_request(m, 1, w) for m, w in SMALL]
    statuses: dict[str, collections.Counter] = {}
    try:
        server.wait_serving()
        sampler = Sampler(server.proc.pid)
        sampler.start()

        def small_for(seconds: float) -> None:
            end = time.monotonic() + seconds
            i = 0
            while time.monotonic() < end:
                stubs[i % 4].Predict(small[i % 3], timeout=30)
                i += 1

        began = 0.0
        small_for(args.warmup_s)
        out: dict = {"post_warmup_mb": round(rss_mb(server.proc.pid), 1), "rounds": []}
        sampler.phase("warm-up", began)
        for r in range(args.rounds):
            phases: dict = {}
            for name, model, rows, width, count, at_once in BURSTS:
                began = time.monotonic() - sampler.t0
                message = _request(model, rows, width)
                counts: collections.Counter = collections.Counter()

                def call(i: int, message=message, counts=counts) -> None:
                    try:
                        stubs[i % 4].Predict(message, timeout=300)
                        counts["OK"] += 1
                    except grpc.RpcError as exc:
                        counts[exc.code().name] += 1

                with ThreadPoolExecutor(at_once) as pool:
                    list(pool.map(call, range(count)))
                del message
                phases[name] = sampler.phase(f"{name} ({r + 1})", began)
                statuses.setdefault(name, collections.Counter()).update(counts)
            began = time.monotonic() - sampler.t0
            small_for(args.small_s)
            phases["small"] = sampler.phase(f"small ({r + 1})", began)
            phases["small"]["over_post_warmup"] = round(phases["small"]["end_mb"] / out["post_warmup_mb"], 3)
            out["rounds"].append(phases)
            log(f"{label} round {r + 1}: " + ", ".join(f"{k} peak {v['peak_mb']:.0f} end {v['end_mb']:.0f} MB"
                                                      for k, v in phases.items()))
        sampler.stop()
        out["final_over_post_warmup"] = out["rounds"][-1]["small"]["over_post_warmup"]
        out["met"] = all(p["small"]["over_post_warmup"] <= TARGET for p in out["rounds"])
        out["statuses"] = {k: dict(v) for k, v in statuses.items()}
        out["samples"] = [(round(t, 2), round(mb, 1)) for t, mb in sampler.samples]
        out["phases"] = [(n, round(a, 2), round(b, 2)) for n, a, b in sampler.phases]
        return out
    finally:
        for c in channels:
            c.close()
        server.stop()


def plot(arms: dict, path: pathlib.Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(arms), 1, figsize=(11, 3.6 * len(arms)), squeeze=False, sharey=True)
    for ax, (label, res) in zip(axes[:, 0], arms.items()):
        t, mb = zip(*res["samples"])
        ax.plot(t, mb, lw=1.2, color="tab:blue")
        base = res["post_warmup_mb"]
        ax.axhline(base, color="grey", lw=0.8, ls="--", label=f"post-warm-up {base:.0f} MB")
        ax.axhline(TARGET * base, color="tab:green", lw=0.8, ls=":", label=f"{TARGET} x post-warm-up")
        bursts = [(n, a, b) for n, a, b in res["phases"] if not n.startswith(("small", "warm-up"))]
        top = max(mb) * 1.6
        for i, (name, a, b) in enumerate(bursts):
            ax.axvspan(a, b, color=("tab:orange", "tab:red", "tab:purple")[i % 3], alpha=0.12)
            ax.text(a, top / 1.35 ** (i % 3), name.split(" ")[0], fontsize=7, va="top")
        ax.set_ylim(0.8 * min(mb), top)
        ax.set_title(f"{label}: end {res['rounds'][-1]['small']['end_mb']:.0f} MB = "
                     f"{res['final_over_post_warmup']:.2f} x post-warm-up", fontsize=10)
        ax.set_ylabel("RSS (MB)")
        ax.set_yscale("log")
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("seconds since the server was SERVING (bursts shaded)")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warmup-s", type=float, default=4.0)
    p.add_argument("--small-s", type=float, default=10.0)
    p.add_argument("--baseline-bin", help="bin/ of another install whose `gateway` to run as the baseline arm")
    p.add_argument("--png", help="write the RSS-over-time plot here")
    p.add_argument("--json-out", help="also write every arm's samples and phases (JSON) here")
    p.add_argument("--title", default="gateway RSS through bursts of large requests")
    args = p.parse_args(argv)
    if args.rounds < 1:
        raise SystemExit("memory.py: --rounds >= 1")
    logdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-memory-"))
    from gateway.demo import write_demo_repository

    repo = write_demo_repository(logdir / "models")
    arms: dict = {}
    if args.baseline_bin:
        arms["baseline"] = run_arm("baseline", [str(pathlib.Path(args.baseline_bin) / "gateway")], args, repo, logdir)
    arms["gateway"] = run_arm("gateway", [sys.executable, "-m", "gateway"], args, repo, logdir)
    if args.json_out:
        pathlib.Path(args.json_out).write_text(json.dumps(arms) + "\n")
    if args.png:
        plot(arms, pathlib.Path(args.png), args.title)
    summary = {"bench": "memory", "date": time.strftime("%Y-%m-%d %H:%M"), "target": TARGET,
               "server_logs": str(logdir),
               "arms": {k: {key: v for key, v in res.items() if key not in ("samples", "phases")}
                        for k, res in arms.items()}}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
