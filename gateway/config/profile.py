"""The reference profile of a model version: the file format, read and written here.

A profile describes the data a version is expected to see and what it answered on it. It
lives beside the version as ``<repository>/<model>/<version>/profile.npz`` (written by
``gateway profile build``), is loaded with the version and reloaded when it changes. The live
input statistics of that version bin by the profile's edges, so live and reference histograms
compare bin for bin.

Format (``gateway.profile/1``): a numpy ``.npz`` archive, read with ``allow_pickle=False``:

=========================  ==================  =============================================
key                        type                what
=========================  ==================  =============================================
``format``                 str                 ``gateway.profile/1``
``meta``                   str (JSON)          model, version, rows, bins, input names,
                                               output kind, labels rows, accuracy / mae /
                                               rmse, source file and its sha256, created
``input{i}_edges``         float64 [F, B + 1]  bin edges of input ``i`` (``meta.inputs[i]``),
                                               per feature, non-decreasing: quantiles of
                                               the reference rows (first edge their min,
                                               last their max)
``input{i}_histogram``     int64 [F, B + 2]    reference counts: underflow, B bins, overflow
``input{i}_count``         int64 [F]           finite values per feature
``input{i}_mean``, ``_std``, ``_min``, ``_max``  float64 [F]  of the finite values
``input{i}_nan_count``, ``_inf_count``  int64 [F]
``input{i}_median``, ``_mad``  float64 [F]    median and median absolute deviation of the finite
                                               values (optional; the outlier score's centre and scale)
``output_class_counts``    int64 [K]           classifiers: rows per predicted class
``output_top1_histogram``  int64 [20]          classifiers: top-1 probability, 20 bins on
                                               [0, 1] (as the live confidence statistics)
``output_top1_moments``    float64 [2]         classifiers: its mean and std (optional)
``output_edges``           float64 [M, B + 1]  regressors: edges of the first output's M
                                               values a row (and ``output_histogram``,
                                               ``_count``, ``_mean``... as for an input)
=========================  ==================  =============================================

``F`` is the input's features per row, ``B`` the bins, ``K`` the classes. A profile that does not
parse or whose arrays do not fit each other raises :class:`ProfileError`, naming what is wrong.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import zipfile
from typing import Any, Literal

import numpy as np

from ..policy import outliers

FORMAT = "gateway.profile/1"
PROFILE_FILE = "profile.npz"
CONFIDENCE_BINS = 20            # the live ConfidenceStats default
MAX_PROFILE_BYTES = 256 << 20   # a profile file larger than this is refused unread

OutputKind = Literal["classifier", "regressor", "none"]


class ProfileError(ValueError):
    """A profile file that cannot be used (the message names the file and what is wrong)."""


@dataclasses.dataclass(frozen=True)
class FeatureProfile:
    """Reference statistics of one input, per feature (arrays of length ``features``)."""

    edges: np.ndarray        # float64 [F, B + 1]
    histogram: np.ndarray    # int64 [F, B + 2]
    count: np.ndarray        # int64 [F]
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    nan_count: np.ndarray
    inf_count: np.ndarray
    median: np.ndarray | None = None    # float64 [F] (optional)
    mad: np.ndarray | None = None       # float64 [F]: median absolute deviation (optional)

    @property
    def features(self) -> int:
        return int(self.edges.shape[0])

    @property
    def bins(self) -> int:
        return int(self.edges.shape[1]) - 1


@dataclasses.dataclass(frozen=True)
class OutputProfile:
    """What the version answered on the reference rows."""

    kind: OutputKind
    name: str = ""
    class_counts: np.ndarray | None = None      # classifier
    top1_histogram: np.ndarray | None = None    # classifier
    top1_moments: np.ndarray | None = None      # classifier: mean, std of the top-1 probability
    values: FeatureProfile | None = None        # regressor: the first output, one "feature"


@dataclasses.dataclass(frozen=True)
class ReferenceProfile:
    model: str
    version: str
    rows: int
    inputs: dict[str, FeatureProfile]
    output: OutputProfile
    labels_rows: int = 0
    accuracy: float | None = None       # classifiers, when labels were given
    mae: float | None = None            # regressors, when targets were given
    rmse: float | None = None
    source_file: str = ""
    source_sha256: str = ""
    created_unix_s: float = 0.0

    @property
    def bins(self) -> int:
        return next(iter(self.inputs.values())).bins if self.inputs else 0

    def outlier_references(self) -> dict[str, outliers.Reference]:
        """Each input's range, centre and scale for outlier scores: its median and 1.4826 MAD
        where the profile has them, else its mean and standard deviation."""
        refs = {}
        for name, fp in self.inputs.items():
            if fp.median is not None and fp.mad is not None:
                center, scale = fp.median, outliers.MAD_TO_SD * fp.mad
            else:
                center, scale = fp.mean, fp.std
            refs[name] = outliers.reference(fp.min, fp.max, center, scale)
        return refs

    def save(self, path: pathlib.Path) -> None:
        """Write the profile to ``path`` (replaced atomically: a reload never sees half a file)."""
        names = list(self.inputs)
        meta = {"model": self.model, "version": self.version, "rows": self.rows, "inputs": names,
                "output": {"kind": self.output.kind, "name": self.output.name},
                "labels_rows": self.labels_rows, "accuracy": self.accuracy, "mae": self.mae, "rmse": self.rmse,
                "source_file": self.source_file, "source_sha256": self.source_sha256,
                "created_unix_s": self.created_unix_s}
        arrays: dict[str, Any] = {"format": np.array(FORMAT), "meta": np.array(json.dumps(meta))}
        for i, name in enumerate(names):
            arrays.update(_feature_arrays(f"input{i}", self.inputs[name]))
        out = self.output
        if out.class_counts is not None:
            arrays["output_class_counts"] = out.class_counts
        if out.top1_histogram is not None:
            arrays["output_top1_histogram"] = out.top1_histogram
        if out.top1_moments is not None:
            arrays["output_top1_moments"] = out.top1_moments
        if out.values is not None:
            arrays.update(_feature_arrays("output", out.values))
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        tmp.replace(path)


_FEATURE_FIELDS = ("edges", "histogram", "count", "mean", "std", "min", "max", "nan_count", "inf_count")
_INT_FIELDS = {"histogram", "count", "nan_count", "inf_count"}
_ROBUST_FIELDS = ("median", "mad")


def _feature_arrays(prefix: str, fp: FeatureProfile) -> dict[str, np.ndarray]:
    out = {f"{prefix}_{k}": getattr(fp, k) for k in _FEATURE_FIELDS}
    for k in _ROBUST_FIELDS:
        if getattr(fp, k) is not None:
            out[f"{prefix}_{k}"] = getattr(fp, k)
    return out


def _feature_profile(where: str, arrays: dict[str, np.ndarray], prefix: str) -> FeatureProfile:
    got = {}
    for k in _FEATURE_FIELDS:
        key = f"{prefix}_{k}"
        if key not in arrays:
            raise ProfileError(f"{where}: no array {key!r}")
        a = arrays[key]
        want = np.int64 if k in _INT_FIELDS else np.float64
        if a.dtype != want:
            raise ProfileError(f"{where}: {key} is {a.dtype}, expected {np.dtype(want)}")
        got[k] = a
    edges, hist = got["edges"], got["histogram"]
    if edges.ndim != 2 or edges.shape[0] < 1 or edges.shape[1] < 2:
        raise ProfileError(f"{where}: {prefix}_edges must be [features, bins + 1], got shape {edges.shape}")
    f, b1 = edges.shape
    if hist.shape != (f, b1 + 1):
        raise ProfileError(f"{where}: {prefix}_histogram must be [{f}, {b1 + 1}], got {hist.shape}")
    for k in _FEATURE_FIELDS[2:]:
        if got[k].shape != (f,):
            raise ProfileError(f"{where}: {prefix}_{k} must be [{f}], got {got[k].shape}")
    if not np.isfinite(edges).all() or not (edges[:, 1:] >= edges[:, :-1]).all():
        raise ProfileError(f"{where}: {prefix}_edges must be finite and non-decreasing per feature")
    if (hist < 0).any() or (got["count"] < 0).any():
        raise ProfileError(f"{where}: {prefix} counts must not be negative")
    robust: list[np.ndarray | None] = []
    for k in _ROBUST_FIELDS:
        r = arrays.get(f"{prefix}_{k}")
        if r is not None and (r.dtype != np.float64 or r.shape != (f,)):
            raise ProfileError(f"{where}: {prefix}_{k} must be float64 [{f}]")
        robust.append(r)
    return FeatureProfile(**got, median=robust[0], mad=robust[1])


def load_profile(path: pathlib.Path) -> ReferenceProfile:
    """Read and check a profile file; :class:`ProfileError` when it cannot be used."""
    where = str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ProfileError(f"{where}: cannot read: {exc.strerror or exc}") from None
    if size > MAX_PROFILE_BYTES:
        raise ProfileError(f"{where}: {size} bytes, more than the {MAX_PROFILE_BYTES} a profile may have")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ProfileError(f"{where}: not a profile archive ({type(exc).__name__}: {str(exc)[:200]})") from None
    fmt = arrays.get("format")
    if fmt is None or fmt.shape != () or str(fmt) != FORMAT:
        raise ProfileError(f"{where}: format is not {FORMAT!r}")
    try:
        meta = json.loads(str(arrays["meta"]))
        names = [str(n) for n in meta["inputs"]]
        kind = meta["output"]["kind"]
        output_name = str(meta["output"].get("name", ""))
        rows = int(meta["rows"])
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise ProfileError(f"{where}: meta is not a profile's ({type(exc).__name__}: {str(exc)[:200]})") from None
    if kind not in ("classifier", "regressor", "none"):
        raise ProfileError(f"{where}: output kind {str(kind)[:40]!r} is not classifier, regressor or none")
    if len(set(names)) != len(names):
        raise ProfileError(f"{where}: an input is named twice")
    inputs = {name: _feature_profile(where, arrays, f"input{i}") for i, name in enumerate(names)}
    output = OutputProfile(kind, output_name)
    if kind == "classifier":
        counts, top1 = arrays.get("output_class_counts"), arrays.get("output_top1_histogram")
        if counts is None or counts.dtype != np.int64 or counts.ndim != 1 or counts.size < 1:
            raise ProfileError(f"{where}: a classifier's profile needs int64 output_class_counts [classes]")
        if top1 is None or top1.dtype != np.int64 or top1.shape != (CONFIDENCE_BINS,):
            raise ProfileError(f"{where}: a classifier's profile needs int64 output_top1_histogram "
                               f"[{CONFIDENCE_BINS}]")
        moments = arrays.get("output_top1_moments")
        if moments is not None and (moments.dtype != np.float64 or moments.shape != (2,)
                                    or not np.isfinite(moments).all() or moments[1] < 0):
            raise ProfileError(f"{where}: output_top1_moments must be float64 [2]: a finite mean and std >= 0")
        output = OutputProfile(kind, output_name, class_counts=counts, top1_histogram=top1, top1_moments=moments)
    elif kind == "regressor":
        output = OutputProfile(kind, output_name, values=_feature_profile(where, arrays, "output"))

    def metric(key: str) -> float | None:
        v = meta.get(key)
        return None if v is None else float(v)

    return ReferenceProfile(
        model=str(meta.get("model", "")), version=str(meta.get("version", "")), rows=rows, inputs=inputs,
        output=output, labels_rows=int(meta.get("labels_rows", 0)), accuracy=metric("accuracy"),
        mae=metric("mae"), rmse=metric("rmse"), source_file=str(meta.get("source_file", "")),
        source_sha256=str(meta.get("source_sha256", "")), created_unix_s=float(meta.get("created_unix_s", 0.0)))
