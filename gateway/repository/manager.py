"""Loads the repository into the registry and keeps it in step with the disk.

A new or changed version is loaded (on a worker thread) before the one it replaces
is released, and the replaced one finishes its queued requests before closing, so a
reload never drops a request. A version or config that fails to load is reported in
the registry and leaves every other model, and the old version, serving. It is tried
again when its files change (or on an explicit retry, SIGHUP), not at every poll, so
each failure is logged once.

Explicit control (:meth:`RepositoryManager.load_model` / :meth:`RepositoryManager.unload_model`,
the admin calls of the Open Inference Protocol): an unloaded model leaves the registry as a
model removed from disk would, and stays unloaded, whatever later passes find on disk, until
it is loaded again; loading one syncs it from disk now, retrying what failed.

A change to ``labels`` or ``classifier:`` reloads the model's sessions like any change
beyond ``policy:``/``faults:``: the classifier head, the version's labels and its
telemetry registration are built from one config with the runtime that resolved the
classifier output, and requests already queued finish on the version they were routed to.
"""
from __future__ import annotations

import asyncio
import logging
import pathlib
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor

from ..api import GatewayError, Status, not_found, quote
from ..api.history import HistorySink
from ..config.model import ModelConfig, load_model_config
from ..config.profile import ProfileError, ReferenceProfile, load_profile
from ..config.settings import SettingsError
from ..core.assembly import Assembler, InvalidPolicy
from ..core.registry import ModelEntry, ModelRegistry, ModelVersion, version_key
from ..policy import faults as fault_injection
from ..runtime.session import ModelLoadError, OnnxModel
from .scanner import ModelDir, scan

log = logging.getLogger("gateway.repository")


class RepositoryManager:
    def __init__(self, root: pathlib.Path, registry: ModelRegistry, assembler: Assembler, *,
                 default_providers: Sequence[str] | None = None, allow_fault_injection: bool = False,
                 loader: Executor | None = None, on_reloaded: Callable[[], Awaitable[None]] | None = None,
                 history: HistorySink | None = None):
        self.root = root
        self.registry = registry
        self._assembler = assembler
        self._default_providers = default_providers
        self._allow_faults = allow_fault_injection
        self._loader = loader  # where sessions are created (None: the loop's default executor)
        self._lock = asyncio.Lock()
        # What is loaded now: model -> (config fingerprint, config, {version: file fingerprint})
        self._loaded: dict[str, tuple[object, ModelConfig, dict[str, object]]] = {}
        # Failures reported and unchanged on disk since: model -> {version: (file fingerprint,
        # error)}, and model -> (config fingerprint, error) for a rejected config.yaml.
        self._failed: dict[str, dict[str, tuple[object, str]]] = {}
        self._rejected: dict[str, tuple[object, str]] = {}
        self._traffic: dict[str, dict[str, float]] = {}   # model -> the traffic weights its config gave
        self._shadow: dict[str, dict[str, float]] = {}    # model -> the shadow shares its config gave
        self._unreadable = False  # the root could not be scanned at the last pass (logged once)
        self._on_reloaded = on_reloaded  # after every pass (health follows what is loaded)
        self._closing: set[asyncio.Task] = set()
        self._history = history  # loads, failed loads, unloads, weights and policy edits, recorded
        self._unloaded: set[str] = set()  # models unloaded on request (kept out until loaded)

    def _record(self, model: str, version: str, kind: str, detail: str, source: str = "repository") -> None:
        if self._history is not None:
            try:
                self._history.record(model, version, kind, detail, source)
            except Exception:  # the history observes: it never stops a reload
                log.exception("version history: recording %s of %s failed", kind, model)

    async def reload(self, *, retry_failed: bool = False) -> None:
        """Bring the registry in line with the repository on disk; ``retry_failed`` also tries
        again what failed and has not changed since (an operator may have fixed what it needed)."""
        async with self._lock:  # (the hook too: what it reports follows the passes in order)
            await self._sync(retry_failed)
            if self._on_reloaded is not None:
                await self._on_reloaded()

    async def _sync(self, retry_failed: bool) -> None:
        try:
            found = scan(self.root)
        except OSError as exc:
            if not self._unreadable:
                log.error("cannot read model repository %s: %s (keeping what is loaded)", self.root, exc,
                          extra={"event": "repository.unreadable"})
            self._unreadable = True
            return
        if self._unreadable:
            self._unreadable = False
            log.info("model repository %s is readable again", self.root, extra={"event": "repository.readable"})
        found = {name: d for name, d in found.items() if name not in self._unloaded}
        known = set(self._loaded) | {e.name for e in self.registry.entries()}
        for name in known - set(found):
            self._drop(name, "removed from the repository", "the model was removed from the repository")
        for name, model_dir in found.items():
            await self._sync_model(model_dir, retry_failed)

    def _drop(self, name: str, why: str, detail: str, source: str = "repository") -> bool:
        """Take the model out of the registry (its versions finish their queues), recording
        ``detail`` in the history; False when it held none."""
        entry = self.registry.remove(name)
        self.registry.set_weights(name, {})
        self.registry.set_shadow(name, {})
        self.registry.set_rollback(name, None)
        self._traffic.pop(name, None)
        self._shadow.pop(name, None)
        self._loaded.pop(name, None)
        self._failed.pop(name, None)
        self._rejected.pop(name, None)
        if entry is None:
            return False
        log.info("model %s %s; unloading", name, why, extra={"event": "model.removed", "model": name})
        for v in sorted(entry.versions, key=version_key):
            self._record(name, v, "unloaded", detail, source)
        self._retire(entry.versions.values())
        return True

    async def load_model(self, name: str) -> None:
        """Load (or reload) ``name`` from disk now, retrying what failed before. NOT_FOUND when
        the repository has no such model; UNAVAILABLE, with the reasons, when no version of it
        could be loaded (versions that did load serve)."""
        async with self._lock:
            try:
                found = scan(self.root)
            except OSError as exc:
                raise GatewayError(Status.UNAVAILABLE, f"cannot read model repository {self.root}: "
                                   f"{exc.strerror or exc}") from None
            model_dir = found.get(name)
            if model_dir is None:
                known = ", ".join(sorted(found)) or "none"
                raise not_found(f"model {quote(name)} is not in the repository (models: {known})")
            self._unloaded.discard(name)
            await self._sync_model(model_dir, retry_failed=True, source="admin")
            if self._on_reloaded is not None:
                await self._on_reloaded()
            entry = self.registry.get(name)
        if entry is None or not entry.versions:
            why = entry.describe_errors() if entry is not None else "nothing loaded"
            raise GatewayError(Status.UNAVAILABLE, f"model {quote(name)} failed to load: {why}")
        log.info("model %s loaded on request", name, extra={"event": "model.load_requested", "model": name})

    async def unload_model(self, name: str) -> None:
        """Unload ``name`` (its queued requests finish first) and keep it unloaded until
        :meth:`load_model`. NOT_FOUND when it is neither loaded nor in the repository."""
        async with self._lock:
            dropped = self._drop(name, "unloaded on request", "unloaded on request (RepositoryModelUnload)", "admin")
            if not dropped and name not in self._unloaded:
                try:
                    on_disk = name in scan(self.root)
                except OSError:
                    on_disk = False
                if not on_disk:
                    raise not_found(f"model {quote(name)} is not loaded")
            self._unloaded.add(name)
            if self._on_reloaded is not None:
                await self._on_reloaded()

    def unloaded(self) -> list[str]:
        """The models unloaded on request (sorted)."""
        return sorted(self._unloaded)

    async def _sync_model(self, model_dir: ModelDir, retry_failed: bool = False, source: str = "repository") -> None:
        name = model_dir.name
        old_entry = self.registry.get(name)
        old_versions = dict(old_entry.versions) if old_entry else {}
        loaded = self._loaded.get(name)
        config_changed = loaded is None or loaded[0] != model_dir.config_fingerprint
        if config_changed:
            rejected = self._rejected.get(name)
            if rejected is not None and rejected[0] == model_dir.config_fingerprint and not retry_failed:
                return  # rejected at an earlier pass and unchanged since: reported then
            try:
                config = load_model_config(model_dir.config_path, allow_fault_injection=self._allow_faults)
            except SettingsError as exc:
                log.error("model %s: config rejected, keeping what is loaded: %s", name, exc,
                          extra={"event": "model.config_rejected", "model": name})
                self._rejected[name] = (model_dir.config_fingerprint, str(exc))
                entry = ModelEntry(name, old_versions, {**(old_entry.errors if old_entry else {}),
                                                        "config": str(exc)})
                self.registry.put(entry)
                return
        else:
            assert loaded is not None  # (the config is unchanged only when it was loaded before)
            config = loaded[1]
        old_fps = loaded[2] if loaded else {}
        if config_changed and loaded is not None and old_fps == model_dir.versions and old_versions \
                and set(old_versions) == set(model_dir.versions) \
                and config.without_policy() == loaded[1].without_policy():
            assert old_entry is not None  # (old_versions came from it)
            if self._apply_policy(name, old_entry, config, model_dir.config_fingerprint):
                self._loaded[name] = (model_dir.config_fingerprint, config, old_fps)
                self._apply_traffic(name, config)
            return
        self._rejected.pop(name, None)
        failed = {} if retry_failed or config_changed else self._failed.get(name, {})
        seen = {**old_fps, **{v: fp for v, (fp, _) in failed.items()}}
        if not config_changed and seen == model_dir.versions and old_entry is not None \
                and "config" not in old_entry.errors:
            return  # nothing changed on disk since the last pass (failures were reported then)
        new_versions: dict[str, ModelVersion] = {}
        errors: dict[str, str] = {}
        fps: dict[str, object] = {}
        failed_now: dict[str, tuple[object, str]] = {}
        for version, fp in model_dir.versions.items():
            current = old_versions.get(version)
            if current is not None and not config_changed and old_fps.get(version) == fp:
                new_versions[version] = current
                fps[version] = fp
                continue
            earlier = failed.get(version)
            if earlier is not None and earlier[0] == fp:  # failed before, unchanged: not logged again
                errors[version] = earlier[1]
                failed_now[version] = earlier
            else:
                try:
                    new_versions[version] = mv = await self._load(model_dir, version, config)
                    fps[version] = fp
                    why = ("its files or the model's config changed; replaces the copy loaded before"
                           if current is not None else "found in the repository")
                    if source == "admin":
                        why = "loaded on request (RepositoryModelLoad)" + ("; replaces the copy loaded before"
                                                                           if current is not None else "")
                    self._record(name, version, "loaded", f"{why} (on {mv.model.provider})", source)
                    continue
                except ModelLoadError as exc:
                    log.error("model %s version %s failed to load: %s", name, version, exc,
                              extra={"event": "model.load_failed", "model": name, "version": version})
                    errors[version] = str(exc)
                    failed_now[version] = (fp, str(exc))
                    self._record(name, version, "load_failed",
                                 str(exc) + ("; the copy loaded before keeps serving" if current is not None else ""),
                                 source)
            if current is not None:  # keep serving the old copy of this version
                new_versions[version] = current
                fps[version] = old_fps.get(version)
        if not model_dir.versions:
            errors["repository"] = f"no <version>/model.onnx under {model_dir.path}"
        self.registry.put(ModelEntry(name, new_versions, errors))
        self._loaded[name] = (model_dir.config_fingerprint, config, fps)
        self._apply_traffic(name, config)
        self._failed[name] = failed_now
        replaced = [mv for v, mv in old_versions.items() if new_versions.get(v) is not mv]
        for v in sorted(set(old_versions) - set(new_versions), key=version_key):
            self._record(name, v, "unloaded", "its version directory left the repository")
        self._retire(replaced)
        if new_versions:
            new_entry = self.registry.get(name)
            assert new_entry is not None  # (put above)
            latest = new_entry.latest
            log.info("model %s ready: versions %s, latest %s", name, sorted(new_versions, key=version_key), latest,
                     extra={"event": "model.loaded", "model": name, "version": latest})

    def _apply_traffic(self, name: str, config: ModelConfig) -> None:
        """The config's traffic weights, when they differ from those it gave before (a weight
        set at run time stays until the config's own weights change)."""
        self.registry.set_rollback(name, config.traffic.rollback if config.traffic.rollback.enabled else None)
        shadow = dict(config.traffic.shadow)
        if self._shadow.get(name, {}) != shadow:
            self._shadow[name] = shadow
            self.registry.set_shadow(name, shadow)
            self._record(name, "", "shadow", ", ".join(f"{v}: {s:.4g}" for v, s in shadow.items())
                         or "off", "config")
            log.info("model %s: shadow traffic %s (from its config)", name, shadow or "off",
                     extra={"event": "traffic.shadow", "model": name, "fields": {"shadow": shadow, "source": "config"}})
        weights = dict(config.traffic.weights)
        if self._traffic.get(name, {}) == weights:
            return
        self._traffic[name] = weights
        split = self.registry.set_weights(name, weights)
        self._record(name, "", "weights", (", ".join(f"{v}: {s:.4g}" for v, s in split.shares.items())
                                           if split is not None else "none: the latest version takes everything")
                     + (f" (asked for {weights})" if weights else ""), "config")
        entry = self.registry.get(name)
        missing = sorted(set(weights) - set(entry.versions if entry is not None else ()), key=version_key)
        log.info("model %s: traffic %s (from its config)%s", name,
                 split.shares if split is not None else "all to the latest version",
                 f"; versions not loaded, no share until they are: {missing}" if missing else "",
                 extra={"event": "traffic.weights", "model": name,
                        "fields": {"weights": weights, "source": "config", "not_loaded": missing}})

    def _apply_policy(self, name: str, entry: ModelEntry, config: ModelConfig,
                      config_fingerprint: object) -> bool:
        """A policy-only edit: switch every version's policy in place, without reloading sessions."""
        for mv in entry.versions.values():
            try:
                self._assembler.policy(mv.served_by, config, mv.model)  # dry run: does it fit the model?
            except InvalidPolicy as exc:
                log.error("model %s: config rejected, keeping what is loaded: %s", name, exc,
                          extra={"event": "model.config_rejected", "model": name})
                self._rejected[name] = (config_fingerprint, str(exc))
                self.registry.put(ModelEntry(name, entry.versions, {**entry.errors, "config": str(exc)}))
                return False
        for mv in entry.versions.values():
            mv.policy.apply(config.policy)
            injector = getattr(mv.model, "faults", None)
            if injector is not None:
                injector.update(config.faults)
                fault_injection.announce(mv.served_by, config.faults)
        errors = {k: v for k, v in entry.errors.items() if k != "config"}
        self._rejected.pop(name, None)
        self.registry.put(ModelEntry(name, entry.versions, errors))
        log.info("model %s: policy updated in place (versions %s)", name, sorted(entry.versions, key=version_key),
                 extra={"event": "model.policy_updated", "model": name})
        for v in sorted(entry.versions, key=version_key):
            self._record(name, v, "policy_updated", "the model's config.yaml changed its policy only", "config")
        return True

    async def _load(self, model_dir: ModelDir, version: str, config: ModelConfig) -> ModelVersion:
        loop = asyncio.get_running_loop()
        model = await loop.run_in_executor(
            self._loader, OnnxModel, model_dir.model_path(version), model_dir.name, version, config,
            self._default_providers)
        profile = None
        if model_dir.versions[version][1] is not None:
            profile = await loop.run_in_executor(self._loader, _profile_for, model_dir.profile_path(version), model)
        try:
            return self._assembler.build(model, config, profile=profile)
        except InvalidPolicy as exc:
            raise ModelLoadError(str(exc)) from None

    def _retire(self, versions) -> None:
        for mv in versions:
            task = asyncio.get_running_loop().create_task(mv.batcher.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            log.info("model %s: released (after finishing its queued requests)", mv.served_by,
                     extra={"event": "model.released", "model": mv.name, "version": mv.version})

    async def close(self) -> None:
        """Finish queued work on every version and stop their batchers."""
        async with self._lock:
            for entry in self.registry.entries():
                self._retire(entry.versions.values())
            if self._closing:
                await asyncio.gather(*self._closing, return_exceptions=True)

    async def poll(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.reload()
            except Exception:  # a bug in one pass must not end polling for good
                log.exception("repository reload failed; polling goes on")


def _profile_for(path: pathlib.Path, model: OnnxModel) -> ReferenceProfile | None:
    """The version's reference profile, or None when it is unusable: the version serves
    regardless (monitoring never decides what is served), with a reference captured from its
    first rows instead, and the reason logged."""
    try:
        profile = load_profile(path)
        for spec in model.inputs:
            fp = profile.inputs.get(spec.name)
            if fp is None:
                raise ProfileError(f"{path}: no statistics of input {spec.name!r}")
            width = 1
            for d in spec.shape[1:]:
                width = width * d if d >= 0 and width >= 0 else -1
            if width >= 0 and fp.features != width:
                raise ProfileError(f"{path}: input {spec.name!r} has {fp.features} features in the profile, "
                                   f"{width} in the model")
        unknown = sorted(set(profile.inputs) - {s.name for s in model.inputs})
        if unknown:
            raise ProfileError(f"{path}: the model has no input {unknown[0][:100]!r}")
    except ProfileError as exc:
        log.error("model %s: reference profile rejected, capturing one from its first rows instead: %s",
                  model.served_by, exc, extra={"event": "model.profile_rejected", "model": model.name,
                                               "version": model.version})
        return None
    log.info("model %s: reference profile of %d rows loaded from %s", model.served_by, profile.rows, path,
             extra={"event": "model.profile_loaded", "model": model.name, "version": model.version})
    return profile
