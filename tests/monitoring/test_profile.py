"""Building a reference profile: a real onnxruntime session of the demo models run over the
data; statistics checked against plain numpy on the same rows; data files and bad input."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.config.model import load_model_config
from gateway.monitoring.profile import (ProfileDataError, build_profile, feature_profile, read_data,
                                        read_labels)
from gateway.runtime.session import OnnxModel
from tests.conftest import save_model
from tests.core.serving import model_config, unbatched


def _demo(demo_models, name: str) -> OnnxModel:
    config = load_model_config(demo_models / name / "config.yaml")
    return OnnxModel(demo_models / name / "1" / "model.onnx", name, "1", config, ["cpu"])


def _bin(x: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Counts of x in [e_i, e_i+1) (the last bin closed), with under- and overflow, the obvious way."""
    out = np.zeros(len(e) + 1, np.int64)
    for v in x:
        if v < e[0]:
            out[0] += 1
        elif v > e[-1]:
            out[-1] += 1
        elif v == e[-1]:
            out[-2] += 1
        else:
            out[1 + int(np.searchsorted(e, v, side="right")) - 1] += 1
    return out


def test_input_statistics_are_the_reference_rows_quantiles_and_counts():
    rng = np.random.default_rng(1)
    x = np.c_[rng.normal(size=3000), rng.exponential(size=3000), rng.integers(0, 3, 3000)]
    fp = feature_profile(x, bins=8)
    for f in range(3):
        col = x[:, f]
        e = fp.edges[f]
        if f < 2:
            assert np.allclose(e, np.quantile(col, np.linspace(0, 1, 9)))
        assert e[0] == col.min() and e[-1] == col.max()
        assert np.array_equal(fp.histogram[f], _bin(col, e)) and fp.histogram[f, [0, -1]].tolist() == [0, 0]
    assert np.allclose(fp.mean, x.mean(0)) and np.allclose(fp.std, x.std(0, ddof=1))
    assert np.array_equal(fp.min, x.min(0)) and np.array_equal(fp.max, x.max(0))
    assert fp.count.tolist() == [3000] * 3 and fp.nan_count.tolist() == [0] * 3


def test_nan_and_inf_are_counted_apart_from_the_statistics():
    x = np.array([[1.0], [np.nan], [2.0], [np.inf], [3.0]])
    fp = feature_profile(x, bins=2)
    assert (fp.count[0], fp.nan_count[0], fp.inf_count[0], fp.mean[0], fp.min[0], fp.max[0]) == (3, 1, 1, 2.0, 1, 3)


def test_a_classifier_profile_counts_its_answers_and_scores_its_labels(demo_models):
    model = _demo(demo_models, "classifier")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2500, 16)).astype(np.float32)
    scores = model.run({"features": x})[0]
    predicted = scores.argmax(1)
    labels = np.where(rng.random(2500) < 0.8, predicted, (predicted + 1) % 3)
    p = build_profile(model, {"features": x}, labels=labels, bins=10, batch_rows=700)
    assert p.rows == 2500 and p.output.kind == "classifier" and p.output.name == "probabilities"
    assert np.array_equal(p.output.class_counts, np.bincount(predicted, minlength=3))
    top1 = scores.max(1)
    assert np.array_equal(p.output.top1_histogram, np.histogram(np.minimum(top1, np.nextafter(1, 0)), 20, (0, 1))[0])
    assert np.allclose(p.output.top1_moments, [top1.mean(), top1.std(ddof=1)])
    assert p.accuracy == pytest.approx(np.mean(labels == predicted)) and p.labels_rows == 2500
    names = np.array(model.config.labels)[labels]               # label names work as well as indices
    assert build_profile(model, {"features": x}, labels=names, class_names=model.config.labels).accuracy == p.accuracy


def test_a_regressor_profile_profiles_its_predictions_and_scores_its_targets(demo_models):
    model = _demo(demo_models, "regressor")
    x = np.random.default_rng(3).normal(size=(1000, 8)).astype(np.float32)
    y = model.run({"features": x})[0].reshape(1000, -1)
    target = y[:, 0] + np.random.default_rng(4).normal(size=1000)
    p = build_profile(model, {"features": x}, labels=target, bins=5)
    assert p.output.kind == "regressor" and p.output.values is not None
    assert np.allclose(p.output.values.mean, y.mean(0))
    err = y[:, 0].astype(np.float64) - target
    assert p.mae == pytest.approx(np.abs(err).mean()) and p.rmse == pytest.approx(np.sqrt((err ** 2).mean()))


@pytest.mark.parametrize("data, labels, what", [
    ({"features": np.zeros((10, 8), np.float32)}, None, "8 values a row, the model takes 16"),
    ({}, None, "no data for input 'features'"),
    ({"features": np.zeros((10, 16)), "other": np.zeros(10)}, None, "has no input 'other'"),
    ({"features": np.zeros((0, 16))}, None, "no rows"),
    ({"features": np.array([["a"] * 16] * 2)}, None, "not float32 values"),
    ({"features": np.zeros((4, 16))}, np.array([0, 1]), "2 labels for 4 rows"),
    ({"features": np.zeros((2, 16))}, np.array([0, 3]), "label 3 (row 2) is not a class in [0, 3)"),
    ({"features": np.zeros((2, 16))}, np.array(["approve", "maybe"]), "'maybe' (row 2) is neither"),
])
def test_data_that_cannot_be_profiled_says_why(demo_models, data, labels, what):
    model = _demo(demo_models, "classifier")
    with pytest.raises(ProfileDataError) as info:
        build_profile(model, data, labels=labels, class_names=model.config.labels)
    assert what in str(info.value)


def test_a_model_without_a_batch_dimension_is_refused(tmp_path):
    path = save_model(tmp_path / "u" / "1" / "model.onnx", unbatched())
    model = OnnxModel(path, "u", "1", model_config(), ["cpu"])
    with pytest.raises(ProfileDataError, match="no batch dimension"):
        build_profile(model, {"features": np.zeros((4, 3), np.float32)})


def test_data_files(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "x.npy", x)
    data, labels = read_data(tmp_path / "x.npy", ["features"])
    assert np.array_equal(data["features"], x) and labels is None
    np.savez(tmp_path / "d.npz", a=x, b=x[:, :1], labels=np.array([1, 0, 1, 1]))
    data, labels = read_data(tmp_path / "d.npz", ["a", "b"])
    assert set(data) == {"a", "b"} and labels.tolist() == [1, 0, 1, 1]
    (tmp_path / "h.csv").write_text("f0,f1,y,f2\n1,2,approve,3\n4,5,decline,6\n")
    data, labels = read_data(tmp_path / "h.csv", ["features"], label_column="y")
    assert data["features"].tolist() == [[1, 2, 3], [4, 5, 6]] and labels.tolist() == ["approve", "decline"]
    (tmp_path / "n.csv").write_text("1,2,0\n4,5,2.0\n")                # no header; labels by number
    data, labels = read_data(tmp_path / "n.csv", ["features"], label_column="2")
    assert data["features"].shape == (2, 2) and labels.dtype == np.float64
    (tmp_path / "l.txt").write_text("2\n0\n\n1\n")
    assert read_labels(tmp_path / "l.txt").tolist() == [2, 0, 1]


@pytest.mark.parametrize("name, content, kwargs, what", [
    ("a.csv", "", {}, "no rows"),
    ("b.csv", "f0,f1\n", {}, "no data rows"),
    ("c.csv", "1,2\n3\n", {}, "line 2 has 1 fields, the first has 2"),
    ("d.csv", "1,2\n3,x\n", {}, "line 2 has a field that is not a number"),
    ("e.csv", "a,b\n1,2\n", {"label_column": "z"}, "no column 'z'"),
    ("f.csv", "1,2\n", {"label_column": "5"}, "column 5 is not in [0, 2)"),
    ("g.csv", b"\xff\xfe1,2\n", {}, "cannot read as CSV"),
    ("h.csv", "1," + "9" * 70000 + "\n", {}, "cannot read as CSV"),
    ("i.parquet", "x", {}, "must be .npy, .npz or .csv"),
    ("j.npy", "not numpy", {}, "cannot read"),
])
def test_unreadable_data_files_are_named(tmp_path, name, content, kwargs, what):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ProfileDataError) as info:
        read_data(path, ["features"], **kwargs)
    assert what in str(info.value)


def test_a_npy_or_csv_file_needs_a_single_input_model(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 2)))
    with pytest.raises(ProfileDataError, match="use .npz"):
        read_data(tmp_path / "x.npy", ["a", "b"])
