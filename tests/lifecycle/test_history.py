"""The version history: persisted in SQLite across instances, bounded, and never failing the caller."""
from __future__ import annotations

import sqlite3

from gateway.lifecycle import history as history_mod
from gateway.lifecycle.history import FILE_NAME, VersionHistory


def test_events_outlive_the_instance_newest_first_and_by_model(tmp_path):
    h = VersionHistory(tmp_path)
    h.record("a", "1", "loaded", "found in the repository", "repository")
    h.record("b", "1", "loaded", "found in the repository", "repository")
    h.record("a", "", "weights", "1: 0.9, 2: 0.1", "config")
    h.close()
    again = VersionHistory(tmp_path)
    assert [(e.model, e.kind) for e in again.events()] == [("a", "weights"), ("b", "loaded"), ("a", "loaded")]
    assert [e.kind for e in again.events("a", limit=1)] == ["weights"]
    assert again.events("a")[0].source == "config" and again.events()[0].t_unix_s > 0
    assert (tmp_path / FILE_NAME).exists() and not again.degraded


def test_the_history_is_bounded_in_memory_and_on_disk(tmp_path, monkeypatch):
    mem = VersionHistory(None, max_events=100)
    for i in range(250):
        mem.record("m", str(i), "loaded", "x", "repository")
    assert len(mem.events(limit=10_000)) == 100 and mem.events()[0].version == "249"
    monkeypatch.setattr(history_mod, "_PRUNE_EVERY", 50)
    disk = VersionHistory(tmp_path, max_events=100)
    for i in range(250):
        disk.record("m", str(i), "loaded", "y" * 5000, "repository")          # details are cut too
    rows = sqlite3.connect(str(tmp_path / FILE_NAME)).execute("SELECT COUNT(*), MAX(LENGTH(detail)) FROM events")
    count, longest = rows.fetchone()
    assert count <= 150 and longest == history_mod.MAX_DETAIL_CHARS


def test_an_unusable_state_dir_keeps_the_history_in_memory(tmp_path):
    (tmp_path / "state").write_text("a file where the directory should be")
    h = VersionHistory(tmp_path / "state")
    h.record("m", "1", "loaded", "x", "repository")
    assert h.degraded and [e.version for e in h.events()] == ["1"]


def test_a_failing_database_switches_to_memory_and_says_so(tmp_path, caplog):
    h = VersionHistory(tmp_path)
    h.record("m", "1", "loaded", "x", "repository")
    h._db.close()                                    # as if the file went away under it
    h.record("m", "2", "loaded", "x", "repository")  # never raises
    assert h.degraded and [e.version for e in h.events()] == ["2"]
    assert any(getattr(r, "event", "") == "history.degraded" for r in caplog.records)
