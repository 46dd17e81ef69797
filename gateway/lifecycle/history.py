"""Version history: every load, failed load, unload, traffic-weight change, in-place policy
update, promotion and rollback of a model's versions, with its time, source and reason.

With a state directory (setting ``state_dir``) events go to an SQLite file there,
``history.sqlite3`` (WAL journal), and outlive restarts; without one they are kept in memory.
Either way at most ``max_events`` (100,000 by default; about 200 bytes each in memory, a little
less on disk) are kept, the oldest leaving first (pruned every 1,000 inserts on disk).

Recording never fails serving: an SQLite error (a full disk, a read-only directory) is logged
once and the history goes on in memory from then (``degraded`` says so). Events are recorded
where they happen (the repository manager on the event loop, admin operations), a few per
reload; an insert is one small transaction (well under a millisecond on a local disk).

Schema (``events``): ``id INTEGER PRIMARY KEY, t_unix_s REAL, model TEXT, version TEXT,
kind TEXT, detail TEXT, source TEXT`` — kinds as :data:`gateway.api.history.HISTORY_KINDS`.
"""
from __future__ import annotations

import collections
import logging
import pathlib
import sqlite3
import threading
import time

from ..api.history import HistoryEvent

log = logging.getLogger("gateway.lifecycle")

FILE_NAME = "history.sqlite3"
MAX_DETAIL_CHARS = 2000
_PRUNE_EVERY = 1000


class VersionHistory:
    def __init__(self, state_dir: pathlib.Path | None = None, *, max_events: int = 100_000) -> None:
        self.max_events = max_events
        self._lock = threading.Lock()
        self._memory: collections.deque[HistoryEvent] = collections.deque(maxlen=max_events)
        self._db: sqlite3.Connection | None = None
        self._inserts = 0
        self.degraded = ""          # why the history went to memory (empty: as configured)
        self.path = state_dir / FILE_NAME if state_dir is not None else None
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, t_unix_s REAL, "
                           "model TEXT, version TEXT, kind TEXT, detail TEXT, source TEXT)")
                db.execute("CREATE INDEX IF NOT EXISTS events_model ON events (model, id)")
                self._db = db
            except (sqlite3.Error, OSError) as exc:
                self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self.degraded = f"{type(exc).__name__}: {exc}"
        log.error("version history: %s is not usable (%s); keeping events in memory from now on",
                  self.path, self.degraded, extra={"event": "history.degraded"})
        db, self._db = self._db, None
        if db is not None:
            try:
                db.close()
            except sqlite3.Error:
                pass

    def record(self, model: str, version: str, kind: str, detail: str, source: str) -> None:
        event = HistoryEvent(time.time(), model, version, kind, detail[:MAX_DETAIL_CHARS], source)
        with self._lock:
            if self._db is not None:
                try:
                    self._db.execute("INSERT INTO events (t_unix_s, model, version, kind, detail, source) "
                                     "VALUES (?, ?, ?, ?, ?, ?)", _row(event))
                    self._inserts += 1
                    if self._inserts % _PRUNE_EVERY == 0:
                        self._db.execute("DELETE FROM events WHERE id <= "
                                         "(SELECT MAX(id) FROM events) - ?", (self.max_events,))
                    return
                except sqlite3.Error as exc:
                    self._fail(exc)
            self._memory.append(event)

    def events(self, model: str = "", limit: int = 100) -> list[HistoryEvent]:
        """The newest ``limit`` events (of ``model``, or of all), newest first."""
        limit = max(0, min(limit, self.max_events))
        with self._lock:
            if self._db is None:
                return [e for e in reversed(self._memory) if not model or e.model == model][:limit]
            try:
                if model:
                    rows = self._db.execute("SELECT t_unix_s, model, version, kind, detail, source FROM events "
                                            "WHERE model = ? ORDER BY id DESC LIMIT ?", (model, limit)).fetchall()
                else:
                    rows = self._db.execute("SELECT t_unix_s, model, version, kind, detail, source FROM events "
                                            "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
            except sqlite3.Error as exc:
                self._fail(exc)
                return []
        return [HistoryEvent(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _row(e: HistoryEvent) -> tuple:
    return (e.t_unix_s, e.model, e.version, e.kind, e.detail, e.source)
