"""Settings of gRPC's C core that the gateway needs, applied by ``gateway/__init__.py`` before
anything imports grpc: core reads ``GRPC_EXPERIMENTS`` once, when grpc is imported.

``optimization_04``, a core rollout on by default in grpcio 1.82.1 to 1.85.3 (1.81.2 and older
do not have it), makes a server cancel calls by itself when many streams are reset while it has
calls queued: under a flood of calls with millisecond deadlines it answers some CANCELLED
(``grpc-status: 1``, message ``CANCELLED``) before their deadline, fresh calls with a 10 s
deadline on the same connection included, without the handler ever seeing them. A ten-line
grpc.aio echo server shows the same; with the experiment off, neither does
(tests/e2e/test_deadline_flood.py). So it is turned off, unless ``GRPC_EXPERIMENTS`` already
names it (either way): the operator's word wins.
"""
from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

#: Core experiments the gateway turns off.
DISABLED_EXPERIMENTS = ("optimization_04",)

#: Set by :func:`apply`: experiments it could not turn off because grpc was imported first.
too_late: tuple[str, ...] = ()


def apply(environ: MutableMapping[str, str] = os.environ) -> tuple[str, ...]:
    """Add ``-name`` to ``GRPC_EXPERIMENTS`` for each of :data:`DISABLED_EXPERIMENTS` it does not
    name yet; returns those added. When grpc is already imported, the change is made all the same
    (for child processes) and recorded in :data:`too_late`."""
    global too_late
    given = [e.strip() for e in environ.get("GRPC_EXPERIMENTS", "").split(",") if e.strip()]
    named = {e.lstrip("-") for e in given}
    added = tuple(name for name in DISABLED_EXPERIMENTS if name not in named)
    if added:
        environ["GRPC_EXPERIMENTS"] = ",".join(given + [f"-{name}" for name in added])
        if environ is os.environ and "grpc" in sys.modules:
            too_late = added
    return added
