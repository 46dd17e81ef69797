"""The supervisor's run directory: what its workers read (settings, restart counts) and where
their private sockets live."""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile

SETTINGS = "settings.json"
STATE = "state.json"
PID = "supervisor.pid"
PREFIX = "gateway-workers-"
#: A unix socket's path must fit ``sockaddr_un`` (108 bytes on Linux, with its NUL).
MAX_SOCKET_PATH = 100


@dataclasses.dataclass(frozen=True)
class State:
    """What the supervisor says of its workers: how many, and each one's restarts so far."""

    workers: int
    restarts: tuple[int, ...]


def make() -> pathlib.Path:
    """A fresh private directory (0700), under ``$TMPDIR`` unless its sockets' paths would be too
    long, naming this process as its owner; the directories of supervisors that died without
    removing theirs (SIGKILL) are removed first."""
    root = pathlib.Path(tempfile.mkdtemp(prefix=PREFIX))
    if len(str(socket_path(root, 99))) > MAX_SOCKET_PATH:
        root.rmdir()
        root = pathlib.Path(tempfile.mkdtemp(prefix=PREFIX, dir="/tmp"))
    (root / PID).write_text(str(os.getpid()))
    sweep(root.parent, keep=root)
    return root


def sweep(parent: pathlib.Path, keep: pathlib.Path) -> None:
    """Remove the run directories under ``parent`` that are this user's and whose supervisor
    is no longer running."""
    for path in parent.glob(PREFIX + "*"):
        try:
            if path == keep or path.stat().st_uid != os.getuid():
                continue
            pid = int((path / PID).read_text())
        except (OSError, ValueError):
            continue  # (not one of ours, or being made right now)
        try:
            os.kill(pid, 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(path, ignore_errors=True)


def socket_path(root: pathlib.Path, index: int) -> pathlib.Path:
    return root / f"w{index}.sock"


def write_state(root: pathlib.Path, state: State) -> None:
    """Replace the state file at once (a reader sees the old or the new one, whole)."""
    tmp = root / (STATE + ".tmp")
    tmp.write_text(json.dumps({"workers": state.workers, "restarts": list(state.restarts)}))
    os.replace(tmp, root / STATE)


def read_state(root: pathlib.Path) -> State:
    data = json.loads((root / STATE).read_text())
    return State(int(data["workers"]), tuple(int(r) for r in data["restarts"]))
