"""Traffic administration: set weights, promote, roll back, start and stop shadowing, reload
profiles — what the admin calls (``gateway.v1.Admin``, ``gateway traffic ...``) do, behind the
admin token the adapter checks.

Every change is applied by swapping the registry's split or shadows whole (requests in flight
keep the version they were routed to, none is dropped), logged as an audit event (logger
``gateway.lifecycle``, event ``admin.<operation>``, with the model, the state before and after,
the reason given and the caller's address; never the token) and recorded in the version history
(source ``admin``). Weights set here stay in force until the next admin change, an automatic
rollback, or an edit of the model's own ``traffic.weights`` in its config.yaml (which wins from
then on); they do not outlive a restart, where the config's weights apply again.

``roll_back`` returns a model to the weights before its last change made here or by an automatic
rollback (a stack of at most :data:`UNDO_KEPT` per model).

With ``gateway serve --workers N`` an admin call lands on one worker; :meth:`propagate` then
sends the model's resulting weights and shadow shares (or the reload) to every other worker
over their private sockets, which apply them as they are (:meth:`apply_from_peer`: logged,
not recorded again in the history). A worker that is restarting misses it and comes back with
its config's traffic; the call's answer says on how many workers the change is in force.
"""
from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable

from ..api import GatewayError, Status, invalid, not_found, quote
from ..api.history import HistorySink
from ..api.traffic import TrafficState
from ..core.registry import ModelRegistry, version_key
from .rollback import RollbackWatcher

log = logging.getLogger("gateway.lifecycle")

UNDO_KEPT = 16
MAX_REASON_CHARS = 500


class TrafficAdmin:
    def __init__(self, registry: ModelRegistry, *, history: HistorySink | None = None,
                 rollback: RollbackWatcher | None = None,
                 reload: Callable[[], Awaitable[None]] | None = None,
                 references: Callable[[str], dict[str, str]] | None = None,
                 peers: Callable[[str, dict], tuple[int, int]] | None = None) -> None:
        self.registry = registry
        self._history = history
        self._rollback = rollback
        self._reload = reload
        self._references = references      # model -> {version: "given" | "captured" | ...}
        self._undo: dict[str, list[dict[str, float]]] = {}
        self._peers = peers    # the other workers' (gateway.workers.worker.Peers.push), or None

    # -- reading ----------------------------------------------------------------------------
    def _entry(self, model: str):
        entry = self.registry.get(model)
        if entry is None:
            raise not_found(f"model {quote(model)} not found", "unknown_model")
        return entry

    def state(self, model: str) -> TrafficState:
        entry = self._entry(model)
        split = self.registry.split(model)
        weights = self.registry.weights(model)
        rolled = tuple(v for v in sorted(weights, key=version_key)
                       if self._rollback is not None and self._rollback.is_rolled_back(model, v))
        undo = self._undo.get(model)
        return TrafficState(model, weights, dict(split.shares) if split is not None else {}, entry.latest or "",
                            self.registry.shadow_shares(model), rolled, dict(undo[-1]) if undo else None)

    # -- changing ---------------------------------------------------------------------------
    def _checked(self, model: str, shares: dict[str, float], what: str, *, unit: bool) -> dict[str, float]:
        entry = self._entry(model)
        out: dict[str, float] = {}
        for version, value in shares.items():
            if version not in entry.versions:
                loaded = ", ".join(sorted(entry.versions, key=version_key)) or "none"
                raise not_found(f"model {quote(model)} has no version {quote(version)} loaded (loaded: {loaded})",
                                "unknown_version")
            if not math.isfinite(value) or value < 0 or (unit and value > 1):
                raise invalid(f"{what} of version {quote(version)} must be {'in [0, 1]' if unit else 'a finite number >= 0'}, "
                              f"got {value}")
            out[version] = float(value)
        return out

    def set_weights(self, model: str, weights: dict[str, float], reason: str, actor: str) -> TrafficState:
        weights = self._checked(model, weights, "the weight", unit=False)
        if weights and not any(weights.values()):
            raise invalid("the weights are all 0: give at least one version a share")
        return self._apply(model, weights, "set_weights", "weights", reason, actor)

    def promote(self, model: str, version: str, reason: str, actor: str) -> TrafficState:
        self._checked(model, {version: 1.0}, "the weight", unit=False)
        return self._apply(model, {version: 1.0}, "promote", "promoted", reason, actor, version=version)

    def roll_back(self, model: str, reason: str, actor: str) -> TrafficState:
        self._entry(model)
        undo = self._undo.get(model)
        if not undo:
            raise GatewayError(Status.FAILED_PRECONDITION, f"model {quote(model)}: no traffic change to roll back "
                               "(only changes made by admin calls or automatic rollbacks since the start are kept)")
        before = self.registry.weights(model)
        weights = undo.pop()
        self.registry.set_weights(model, weights)
        self._audit(model, "roll_back", "rolled_back", before, weights, reason, actor)
        return self.state(model)

    def set_shadow(self, model: str, shares: dict[str, float], reason: str, actor: str) -> TrafficState:
        shares = self._checked(model, shares, "the shadow share", unit=True)
        before = self.registry.shadow_shares(model)
        self.registry.set_shadow(model, shares)
        self._audit(model, "set_shadow", "shadow", before, self.registry.shadow_shares(model), reason, actor)
        return self.state(model)

    async def reload_profiles(self, model: str, reason: str, actor: str) -> dict[str, str]:
        """Rescan the repository (a changed ``profile.npz`` reloads its version, dropping nothing);
        the reference each of ``model``'s versions (or every model's) now has."""
        if model:
            self._entry(model)
        if self._reload is None:
            raise GatewayError(Status.FAILED_PRECONDITION, "this server has no model repository to reload")
        await self._reload()
        refs: dict[str, str] = {}
        for entry in self.registry.entries():
            if model and entry.name != model:
                continue
            found = self._references(entry.name) if self._references is not None else {}
            for v in sorted(entry.versions, key=version_key):
                refs[f"{entry.name}@{v}"] = found.get(v, "")
        log.info("admin: profiles reloaded (%s)%s", model or "every model", _why(reason),
                 extra={"event": "admin.reload_profiles", "model": model,
                        "fields": {"references": refs, "reason": reason[:MAX_REASON_CHARS], "actor": actor}})
        return refs

    async def propagate(self, model: str, *, reload: bool = False) -> tuple[int, int]:
        """Send ``model``'s traffic (or a reload) to the other workers: (how many took it, of how
        many others); (0, 0) in a single-process server."""
        if self._peers is None:
            return 0, 0
        payload = {"reload": True} if reload else {
            "model": model, "weights": self.registry.weights(model), "shadow": self.registry.shadow_shares(model)}
        loop = asyncio.get_running_loop()
        took, others = await loop.run_in_executor(None, self._peers, "/reload" if reload else "/traffic", payload)
        if took < others:
            log.warning("admin: %s reached %d of the %d other workers (the rest are restarting?)",
                        "the reload" if reload else f"model {model}'s traffic", took, others,
                        extra={"event": "admin.propagated", "model": model, "fields": {"took": took, "others": others}})
        return took, others

    def apply_from_peer(self, payload: dict) -> None:
        """A change an admin call made on another worker: its resulting weights and shadows."""
        model = payload.get("model")
        weights, shadow = payload.get("weights"), payload.get("shadow")
        if not isinstance(model, str) or not isinstance(weights, dict) or not isinstance(shadow, dict):
            raise ValueError("expected {model, weights, shadow}")
        self._entry(model)
        weights = {str(v): float(w) for v, w in weights.items()}
        shadow = {str(v): float(s) for v, s in shadow.items()}
        if self.registry.weights(model) != weights:
            self.remember(model, self.registry.weights(model))
            self.registry.set_weights(model, weights)
        if self.registry.shadow_shares(model) != shadow:
            self.registry.set_shadow(model, shadow)
        log.info("admin: model %s traffic from another worker: weights %s, shadow %s", model, weights or "latest",
                 shadow or "off", extra={"event": "admin.from_worker", "model": model,
                                         "fields": {"weights": weights, "shadow": shadow}})

    def remember(self, model: str, weights: dict[str, float]) -> None:
        """Keep ``weights`` as what a roll back returns to (called before a change)."""
        stack = self._undo.setdefault(model, [])
        stack.append(dict(weights))
        del stack[:-UNDO_KEPT]

    def _apply(self, model: str, weights: dict[str, float], op: str, kind: str, reason: str, actor: str,
               version: str = "") -> TrafficState:
        before = self.registry.weights(model)
        self.remember(model, before)
        self.registry.set_weights(model, weights)
        self._audit(model, op, kind, before, weights, reason, actor, version)
        return self.state(model)

    def _audit(self, model: str, op: str, kind: str, before: dict, after: dict, reason: str, actor: str,
               version: str = "") -> None:
        reason = reason[:MAX_REASON_CHARS]
        log.warning("admin: model %s %s: %s -> %s%s (by %s)", model, op, before or "latest", after or "latest",
                    _why(reason), actor or "?",
                    extra={"event": f"admin.{op}", "model": model, "version": version,
                           "fields": {"before": before, "after": after, "reason": reason, "actor": actor}})
        if self._history is not None:
            shown = ", ".join(f"{v}: {w:g}" for v, w in after.items()) or "none: the latest takes everything"
            try:
                self._history.record(model, version, kind, f"{shown}{_why(reason)}", "admin")
            except Exception:
                log.exception("version history: recording %s of %s failed", op, model)


def _why(reason: str) -> str:
    return f" ({reason})" if reason else ""
