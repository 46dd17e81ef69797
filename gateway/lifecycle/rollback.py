"""Automatic rollback: a candidate version that does worse than its baseline loses its traffic.

For every model with a traffic split and ``traffic.rollback.enabled``, each evaluation (every
``rollback_evaluate_every_s``, on the event loop; the statistics are computed on a worker
thread) compares every candidate (a version with a share, other than the baseline: the
configured one, else the one with the largest share, the oldest of equal ones) with the
baseline over the same window:

- **error rate**: a one-sided two-proportion z-test (pooled) on the window's failed and
  answered requests, both sides with at least ``min_requests``: it holds when the candidate's
  error share is significantly higher *and* more than ``max_error_rate_increase`` above the
  baseline's;
- **accuracy** from delayed labels (each version's label window, at least ``min_labels``
  joined): the same test on correct and labelled rows, holding when the candidate is
  significantly lower by more than ``max_accuracy_drop``;
- **p99 latency**: the candidate's p99 above ``max_p99_ratio`` times the baseline's (both with
  ``min_requests`` in the window);
- **drift**: the candidate's inputs graded alert while the baseline's are not;
- **shadow disagreement** (when the baseline is shadowed to the candidate): the share of rows
  whose predicted labels differ above ``max_shadow_disagreement``, over at least
  ``min_requests`` compared rows.

A rule must hold at ``consecutive`` evaluations in a row (hysteresis); then the candidate's
weight goes to 0 (the others keep theirs, renormalised), and the rollback is logged (event
``traffic.rolled_back``, WARNING), recorded in the version history (``rolled_back``, source
``rollback``), counted (``gateway.rollbacks``) and raised as the ``rollback`` alert (a default
rule on the signal ``rolled_back``). A rolled-back candidate stays at 0 until its weight is set
again (config edit or admin operation); the watcher then judges it afresh.

Looking every few seconds is testing many times: a fixed significance level would roll equal
models back sooner or later. So ``alpha`` is spent over the looks: the k-th look at a candidate
whose data changed since the last one tests at ``alpha / (k (k + 1))`` (each of the two tests at
half), and these sum to ``alpha`` — the chance that a candidate no worse than its baseline is
*ever* rolled back by them (a union bound; the margins and ``consecutive`` make it smaller
still). The price is a later detection the longer a candidate has run. Measured by simulation
(tests/lifecycle/test_rollback.py, looks every 50 labels, window 1,000): a 10-point accuracy
drop (85 % to 75 %) rolled back after a median of 550 and at most 1,100 labels per version over 40
runs; equal models (80 %) were never rolled back in 100 runs of 5,000 labels (100 looks each).
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..api.history import HistorySink
from ..api.stats import ModelStatsSnapshot, ShadowSnapshot, Statistics
from ..config.model import RollbackConfig
from ..core.registry import ModelRegistry

log = logging.getLogger("gateway.lifecycle")


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def worse_share_p(bad_a: int, n_a: int, bad_b: int, n_b: int) -> float:
    """One-sided p-value that side A's share of bad outcomes is higher than side B's (pooled
    two-proportion z-test); 1.0 where it cannot be told (no spread)."""
    if n_a <= 0 or n_b <= 0:
        return 1.0
    pooled = (bad_a + bad_b) / (n_a + n_b)
    var = pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)
    if var <= 0:
        return 1.0
    return normal_sf((bad_a / n_a - bad_b / n_b) / math.sqrt(var))


@dataclass(frozen=True)
class Rollback:
    t_unix_s: float
    model: str
    version: str       # the candidate rolled back
    baseline: str
    rule: str          # error_rate, accuracy, p99, drift, shadow_disagreement
    detail: str


def judge(cfg: RollbackConfig, baseline: ModelStatsSnapshot, candidate: ModelStatsSnapshot,
          shadow: ShadowSnapshot | None, alpha: float | None = None) -> list[tuple[str, str]]:
    """The rules that hold for ``candidate`` against ``baseline``: (rule, what was seen). The two
    tests run at ``alpha`` each (default: ``cfg.alpha / 2``, a single look)."""
    alpha = cfg.alpha / 2 if alpha is None else alpha
    held: list[tuple[str, str]] = []
    nb, nc = baseline.latency.count, candidate.latency.count
    if nb >= cfg.min_requests and nc >= cfg.min_requests:
        eb, ec = round(baseline.error_share * nb), round(candidate.error_share * nc)
        p = worse_share_p(ec, nc, eb, nb)
        if ec / nc - eb / nb > cfg.max_error_rate_increase and p < alpha:
            held.append(("error_rate", f"error share {ec / nc:.3f} against {eb / nb:.3f} "
                                       f"({nc} and {nb} requests; p = {p:.2g})"))
        if cfg.max_p99_ratio is not None and baseline.latency.p99_ms > 0 and \
                candidate.latency.p99_ms > cfg.max_p99_ratio * baseline.latency.p99_ms:
            held.append(("p99", f"p99 {candidate.latency.p99_ms:.1f} ms against {baseline.latency.p99_ms:.1f} ms"))
    qb, qc = baseline.quality, candidate.quality
    if qb is not None and qc is not None and qb.window >= cfg.min_labels and qc.window >= cfg.min_labels \
            and not math.isnan(qb.accuracy) and not math.isnan(qc.accuracy):
        wrong_b, wrong_c = round((1 - qb.accuracy) * qb.window), round((1 - qc.accuracy) * qc.window)
        p = worse_share_p(wrong_c, qc.window, wrong_b, qb.window)
        if qb.accuracy - qc.accuracy > cfg.max_accuracy_drop and p < alpha:
            held.append(("accuracy", f"accuracy {qc.accuracy:.3f} against {qb.accuracy:.3f} "
                                     f"({qc.window} and {qb.window} labels; p = {p:.2g})"))
    db, dc = baseline.drift, candidate.drift
    if cfg.drift and db is not None and dc is not None and dc.features_alert > 0 and db.features_alert == 0 \
            and db.reference != "capturing" and dc.reference != "capturing":
        held.append(("drift", f"{dc.features_alert} input features graded alert (the baseline: none)"))
    if cfg.max_shadow_disagreement is not None and shadow is not None and \
            shadow.compared_rows >= cfg.min_requests and not math.isnan(shadow.agreement) and \
            1 - shadow.agreement > cfg.max_shadow_disagreement:
        held.append(("shadow_disagreement", f"{100 * (1 - shadow.agreement):.1f} % of {shadow.compared_rows} "
                                            "shadowed rows labelled otherwise"))
    return held


def _sample(base: ModelStatsSnapshot, cand: ModelStatsSnapshot) -> tuple:
    """What the tests see of a pair: a look counts only when it changed."""
    def of(m: ModelStatsSnapshot) -> tuple:
        q = m.quality
        return (m.latency.count, m.error_share, q.window if q else 0, q.joined if q else 0, q.accuracy if q else 0.0)
    return of(base) + of(cand)


class RollbackWatcher:
    def __init__(self, registry: ModelRegistry, statistics: Callable[[float], Statistics], *,
                 history: HistorySink | None = None, evaluate_every_s: float = 5.0) -> None:
        self.registry = registry
        self._statistics = statistics
        self._history = history
        self.evaluate_every_s = evaluate_every_s
        self._streak: dict[tuple[str, str], int] = {}
        self._looks: dict[tuple[str, str], tuple[int, tuple]] = {}  # candidate -> (looks with new data, last data)
        self.rolled_back: dict[tuple[str, str], Rollback] = {}   # (model, version) -> the last rollback
        self.rollbacks: dict[tuple[str, str], int] = {}  # (model, version) -> rollbacks so far
        # told the weights before a rollback changes them (TrafficAdmin.remember: an admin's
        # roll back undoes an automatic one too)
        self.before_change: Callable[[str, dict[str, float]], None] | None = None

    def is_rolled_back(self, model: str, version: str) -> bool:
        r = self.rolled_back.get((model, version))
        return r is not None and self.registry.weights(model).get(version) == 0.0

    def _watched(self) -> list[tuple[str, RollbackConfig, str, list[str]]]:
        out = []
        for entry in self.registry.entries():
            cfg = self.registry.rollback_rules(entry.name)
            if not isinstance(cfg, RollbackConfig):
                continue
            split = self.registry.split(entry.name)
            if cfg is None or not cfg.enabled or split is None or len(split.versions) < 2:
                continue
            top = max(split.shares.values())   # the largest share; among equal ones the oldest version
            baseline = cfg.baseline if cfg.baseline in split.shares else \
                next(v for v in split.versions if split.shares[v] == top)
            out.append((entry.name, cfg, baseline, [v for v in split.versions if v != baseline]))
        return out

    def evaluate(self, stats: Statistics) -> list[Rollback]:
        """One evaluation over ``stats`` (as GetStats gives them); the rollbacks it made."""
        by_version = {(m.model, m.version): m for m in stats.models}
        shadows = {(s.primary, s.shadow): s for s in stats.shadow}
        done: list[Rollback] = []
        watching: set[tuple[str, str]] = set()
        for model, cfg, baseline, candidates in self._watched():
            base = by_version.get((model, baseline))
            if base is None:
                continue
            for version in candidates:
                cand = by_version.get((model, version))
                key = (model, version)
                watching.add(key)
                if cand is None:
                    continue
                seen = _sample(base, cand)
                looks, last = self._looks.get(key, (0, ()))
                if seen != last:
                    looks += 1
                    self._looks[key] = (looks, seen)
                alpha = cfg.alpha / (max(looks, 1) * (max(looks, 1) + 1)) / 2     # spent over the looks
                held = judge(cfg, base, cand, shadows.get((f"{model}@{baseline}", f"{model}@{version}")), alpha)
                self._streak[key] = self._streak.get(key, 0) + 1 if held else 0
                if held and self._streak[key] >= cfg.consecutive:
                    done.append(self._roll_back(model, version, baseline, held))
                    self._streak[key] = 0
        self._streak = {k: v for k, v in self._streak.items() if k in watching}
        self._looks = {k: v for k, v in self._looks.items() if k in watching}
        return done

    def _roll_back(self, model: str, version: str, baseline: str, held: list[tuple[str, str]]) -> Rollback:
        rule, detail = held[0]
        if self.before_change is not None:
            self.before_change(model, self.registry.weights(model))
        weights = {**self.registry.weights(model), version: 0.0}
        split = self.registry.set_weights(model, weights)
        r = Rollback(time.time(), model, version, baseline, rule, "; ".join(f"{k}: {d}" for k, d in held))
        self.rolled_back[(model, version)] = r
        self._looks.pop((model, version), None)   # judged afresh once it has a weight again
        self.rollbacks[(model, version)] = self.rollbacks.get((model, version), 0) + 1
        log.warning("model %s: version %s rolled back (weight 0) against %s: %s", model, version, baseline,
                    r.detail, extra={"event": "traffic.rolled_back", "model": model, "version": version,
                                     "fields": {"baseline": baseline, "rule": rule, "detail": r.detail,
                                                "shares": split.shares if split is not None else {}}})
        if self._history is not None:
            try:
                self._history.record(model, version, "rolled_back", f"against {baseline}: {r.detail}", "rollback")
            except Exception:
                log.exception("version history: recording the rollback of %s@%s failed", model, version)
        return r

    async def run(self) -> None:
        """Evaluate every ``evaluate_every_s`` until cancelled; a failing pass is logged and skipped."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.evaluate_every_s)
            if not self._watched():
                continue
            try:
                window = max(cfg.window_s for _, cfg, _, _ in self._watched())
                stats = await loop.run_in_executor(None, self._statistics, window)
                self.evaluate(stats)
            except Exception:
                log.exception("rollback evaluation failed; it goes on at the next pass")
