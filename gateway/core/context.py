"""Per-attempt state: what happened to one request on its way through one model version.

The request itself is read-only (:class:`gateway.api.InferRequest`). Each time the pipeline
sends it somewhere (the model asked for, then perhaps a fallback model; later a shadow or an
A/B arm) it opens an :class:`Attempt`; the batcher stamps that attempt's timeline, so a
second attempt never overwrites the first one's timings. Observers read the attempt that
answered once the request is done.
"""
from __future__ import annotations


class Attempt:
    """One request's pass through one model version (event loop and one executor thread; the
    batcher writes the timeline before it resolves the attempt's future)."""

    __slots__ = ("served_by", "telemetry_id", "deadline_ns", "rows", "t_enqueued_ns", "t_batch_ns",
                 "t_compute_start_ns", "t_compute_end_ns", "batch_size", "arm", "shadow")

    def __init__(self, served_by: str = "", telemetry_id: int = 0, deadline_ns: int = 0, rows: int = 0,
                 arm: str = "", shadow: bool = False) -> None:
        self.served_by = served_by
        self.telemetry_id = telemetry_id  # the version's id in telemetry (0: no version)
        self.deadline_ns = deadline_ns  # this attempt's share of the deadline (0: none)
        self.rows = rows
        self.t_enqueued_ns = 0
        self.t_batch_ns = 0
        self.t_compute_start_ns = 0
        self.t_compute_end_ns = 0
        self.batch_size = 0
        self.arm = arm          # traffic arm (A/B), "" for the default route
        self.shadow = shadow    # a copy whose answer the client never sees


#: What observers get for a request that named no loaded version (unknown model or
#: version): an empty timeline. Never written to.
NO_ATTEMPT = Attempt()
