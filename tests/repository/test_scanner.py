"""The scanner: which model directories, versions and config files the repository holds."""
from __future__ import annotations

import os

import pytest

from gateway.config.profile import PROFILE_FILE
from gateway.repository.scanner import CONFIG_FILE, MODEL_FILE, scan


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_models_versions_and_configs_are_found_and_the_rest_ignored(tmp_path):
    _touch(tmp_path / "b" / "1" / MODEL_FILE)
    _touch(tmp_path / "b" / "10" / MODEL_FILE, b"xx")
    _touch(tmp_path / "b" / "2" / "weights.bin")              # a version directory without model.onnx
    _touch(tmp_path / "b" / ".3" / MODEL_FILE)                # hidden
    _touch(tmp_path / "b" / CONFIG_FILE, b"labels: [a]\n")
    _touch(tmp_path / "a" / "1" / MODEL_FILE)
    (tmp_path / "empty").mkdir()
    _touch(tmp_path / ".cache" / "1" / MODEL_FILE)            # hidden model directory
    _touch(tmp_path / "README.md")                            # not a directory
    found = scan(tmp_path)
    assert list(found) == ["a", "b", "empty"]
    b = found["b"]
    assert (b.name, b.path) == ("b", tmp_path / "b") and sorted(b.versions) == ["1", "10"]
    assert b.versions["10"][0][1] == 2 and b.versions["10"][1] is None   # ((mtime_ns, size), no profile)
    assert b.config_fingerprint is not None and found["a"].config_fingerprint is None
    assert b.config_path == tmp_path / "b" / CONFIG_FILE and b.model_path("10") == tmp_path / "b" / "10" / MODEL_FILE
    assert found["empty"].versions == {}


def test_a_rewritten_file_changes_its_fingerprint(tmp_path):
    model = tmp_path / "m" / "1" / MODEL_FILE
    _touch(model, b"one")
    before = scan(tmp_path)["m"].versions["1"]
    _touch(model, b"three")
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    after = scan(tmp_path)["m"].versions["1"]
    assert after != before and after[0][1] == 5
    _touch(tmp_path / "m" / "1" / PROFILE_FILE, b"1234567")      # a profile beside it: a change too
    with_profile = scan(tmp_path)["m"].versions["1"]
    assert with_profile[0] == after[0] and with_profile[1][1] == 7


def test_a_missing_root_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        scan(tmp_path / "absent")
