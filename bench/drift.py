"""Change detection against river: the gateway's per-feature CUSUM (gateway.kernels.ChangeDetector)
and river's ADWIN and PageHinkley (default parameters) on the same synthetic streams.

Run: python bench/drift.py   (bounded: ~5 s on a 2-core box; no network; last line is JSON)
Needs river (the ``bench`` extra: pip install -e '.[bench]').

Streams: STREAMS (20) N(0, 1) streams with fixed seeds, PRE_ROWS (10^5) in-distribution rows,
then POST_ROWS (5000) rows with the mean shifted by SHIFT_SIGMA (0.5). For each detector:

* detection delay: shifted rows seen up to and including the one that raised the first alarm
  after the change (median and p90 over the streams; a stream with no alarm within POST_ROWS
  counts as missed and is left out of the delay figures);
* false alarms: alarms before the change, in total and per 10^6 in-distribution rows;
* cost per value: wall time of the detector over a whole stream / values (river: one
  ``update`` per value, as it is used, median over the 20 streams; ours: ``observe`` per batch
  of BATCH_ROWS rows, as the gateway feeds it per executed batch, and also one row per call,
  on float32 copies of the first 5 streams, median over REPEATS passes each, then over
  the streams). Our detections use the float64 streams river sees.

The gateway's detector runs twice: on the single streams (one feature) and on 16-feature
streams (the same seeds; 15 extra N(0, 1) features, the shift in feature ``stream % 16``):
there the ERT knob is split over all 16 features, and the report counts alarms of the 15
unshifted features after the change (should be none). Finally KNOB_CHECK_ROWS rows x 16
features at a small knob (ERT = 10^5 rows) compare the measured false-alarm rate with the
one asked for, which the default knob (10^7 rows) makes too rare to measure here.

Measured 2026-12-01 (bench/RESULTS.md "Change detection against river"): at the default knob
the 20 x 10^5 in-distribution rows x 16 features raised 1 false alarm (0.5 per 10^6 rows;
ADWIN on the single streams: also 1), one feature 0; at ERT = 10^5 rows, 99 where 100 were
asked for.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time

import numpy as np

from gateway.kernels import ChangeDetector, cusum_arl

STREAMS = 20
PRE_ROWS = 100_000
POST_ROWS = 5_000
SHIFT_SIGMA = 0.5
WIDE_FEATURES = 16
BATCH_ROWS = 64
LARGE_BATCH_ROWS = 1024
REPEATS = 5
KNOB_CHECK_ERT_ROWS = 1e5
KNOB_CHECK_ROWS = 10_000_000
# Measured with river 0.26.1 in the issue (one stream): ADWIN's delay, the 1.2 x target.
DELAY_RATIO_TARGET = 1.2
COST_RATIO_TARGET = 0.01


def stream(seed: int, n_features: int = 1, shifted: int = 0) -> np.ndarray:
    """[PRE_ROWS + POST_ROWS, n_features] float64: feature ``shifted`` is the single stream of
    ``seed`` (mean moved by SHIFT_SIGMA from row PRE_ROWS on), the others N(0, 1) from a
    second seed."""
    base = np.random.default_rng(10_000 + seed).standard_normal(PRE_ROWS + POST_ROWS)
    base[PRE_ROWS:] += SHIFT_SIGMA
    if n_features == 1:
        return base[:, None]
    x = np.random.default_rng(20_000 + seed).standard_normal((len(base), n_features))
    x[:, shifted] = base
    return x


def _summary(delays: list[int], false_alarms: int, costs_ns: list[float], streams: int) -> dict:
    d = np.array(delays, dtype=float)
    return {
        "delay_median_rows": float(np.median(d)) if d.size else None,
        "delay_p90_rows": float(np.percentile(d, 90)) if d.size else None,
        "delays_rows": delays,
        "missed_streams": streams - len(delays),
        "false_alarms": false_alarms,
        "false_alarms_per_1e6_rows": false_alarms / (streams * PRE_ROWS) * 1e6,
        "ns_per_value": statistics.median(costs_ns),
    }


def run_river(make) -> dict:
    delays, false_alarms, costs = [], 0, []
    for s in range(STREAMS):
        values = stream(s)[:, 0].tolist()
        det = make()
        update = det.update
        hits = []
        t0 = time.perf_counter_ns()
        for i, v in enumerate(values):
            update(v)
            if det.drift_detected:
                hits.append(i)
        costs.append((time.perf_counter_ns() - t0) / len(values))
        false_alarms += sum(1 for i in hits if i < PRE_ROWS)
        after = [i for i in hits if i >= PRE_ROWS]
        if after:
            delays.append(after[0] - PRE_ROWS + 1)
    return _summary(delays, false_alarms, costs, STREAMS)


def _feed(det: ChangeDetector, x: np.ndarray, batch_rows: int) -> list:
    alarms = []
    observe = det.observe
    for start in range(0, len(x), batch_rows):
        alarms += observe(x[start:start + batch_rows])
    return alarms


def _cost_ns(det: ChangeDetector, x: np.ndarray, batch_rows: int) -> float:
    """Median over REPEATS of one pass over ``x`` in batches, per value."""
    runs = []
    for _ in range(REPEATS):
        det.reset()
        t0 = time.perf_counter_ns()
        _feed(det, x, batch_rows)
        runs.append((time.perf_counter_ns() - t0) / x.size)
    return statistics.median(runs)


def run_ours(n_features: int) -> dict:
    delays, false_alarms, others_after, costs, costs_row, costs_big = [], 0, 0, [], [], []
    det = None
    for s in range(STREAMS):
        shifted = s % n_features
        x = stream(s, n_features, shifted)
        det = ChangeDetector(np.zeros(n_features), np.ones(n_features))
        alarms = _feed(det, x, BATCH_ROWS)
        false_alarms += sum(1 for a in alarms if a[2] <= PRE_ROWS)
        after = [a for a in alarms if a[2] > PRE_ROWS]
        others_after += sum(1 for a in after if a[0] != shifted)
        mine = [a for a in after if a[0] == shifted]
        if mine:
            delays.append(mine[0][2] - PRE_ROWS)
        if s < 5:   # costs on the first streams, as float32 (model inputs)
            x32 = x.astype(np.float32)
            costs.append(_cost_ns(det, x32, BATCH_ROWS))
            costs_row.append(_cost_ns(det, x32[:20_000], 1))
            costs_big.append(_cost_ns(det, x32, LARGE_BATCH_ROWS))
    assert det is not None
    out = _summary(delays, false_alarms, costs, STREAMS)
    out.update(n_features=n_features, threshold_sigma=det.threshold_sigma,
               arl0_rows_per_side=det.arl0_rows_per_side,
               expected_rows_between_false_alarms=det.expected_rows_between_false_alarms,
               siegmund_delay_rows=cusum_arl(det.threshold_sigma, det.allowance_sigma,
                                             SHIFT_SIGMA),
               alarms_of_unshifted_features_after_change=others_after,
               ns_per_value_one_row_per_call=statistics.median(costs_row),
               ns_per_value_large_batches=statistics.median(costs_big),
               large_batch_rows=LARGE_BATCH_ROWS,
               batch_rows=BATCH_ROWS)
    return out


def knob_check() -> dict:
    """False alarms of 16 features at ERT = KNOB_CHECK_ERT_ROWS over KNOB_CHECK_ROWS rows."""
    det = ChangeDetector(np.zeros(WIDE_FEATURES), np.ones(WIDE_FEATURES),
                         expected_rows_between_false_alarms=KNOB_CHECK_ERT_ROWS)
    rng = np.random.default_rng(77)
    alarms = 0
    chunk = 250_000
    for _ in range(KNOB_CHECK_ROWS // chunk):
        alarms += len(det.observe(rng.standard_normal((chunk, WIDE_FEATURES),
                                                      dtype=np.float32)))
    expected = KNOB_CHECK_ROWS / KNOB_CHECK_ERT_ROWS
    return {"rows": KNOB_CHECK_ROWS, "n_features": WIDE_FEATURES,
            "expected_rows_between_false_alarms": KNOB_CHECK_ERT_ROWS,
            "alarms": alarms, "expected_alarms": expected,
            "measured_rows_between_false_alarms": KNOB_CHECK_ROWS / alarms if alarms else None}


def main() -> None:
    try:
        from river import drift
        import river
    except ImportError:
        sys.exit("bench/drift.py needs river: pip install -e '.[bench]'")
    print(f"load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    results = {}
    t0 = time.monotonic()
    results["ours_1"] = run_ours(1)
    results["ours_16"] = run_ours(WIDE_FEATURES)
    results["adwin"] = run_river(drift.ADWIN)
    results["page_hinkley"] = run_river(drift.PageHinkley)
    results["knob_check_16"] = knob_check()
    adwin = results["adwin"]
    for name in ("ours_1", "ours_16", "page_hinkley"):
        r = results[name]
        r["delay_median_vs_adwin"] = (r["delay_median_rows"] / adwin["delay_median_rows"]
                                      if r["delay_median_rows"] and adwin["delay_median_rows"]
                                      else None)
        r["ns_per_value_vs_adwin"] = r["ns_per_value"] / adwin["ns_per_value"]
    for name in ("ours_1", "ours_16", "adwin", "page_hinkley"):
        r = results[name]
        print(f"{name:13s} delay median {r['delay_median_rows']} p90 {r['delay_p90_rows']} "
              f"missed {r['missed_streams']}  false alarms {r['false_alarms']} "
              f"({r['false_alarms_per_1e6_rows']:.1f} per 1e6 rows)  "
              f"{r['ns_per_value']:.1f} ns/value", file=sys.stderr)
    ours = results["ours_1"]
    targets = {
        "delay_median_le_1.2x_adwin": (ours["delay_median_vs_adwin"] is not None
                                       and ours["delay_median_vs_adwin"] <= DELAY_RATIO_TARGET
                                       and ours["missed_streams"] <= adwin["missed_streams"]),
        "false_alarms_le_adwin": ours["false_alarms"] <= adwin["false_alarms"],
        "cost_le_1pct_adwin": ours["ns_per_value_vs_adwin"] <= COST_RATIO_TARGET,
        "cost_le_1pct_adwin_one_row_per_call": (ours["ns_per_value_one_row_per_call"]
                                                / adwin["ns_per_value"] <= COST_RATIO_TARGET),
        "cost_le_1pct_adwin_large_batches": (ours["ns_per_value_large_batches"]
                                             / adwin["ns_per_value"] <= COST_RATIO_TARGET),
        "no_unshifted_feature_alarms_16": (
            results["ours_16"]["alarms_of_unshifted_features_after_change"] == 0),
    }
    print(f"load average after: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print(json.dumps({"river": river.__version__, "streams": STREAMS, "pre_rows": PRE_ROWS,
                      "post_rows": POST_ROWS, "shift_sigma": SHIFT_SIGMA,
                      "seconds": round(time.monotonic() - t0, 1), "results": results,
                      "targets_met": targets}))


if __name__ == "__main__":
    main()
