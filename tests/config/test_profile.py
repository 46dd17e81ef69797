"""The reference profile file format: what is written reads back the same, and every class of
unusable file is refused with ProfileError naming the file and what is wrong."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from gateway.config.profile import (CONFIDENCE_BINS, FeatureProfile, OutputProfile, ProfileError,
                                    ReferenceProfile, load_profile)


def _features(f: int = 3, b: int = 4, seed: int = 0) -> FeatureProfile:
    rng = np.random.default_rng(seed)
    edges = np.sort(rng.normal(size=(f, b + 1)), axis=1)
    return FeatureProfile(edges=edges, histogram=rng.integers(0, 50, (f, b + 2)), count=np.full(f, 100),
                          mean=rng.normal(size=f), std=rng.random(f) + 0.1, min=edges[:, 0], max=edges[:, -1],
                          nan_count=np.zeros(f, np.int64), inf_count=np.ones(f, np.int64))


def _classifier_profile() -> ReferenceProfile:
    return ReferenceProfile(
        model="m", version="2", rows=100, inputs={"features": _features(), "extra:0": _features(1, 4, 1)},
        output=OutputProfile("classifier", "probabilities", class_counts=np.array([60, 30, 10]),
                             top1_histogram=np.arange(CONFIDENCE_BINS, dtype=np.int64),
                             top1_moments=np.array([0.7, 0.1])),
        labels_rows=100, accuracy=0.9, source_file="ref.npz", source_sha256="ab" * 32, created_unix_s=1.5)


def _same(a: FeatureProfile, b: FeatureProfile) -> None:
    for k in ("edges", "histogram", "count", "mean", "std", "min", "max", "nan_count", "inf_count"):
        assert np.array_equal(getattr(a, k), getattr(b, k)) and getattr(a, k).dtype == getattr(b, k).dtype, k


def test_a_classifier_profile_reads_back_as_written(tmp_path):
    p = _classifier_profile()
    p.save(tmp_path / "profile.npz")
    q = load_profile(tmp_path / "profile.npz")
    assert (q.model, q.version, q.rows, q.labels_rows, q.accuracy, q.mae, q.source_sha256, q.created_unix_s) == \
        ("m", "2", 100, 100, 0.9, None, "ab" * 32, 1.5)
    assert list(q.inputs) == ["features", "extra:0"] and q.bins == 4
    for name in p.inputs:
        _same(p.inputs[name], q.inputs[name])
    assert q.output.kind == "classifier" and q.output.name == "probabilities"
    assert np.array_equal(q.output.class_counts, [60, 30, 10])
    assert np.array_equal(q.output.top1_histogram, np.arange(CONFIDENCE_BINS))
    assert q.output.top1_moments.tolist() == [0.7, 0.1]
    assert not list(tmp_path.glob(".*.tmp"))          # written through a temporary file, renamed


def test_a_regressor_profile_reads_back_as_written(tmp_path):
    p = ReferenceProfile(model="r", version="1", rows=10, inputs={"x": _features()},
                         output=OutputProfile("regressor", "y", values=_features(2, 4, 3)), mae=0.5, rmse=0.75)
    p.save(tmp_path / "p.npz")
    q = load_profile(tmp_path / "p.npz")
    assert q.output.kind == "regressor" and (q.mae, q.rmse) == (0.5, 0.75)
    _same(p.output.values, q.output.values)


def _rewrite(path: pathlib.Path, **changes) -> None:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    np.savez(path, **arrays)


def _meta(**changes) -> np.ndarray:
    meta = {"model": "m", "version": "2", "rows": 100, "inputs": ["features", "extra:0"],
            "output": {"kind": "classifier", "name": "probabilities"}}
    meta.update(changes)
    return np.array(json.dumps(meta))


@pytest.mark.parametrize("changes, what", [
    ({"format": np.array("gateway.profile/0")}, "format is not"),
    ({"format": None}, "format is not"),
    ({"meta": np.array("{not json")}, "meta is not a profile's"),
    ({"meta": _meta(inputs=None)}, "meta is not a profile's"),
    ({"meta": _meta(output={"kind": "ranker"})}, "output kind 'ranker'"),
    ({"meta": _meta(inputs=["features", "features"])}, "named twice"),
    ({"input0_edges": None}, "no array 'input0_edges'"),
    ({"input0_edges": np.zeros((3, 5), np.float32)}, "input0_edges is float32"),
    ({"input0_edges": np.zeros((5,))}, "must be [features, bins + 1]"),
    ({"input0_histogram": np.zeros((3, 5), np.int64)}, "input0_histogram must be [3, 6]"),
    ({"input0_mean": np.zeros(2)}, "input0_mean must be [3]"),
    ({"input0_edges": np.array([[0.0, 1, 2, 3, np.inf]] * 3)}, "finite and non-decreasing"),
    ({"input0_edges": np.array([[0.0, 1, 0.5, 3, 4]] * 3)}, "finite and non-decreasing"),
    ({"input0_histogram": -np.ones((3, 6), np.int64)}, "must not be negative"),
    ({"output_class_counts": None}, "needs int64 output_class_counts"),
    ({"output_top1_histogram": np.zeros(5, np.int64)}, "needs int64 output_top1_histogram"),
    ({"output_top1_moments": np.array([0.5, -1.0])}, "output_top1_moments must be float64 [2]"),
    ({"output_top1_moments": np.array([0.5])}, "output_top1_moments must be float64 [2]"),
])
def test_an_unusable_profile_is_refused_saying_what_is_wrong(tmp_path, changes, what):
    path = tmp_path / "profile.npz"
    _classifier_profile().save(path)
    _rewrite(path, **changes)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert str(path) in str(info.value) and what in str(info.value)
    assert len(str(info.value)) < 600


@pytest.mark.parametrize("content", [b"", b"not a zip archive", b"PK\x03\x04" + b"\0" * 40])
def test_bytes_that_are_no_archive_are_refused(tmp_path, content):
    path = tmp_path / "profile.npz"
    path.write_bytes(content)
    with pytest.raises(ProfileError, match="not a profile archive"):
        load_profile(path)


def test_a_pickled_array_is_refused_not_unpickled(tmp_path):
    path = tmp_path / "profile.npz"
    _classifier_profile().save(path)
    _rewrite(path, input0_mean=np.array([object()] * 3, dtype=object))
    with pytest.raises(ProfileError, match="not a profile archive"):
        load_profile(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "absent.npz")

