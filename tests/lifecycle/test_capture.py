"""The capture writer: its format round-trips, inputs are dropped unless configured, masks zero
their positions, files rotate within their caps, and a failing disk stops the capture only."""
from __future__ import annotations

import json
import time

import numpy as np

from gateway.api import InferRequest, InferResponse, Status
from gateway.api.feedback import FeedbackLabel
from gateway.config.settings import CaptureSettings
from gateway.core.context import Attempt
from gateway.lifecycle.capture import RequestCapture, decode_tensor, encode_tensor


def _answer(cap, i: int, x: np.ndarray, model="m"):
    req = InferRequest(model=model, inputs={"features": x, "ids": np.arange(3, dtype=np.int64)},
                       request_id=f"r{i}", t_received_ns=time.monotonic_ns())
    resp = InferResponse(f"r{i}", model, "1", {"probabilities": np.full((1, 3), 0.25, np.float32)}, f"{model}@1",
                         predicted_label=["a"])
    cap.on_answer(req, Attempt(f"{model}@1"), Status.OK, resp, 0, time.monotonic_ns())


def _lines(directory):
    out = []
    for f in sorted(directory.glob("capture-*.jsonl")):
        out.extend(json.loads(line) for line in f.read_text().splitlines())
    return out


def test_the_tensor_encoding_round_trips_every_dtype():
    for dtype in ("float32", "float64", "int64", "int8", "uint16", "bool", "float16"):
        a = (np.arange(12) % 3).astype(dtype).reshape(3, 4)
        assert np.array_equal(decode_tensor(json.loads(json.dumps(encode_tensor(a)))), a)
    masked = encode_tensor(np.ones((2, 5), np.float32), mask=[1, 3, 99])
    assert masked["masked"] == [1, 3] and decode_tensor(masked)[:, [1, 3]].sum() == 0


def test_inputs_are_dropped_unless_kept_or_masked_and_labels_of_captured_requests_follow(tmp_path):
    settings = CaptureSettings(enabled=True, sample_ratio=1.0,
                               inputs={"m": {"features": {"mask": [0]}}, "k": {"features": "keep"}})
    cap = RequestCapture(settings, tmp_path)
    x = np.arange(4, dtype=np.float32).reshape(1, 4) + 1
    _answer(cap, 1, x)
    _answer(cap, 2, x, model="k")
    cap.on_labels([FeedbackLabel("r1", label="a"), FeedbackLabel("never-captured", index=1),
                   FeedbackLabel("r1", index=2, row=3)])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(_lines(tmp_path)) < 4:
        time.sleep(0.02)
    cap.stop()
    first, second, label, row_label = _lines(tmp_path)
    assert first["kind"] == "request" and first["version"] == "1" and first["status"] == "OK"
    assert first["inputs"]["ids"] == {"dtype": "int64", "shape": [3], "dropped": True}      # the default: drop
    assert decode_tensor(first["inputs"]["features"]).tolist() == [[0, 2, 3, 4]]          # position 0 masked
    assert decode_tensor(second["inputs"]["features"]).tolist() == [[1, 2, 3, 4]]         # kept
    assert decode_tensor(second["outputs"]["probabilities"]).shape == (1, 3)
    assert label == {"kind": "label", "t_unix_s": label["t_unix_s"], "request_id": "r1", "class_label": "a"}
    assert row_label == {"kind": "label", "t_unix_s": label["t_unix_s"], "request_id": "r1", "class_index": 2,
                         "row": 3}
    assert cap.captured == 2 and not cap.stopped


def test_files_rotate_within_their_caps(tmp_path):
    cap = RequestCapture(CaptureSettings(enabled=True, sample_ratio=1.0, max_file_bytes=4096, max_files=3,
                                         default_inputs="keep"), tmp_path)
    for i in range(200):
        _answer(cap, i, np.zeros((1, 64), np.float32))
    cap.stop()
    files = list(tmp_path.glob("capture-*.jsonl"))
    assert len(files) == 3 and all(f.stat().st_size <= 4096 + 2000 for f in files)
    assert _lines(tmp_path)[-1]["request_id"] == "r199"


def test_a_full_disk_stops_the_capture_and_nothing_else(tmp_path, caplog):
    cap = RequestCapture(CaptureSettings(enabled=True, sample_ratio=1.0), tmp_path)

    def full(line):
        raise OSError(28, "No space left on device")
    cap._write = full
    _answer(cap, 1, np.zeros((1, 4), np.float32))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not cap.stopped:
        time.sleep(0.02)
    assert "No space left" in cap.stopped
    _answer(cap, 2, np.zeros((1, 4), np.float32))                    # returns at once, writes nothing
    cap.stop()
    assert any(getattr(r, "event", "") == "capture.stopped" for r in caplog.records)


def test_a_full_queue_drops_and_counts(tmp_path):
    cap = RequestCapture(CaptureSettings(enabled=True, sample_ratio=1.0, queue=1), tmp_path)
    cap._queue.put_nowait(("labels", 0.0, []))                        # the writer may have taken it already
    for i in range(50):
        _answer(cap, i, np.zeros((1, 4), np.float32))
    assert cap.dropped > 0
    cap.stop()
