"""The supervisor's hold on the port, and its refusal of one it cannot have."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from gateway.adapters.grpc_v1.server import ListenError, check_listenable
from gateway.workers.supervisor import BACKOFF_MAX_S, BACKOFF_MIN_S, BACKOFF_RESET_S, reserve_port, restart_delay

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT semantics: Linux")


def _reuseport_listener(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def test_port_0_is_resolved_once_and_workers_listeners_can_join_it():
    port, held = reserve_port("127.0.0.1", 0)
    try:
        assert port > 0
        a, b = _reuseport_listener(port), _reuseport_listener(port)  # two workers
        check_listenable("127.0.0.1", port, reuse_port=True)        # what a restarted worker checks
        with pytest.raises(ListenError, match="in use"):
            check_listenable("127.0.0.1", port)                     # anyone else: taken
        a.close(), b.close()
    finally:
        for s in held:
            s.close()


def test_a_port_something_else_listens_on_is_refused():
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(ListenError, match=f"127.0.0.1:{port}: address already in use"):
            reserve_port("127.0.0.1", port)
        proc = subprocess.run([sys.executable, "-m", "gateway", "serve", "--workers", "2", "--port", str(port),
                               "--admin-port", "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"gateway: cannot listen on 127.0.0.1:{port}: address already in use"


def test_a_missing_repository_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gateway", "serve", "--workers", "2", "--port", "0",
                           "--admin-port", "0", "--model-repository", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"gateway: model repository {tmp_path / 'nope'} is not a directory"


def test_restarts_back_off_while_a_worker_keeps_dying_and_start_over_once_it_lived():
    delays, delay = [], None
    for _ in range(10):
        delay = restart_delay(delay, lived_s=2.0)
        delays.append(delay)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    assert (BACKOFF_MIN_S, BACKOFF_MAX_S) == (0.5, 30.0)
    assert restart_delay(30.0, lived_s=BACKOFF_RESET_S) == BACKOFF_MIN_S
    assert restart_delay(4.0, lived_s=BACKOFF_RESET_S - 1) == 8.0


def test_run_directories_of_dead_supervisors_are_swept(tmp_path, monkeypatch):
    from gateway.workers import rundir

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # (TMPDIR is read once, then cached)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / (rundir.PREFIX + "stale")
    stale.mkdir()
    (stale / rundir.PID).write_text(str(dead.pid))
    alive = tmp_path / (rundir.PREFIX + "alive")
    alive.mkdir()
    (alive / rundir.PID).write_text(str(os.getppid()))
    unknown = tmp_path / (rundir.PREFIX + "unknown")  # no pid file: not touched
    unknown.mkdir()
    root = rundir.make()
    assert root.parent == tmp_path and (root / rundir.PID).read_text() == str(os.getpid())
    assert not stale.exists() and alive.exists() and unknown.exists()
