"""``gateway profile build``: runs a model version over reference data and writes its profile
(the format is :mod:`gateway.config.profile`'s).

Input statistics come from the same native kernel the live statistics use, fed all the
reference rows as its warm-up, so the profile's edges are the quantiles of the reference data
and its histogram bins exactly as the live one will. Outputs: for classifiers, the predicted
class and top-1 probability of every row (the live confidence statistics' kernel; accuracy
when labels are given); for regressors, the first output's values (MAE and RMSE when targets
are given).

Data files: ``.npy`` (one array: the model's only input), ``.npz`` (one array per input name,
optionally ``labels``), ``.csv`` (numeric columns of the model's only input; a first row that
is not numeric is a header; ``label_column`` names or numbers the column holding labels).
Labels may also come from their own file (``.npy``, or text with one label per line). Class
labels are class indices or the model's label names.
"""
from __future__ import annotations

import csv
import hashlib
import math
import pathlib
import time
import warnings
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from .. import kernels
from ..api import TensorSpec
from ..config.profile import CONFIDENCE_BINS, FeatureProfile, OutputProfile, ReferenceProfile

MAX_CSV_FIELD_CHARS = 1 << 16  # longer fields are refused (a CSV with no newlines at all, say)


class ProfileDataError(ValueError):
    """Reference data that cannot be profiled; the message says what is wrong."""


class ProfiledModel(Protocol):
    """What a profile needs of a model version (an ``OnnxModel`` is one)."""

    name: str
    version: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @property
    def classifier_output(self) -> str | None: ...

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> list[np.ndarray]: ...


def feature_profile(rows: np.ndarray, bins: int) -> FeatureProfile:
    """Reference statistics of ``rows[n, features]``: quantile edges, histogram, moments."""
    n, width = rows.shape
    fs = kernels.FeatureStats(width, n_bins=bins, warmup_rows=max(n, 1))
    fs.observe(rows)
    st = fs.state()
    edges = st["edges"]
    if edges is None:  # (no rows: the kernel never froze its edges)
        raise ProfileDataError("no reference rows")
    count = st["count"].astype(np.int64)
    with np.errstate(invalid="ignore"):
        std = np.sqrt(np.where(count > 1, st["m2"] / np.maximum(count - 1, 1), np.nan))
    finite = np.where(np.isfinite(rows), rows, np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # (an all-NaN feature: its median is NaN)
        median = np.nanmedian(finite, axis=0)
        mad = np.nanmedian(np.abs(finite - median), axis=0)
    return FeatureProfile(
        edges=np.ascontiguousarray(edges, dtype=np.float64), histogram=st["histogram"].astype(np.int64),
        count=count, mean=st["mean"].astype(np.float64), std=std.astype(np.float64),
        min=st["min"].astype(np.float64), max=st["max"].astype(np.float64),
        nan_count=st["nan_count"].astype(np.int64), inf_count=st["inf_count"].astype(np.int64),
        median=median.astype(np.float64), mad=mad.astype(np.float64))


def build_profile(model: ProfiledModel, data: dict[str, np.ndarray], *, labels: np.ndarray | None = None,
                  class_names: Sequence[str] = (), logits: bool = False, bins: int = 10,
                  batch_rows: int = 1024, source_file: str = "", source_sha256: str = "") -> ReferenceProfile:
    """Run ``model`` over ``data`` (input name -> array, rows first) in batches of
    ``batch_rows`` and profile inputs and outputs; ``labels`` (one per row) add accuracy or
    MAE / RMSE."""
    if not 1 <= bins <= 4096:
        raise ProfileDataError(f"bins must be in [1, 4096], got {bins}")
    feeds = _feeds(model, data)
    rows = next(iter(feeds.values())).shape[0]
    if labels is not None and len(labels) != rows:
        raise ProfileDataError(f"{len(labels)} labels for {rows} rows")
    inputs = {spec.name: feature_profile(feeds[spec.name].reshape(rows, -1).astype(np.float64, copy=False), bins)
              for spec in model.inputs}
    head = model.classifier_output
    out_name = head or model.outputs[0].name
    outputs = []
    for start in range(0, rows, batch_rows):
        batch = {k: v[start:start + batch_rows] for k, v in feeds.items()}
        try:
            outputs.append(np.asarray(model.run(batch, [out_name])[0]))
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise ProfileDataError(f"{model.name}@{model.version} failed on rows {start + 1}-"
                                   f"{start + len(next(iter(batch.values())))}: {str(exc)[:300]}") from None
    out = np.concatenate(outputs).reshape(rows, -1)
    accuracy = mae = rmse = None
    if head is not None:
        conf = kernels.ConfidenceStats(out.shape[1], CONFIDENCE_BINS)
        top1, predicted = conf.observe(np.ascontiguousarray(out, dtype=np.float32), logits)
        st = conf.state()
        valid = top1[np.isfinite(top1)].astype(np.float64)
        moments = np.array([valid.mean(), valid.std(ddof=1)]) if valid.size > 1 else None
        output = OutputProfile("classifier", out_name, class_counts=st["class_counts"].astype(np.int64),
                               top1_histogram=st["top1_hist"].astype(np.int64), top1_moments=moments)
        if labels is not None:
            truth = _class_indices(labels, out.shape[1], class_names)
            accuracy = float(np.mean(predicted == truth)) if rows else None
    else:
        output = OutputProfile("regressor", out_name, values=feature_profile(out.astype(np.float64), bins))
        if labels is not None:
            target = _targets(labels)
            err = out[:, 0].astype(np.float64) - target
            mae = float(np.mean(np.abs(err)))
            rmse = float(math.sqrt(np.mean(err * err)))
    return ReferenceProfile(
        model=model.name, version=model.version, rows=rows, inputs=inputs, output=output,
        labels_rows=0 if labels is None else rows, accuracy=accuracy, mae=mae, rmse=rmse,
        source_file=source_file, source_sha256=source_sha256, created_unix_s=time.time())


def _feeds(model: ProfiledModel, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not all(s.shape and s.shape[0] == -1 for s in model.inputs + model.outputs):
        raise ProfileDataError(f"{model.name}@{model.version} has no batch dimension (a dynamic first one "
                               f"on every input and output): its rows cannot be profiled")
    names = [s.name for s in model.inputs]
    missing = [n for n in names if n not in data]
    if missing:
        raise ProfileDataError(f"no data for input {missing[0]!r} of {model.name}@{model.version} "
                               f"(inputs: {', '.join(names)})")
    extra = sorted(set(data) - set(names) - {"labels"})
    if extra:
        raise ProfileDataError(f"{model.name}@{model.version} has no input {extra[0][:100]!r}")
    feeds = {}
    rows = None
    for spec in model.inputs:
        x = np.asarray(data[spec.name])
        if x.ndim < 1 or x.shape[0] == 0:
            raise ProfileDataError(f"input {spec.name!r}: no rows")
        fixed = spec.shape[1:]
        if all(d >= 0 for d in fixed):
            per_row = math.prod(fixed)
            if math.prod(x.shape[1:]) != per_row:
                raise ProfileDataError(f"input {spec.name!r}: {math.prod(x.shape[1:])} values a row, "
                                       f"the model takes {per_row} ({spec.describe()})")
            x = x.reshape((x.shape[0],) + tuple(fixed))
        if rows is not None and x.shape[0] != rows:
            raise ProfileDataError(f"input {spec.name!r} has {x.shape[0]} rows, another input {rows}")
        rows = x.shape[0]
        try:
            feeds[spec.name] = np.ascontiguousarray(x, dtype=spec.dtype)
        except (ValueError, TypeError) as exc:
            raise ProfileDataError(f"input {spec.name!r}: not {spec.dtype} values ({str(exc)[:200]})") from None
    return feeds


def _class_indices(labels: np.ndarray, classes: int, names: Sequence[str]) -> np.ndarray:
    if labels.dtype.kind == "f" and np.isfinite(labels).all() and (labels == np.round(labels)).all():
        labels = labels.astype(np.int64)   # (a CSV written from floats: "2.0")
    if labels.dtype.kind in "iu":
        idx = labels.astype(np.int64)
    else:
        lookup = {n: i for i, n in enumerate(names)}
        idx = np.empty(len(labels), dtype=np.int64)
        for i, value in enumerate(labels):
            text = str(value)
            if text in lookup:
                idx[i] = lookup[text]
            else:
                try:
                    idx[i] = int(text)
                except ValueError:
                    raise ProfileDataError(f"label {text[:100]!r} (row {i + 1}) is neither a class index nor one "
                                           f"of the model's labels") from None
    bad = np.flatnonzero((idx < 0) | (idx >= classes))
    if bad.size:
        raise ProfileDataError(f"label {int(idx[bad[0]])} (row {int(bad[0]) + 1}) is not a class in [0, {classes})")
    return idx


def _targets(labels: np.ndarray) -> np.ndarray:
    try:
        t = np.asarray(labels, dtype=np.float64)
    except (ValueError, TypeError):
        raise ProfileDataError("regressor targets must be numbers") from None
    if not np.isfinite(t).all():
        raise ProfileDataError("regressor targets must be finite")
    return t


# -- data files -----------------------------------------------------------------------------

def sha256_of(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_data(path: pathlib.Path, input_names: Sequence[str], *, label_column: str | None = None,
              label_key: str = "labels") -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Reference data (input name -> rows) and labels (None: none in the file) from ``path``."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            if len(input_names) != 1:
                raise ProfileDataError(f"a .npy file holds one array; the model has inputs {', '.join(input_names)}: "
                                       f"use .npz")
            return {input_names[0]: np.load(path, allow_pickle=False)}, None
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            labels = arrays.pop(label_key, None)
            return arrays, labels
    except (OSError, ValueError, EOFError) as exc:
        if isinstance(exc, ProfileDataError):
            raise
        raise ProfileDataError(f"{path}: cannot read ({type(exc).__name__}: {str(exc)[:200]})") from None
    if suffix == ".csv":
        if len(input_names) != 1:
            raise ProfileDataError(f"a .csv file holds one input's columns; the model has inputs "
                                   f"{', '.join(input_names)}: use .npz")
        x, labels = _read_csv(path, label_column)
        return {input_names[0]: x}, labels
    raise ProfileDataError(f"{path}: data must be .npy, .npz or .csv")


def _numeric(field: str) -> bool:
    try:
        float(field)
        return True
    except ValueError:
        return False


def _read_csv(path: pathlib.Path, label_column: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    csv.field_size_limit(MAX_CSV_FIELD_CHARS)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ProfileDataError(f"{path}: cannot read as CSV ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not rows:
        raise ProfileDataError(f"{path}: no rows")
    header = None if all(_numeric(v) for v in rows[0]) else [h.strip() for h in rows[0]]
    body = rows[1:] if header is not None else rows
    width = len(rows[0])
    label_at = None
    if label_column is not None:
        if header is not None and label_column in header:
            label_at = header.index(label_column)
        else:
            try:
                label_at = int(label_column)
            except ValueError:
                raise ProfileDataError(f"{path}: no column {label_column[:100]!r} in the header") from None
            if not 0 <= label_at < width:
                raise ProfileDataError(f"{path}: column {label_at} is not in [0, {width})")
    values, labels = [], []
    for i, r in enumerate(body, start=2 if header is not None else 1):
        if len(r) != width:
            raise ProfileDataError(f"{path}: line {i} has {len(r)} fields, the first has {width}")
        if label_at is not None:
            labels.append(r[label_at].strip())
            r = r[:label_at] + r[label_at + 1:]
        try:
            values.append([float(v) for v in r])
        except ValueError:
            raise ProfileDataError(f"{path}: line {i} has a field that is not a number") from None
    if not values:
        raise ProfileDataError(f"{path}: no data rows")
    x = np.asarray(values, dtype=np.float64)
    if label_at is None:
        return x, None
    lab = np.asarray(labels)
    if all(_is_int(v) for v in labels):
        lab = lab.astype(np.int64)
    elif all(_numeric(v) for v in labels):
        lab = lab.astype(np.float64)
    return x, lab


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


def read_labels(path: pathlib.Path) -> np.ndarray:
    """Labels from their own file: ``.npy``, or text with one label per line."""
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ProfileDataError(f"{path}: cannot read labels ({type(exc).__name__}: {str(exc)[:200]})") from None
    lab = np.asarray(lines)
    if lines and all(_is_int(v) for v in lines):
        return lab.astype(np.int64)
    if lines and all(_numeric(v) for v in lines):
        return lab.astype(np.float64)
    return lab
