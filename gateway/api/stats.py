"""Live statistics as the data plane reports them (what ``GetStats`` and ``gateway stats`` show)."""
from __future__ import annotations

import dataclasses

MAX_WINDOW_S = 300
"""The longest window: telemetry keeps per-second counters and the GetStats reader's history of
cumulative histograms this far back (windows are whole seconds; a fraction rounds up)."""


@dataclasses.dataclass(frozen=True)
class LatencySummary:
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


@dataclasses.dataclass(frozen=True)
class FeatureShift:
    input: str
    feature: int
    mean: float           # recent-window mean
    std: float            # long-run standard deviation (reference)
    shift_score: float    # |recent mean - reference mean| / reference std
    nan_count: int        # recent-window NaN count


@dataclasses.dataclass(frozen=True)
class ModelStatsSnapshot:
    """One version over a window: everything but ``requests`` (the total since it was
    registered) and ``top_shifts`` (the feature-shift monitor's own window) covers it."""

    model: str
    version: str
    requests: int
    latency: LatencySummary
    queue: LatencySummary
    compute: LatencySummary
    requests_per_s: float
    rows_per_s: float
    error_share: float
    degraded_share: float
    mean_batch_size: float
    mean_confidence: float
    top_shifts: list[FeatureShift]
    quality: QualitySnapshot | None = None  # from delayed labels (Feedback), where monitoring is on
    drift: DriftSnapshot | None = None      # against the reference, where telemetry is on
    totals: VersionTotals | None = None     # cumulative, since the version was registered


@dataclasses.dataclass(frozen=True)
class PhaseTotal:
    """How many requests (or executions) went through a phase and their time in it, in all."""

    count: int
    ns: int


@dataclasses.dataclass(frozen=True)
class BatchSizeTotal:
    """The model executions of one batch size (rows) and their compute time, in all."""

    batch_size: int
    executions: int
    compute_ns: int


@dataclasses.dataclass(frozen=True)
class VersionTotals:
    """A version's running totals, read at one instant (so they agree with each other):
    ``success``/``fail``: answered requests by outcome, end to end; ``queue`` and ``compute``:
    of the successful requests that reached an execution (a cached or static answer did not),
    time queued (enqueued to compute start) and in the model run; ``rows``: rows of the
    successful answers; ``executions``: model runs, of which ``batches`` per batch size (their
    counts add up to ``executions``); ``last_unix_ms``: when the last request was answered (0:
    none yet)."""

    success: PhaseTotal
    fail: PhaseTotal
    queue: PhaseTotal
    compute: PhaseTotal
    rows: int
    executions: int
    batches: tuple[BatchSizeTotal, ...]
    last_unix_ms: int


@dataclasses.dataclass(frozen=True)
class DriftMeasure:
    """One feature's (or the predicted class's, or the confidence's) drift over the window:
    PSI, JS distance (base 2), binned KS with its error bound (the raw KS lies in
    ``[ks, ks + ks_error]``) and the worst of their grades ("ok", "warn", "alert", "unknown")."""

    input: str            # the input's name; "" for an output distribution
    feature: int
    psi: float
    js: float
    ks: float
    ks_error: float
    grade: str
    window_rows: int
    # data quality over the window (input features; NaN for an output distribution): the
    # shares of its values that were NaN, infinite, or finite outside the reference's range
    nan_rate: float = float("nan")
    inf_rate: float = float("nan")
    out_of_range_rate: float = float("nan")


@dataclasses.dataclass(frozen=True)
class DriftSnapshot:
    """A version's drift against its reference (:mod:`gateway.monitoring.monitor`)."""

    reference: str        # "given" (the version's profile), "captured" (its first rows), "capturing"
    reference_rows: int
    window_rows: int
    window_s: float
    features: tuple[DriftMeasure, ...]  # the highest PSI first, at most DRIFT_TOP
    features_alert: int
    features_warn: int
    features_ok: int
    predicted_class: DriftMeasure | None = None
    confidence: DriftMeasure | None = None
    change_alarms: int = 0                  # sequential change detector changes so far (re-alarms latched)
    outlier_rate: float = float("nan")      # rows scored in the window that were outliers
    outlier_scored_rows: int = 0            # rows scored in the window (a sample of them)
    changes: tuple[ChangeEvent, ...] = ()   # the newest, at most DRIFT_TOP, newest first
    # the features with the most NaN, infinite or out-of-range values (at most DRIFT_TOP; none
    # listed when all were clean)
    data_quality: tuple[DriftMeasure, ...] = ()
    # a model that is no classifier: its predictions' (its first output's) drift, the value with
    # the highest PSI where it predicts several a row; ``input`` is "output:<name>"
    prediction: DriftMeasure | None = None


@dataclasses.dataclass(frozen=True)
class ChangeEvent:
    """A sequential change detector's alarm: ``input`` ("" for the top-1 confidence), its
    feature, ``side`` ("up": the values rose, "down"), the ``row`` of the detector's stream it
    came on, the CUSUM statistic (reference standard deviations) and how long ago."""

    input: str
    feature: int
    side: str
    row: int
    statistic: float
    age_s: float


DRIFT_TOP = 10
"""Features a drift snapshot lists (the highest PSI first); the counts cover all."""


@dataclasses.dataclass(frozen=True)
class QualitySnapshot:
    """Online quality of one version from delayed labels (:mod:`gateway.monitoring.labels`).

    Counts are totals since the version's first captured prediction; the metrics cover the last
    ``window`` joined labels. Classifier metrics are NaN for regressors and regressor metrics
    NaN for classifiers (and all are NaN while no label joined). Per-class lists follow
    ``classes``; ``confusion`` is row-major ``classes x classes`` (row: true class, column:
    predicted), empty above :data:`gateway.monitoring.labels.MAX_CONFUSION_CLASSES` classes."""

    kind: str             # "classifier" or "regressor"
    predictions: int      # captured for joining
    joined: int
    late: int             # labels whose prediction had left the store (TTL or capacity)
    duplicate: int        # labels for a prediction already joined
    invalid: int          # labels the prediction cannot take (unknown class, NaN target, wrong kind)
    join_rate: float      # joined / predictions
    window: int           # joined labels the metrics below cover
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    classes: tuple[str, ...] = ()
    precision: tuple[float, ...] = ()
    recall: tuple[float, ...] = ()
    f1: tuple[float, ...] = ()
    support: tuple[int, ...] = ()
    confusion: tuple[int, ...] = ()
    mae: float = float("nan")
    rmse: float = float("nan")


@dataclasses.dataclass(frozen=True)
class Rejected:
    """Requests refused for one reason (totals since start; see gateway.core.rejections)."""

    model: str            # "" where the request named no model the registry holds
    version: str          # "" where it named none, or one the model does not have
    status: str           # the status's name: INVALID_ARGUMENT, RESOURCE_EXHAUSTED...
    reason: str           # gateway.api.errors.REJECT_REASONS, or the fallback policy's reason
    requests: int


@dataclasses.dataclass(frozen=True)
class ShadowSnapshot:
    """One (primary, candidate) pair of shadow traffic, totals since start (gateway.core.shadow)."""

    primary: str          # model@version that answered the clients
    shadow: str           # model@version the requests were mirrored to
    mirrored: int         # sent to the candidate
    shed: int             # sampled but not sent: over the shadow budget, or queues half full
    errors: dict[str, int]  # status name -> shadows that ended with it
    agreement: float      # share of compared rows whose predicted labels agree (NaN: none compared)
    compared_rows: int
    mean_abs_diff: float  # over the outputs both answers have with the same shape
    p50_ms: float         # latency of the candidate's answers (the last 1024)
    p99_ms: float


@dataclasses.dataclass(frozen=True)
class Statistics:
    models: list[ModelStatsSnapshot]
    ring_drops: int       # request records the telemetry ring had to drop
    feedback_unknown: int = 0  # labels naming a request id never captured (or forgotten)
    rejected: tuple[Rejected, ...] = ()
    shadow: tuple[ShadowSnapshot, ...] = ()
    workers: int = 1           # processes whose figures these are (``gateway serve --workers``)
    worker_restarts: int = 0   # workers that died and were started again
