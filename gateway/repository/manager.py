"""Loads the repository into the registry and keeps it in step with the disk.

A new or changed version is loaded (on a worker thread) before the one it replaces
is released, and the replaced one finishes its queued requests before closing, so a
reload never drops a request. A version or config that fails to load is reported in
the registry and leaves every other model, and the old version, serving.
"""
from __future__ import annotations

import asyncio
import logging
import pathlib
from concurrent.futures import Executor

from ..config.model import ModelConfig, load_model_config
from ..config.settings import GatewaySettings, SettingsError
from ..core.batching import DynamicBatcher
from ..core.dataplane import confidence_observer
from ..core.registry import ModelEntry, ModelRegistry, ModelVersion
from ..policy import faults as fault_injection
from ..policy.state import ModelPolicy
from ..runtime.session import ModelLoadError, OnnxModel
from ..telemetry import InputBinning
from .scanner import ModelDir, scan

log = logging.getLogger("gateway.repository")


class RepositoryManager:
    def __init__(self, root: pathlib.Path, registry: ModelRegistry, executor: Executor,
                 settings: GatewaySettings, telemetry=None):
        self.root = root
        self.registry = registry
        self._executor = executor
        self._settings = settings
        self._telemetry = telemetry
        self._lock = asyncio.Lock()
        # What is loaded now: model -> (config fingerprint, config, {version: file fingerprint})
        self._loaded: dict[str, tuple[object, ModelConfig, dict[str, object]]] = {}
        self._closing: set[asyncio.Task] = set()

    async def reload(self) -> None:
        """Bring the registry in line with the repository on disk."""
        async with self._lock:
            try:
                found = scan(self.root)
            except OSError as exc:
                log.error("cannot read model repository %s: %s", self.root, exc,
                          extra={"event": "repository.unreadable"})
                return
            known = set(self._loaded) | {e.name for e in self.registry.entries()}
            for name in known - set(found):
                entry = self.registry.remove(name)
                self._loaded.pop(name, None)
                if entry is not None:
                    log.info("model %s removed from the repository; unloading", name,
                             extra={"event": "model.removed", "model": name})
                    self._retire(entry.versions.values())
            for name, model_dir in found.items():
                await self._sync_model(model_dir)

    async def _sync_model(self, model_dir: ModelDir) -> None:
        name = model_dir.name
        old_entry = self.registry.get(name)
        old_versions = dict(old_entry.versions) if old_entry else {}
        loaded = self._loaded.get(name)
        config_changed = loaded is None or loaded[0] != model_dir.config_fingerprint
        if config_changed:
            try:
                config = load_model_config(model_dir.config_path,
                                           allow_fault_injection=self._settings.allow_fault_injection)
            except SettingsError as exc:
                log.error("model %s: config rejected, keeping what is loaded: %s", name, exc,
                          extra={"event": "model.config_rejected", "model": name})
                entry = ModelEntry(name, old_versions, {**(old_entry.errors if old_entry else {}),
                                                        "config": str(exc)})
                self.registry.put(entry)
                return
        else:
            config = loaded[1]
        old_fps = loaded[2] if loaded else {}
        if config_changed and loaded is not None and old_fps == model_dir.versions and old_versions \
                and set(old_versions) == set(model_dir.versions) \
                and config.without_policy() == loaded[1].without_policy():
            if self._apply_policy(name, old_entry, config):
                self._loaded[name] = (model_dir.config_fingerprint, config, old_fps)
            return
        if not config_changed and old_fps == model_dir.versions and old_entry is not None \
                and "config" not in old_entry.errors:
            return  # nothing changed on disk since the last pass
        new_versions: dict[str, ModelVersion] = {}
        errors: dict[str, str] = {}
        fps: dict[str, object] = {}
        for version, fp in model_dir.versions.items():
            current = old_versions.get(version)
            if current is not None and not config_changed and old_fps.get(version) == fp:
                new_versions[version] = current
                fps[version] = fp
                continue
            try:
                new_versions[version] = await self._load(model_dir, version, config)
                fps[version] = fp
            except ModelLoadError as exc:
                log.error("model %s version %s failed to load: %s", name, version, exc,
                          extra={"event": "model.load_failed", "model": name, "version": version})
                errors[version] = str(exc)
                if current is not None:  # keep serving the old copy of this version
                    new_versions[version] = current
                    fps[version] = old_fps.get(version)
        if not model_dir.versions:
            errors["repository"] = f"no <version>/model.onnx under {model_dir.path}"
        self.registry.put(ModelEntry(name, new_versions, errors))
        self._loaded[name] = (model_dir.config_fingerprint, config, fps)
        replaced = [mv for v, mv in old_versions.items() if new_versions.get(v) is not mv]
        self._retire(replaced)
        if new_versions:
            latest = self.registry.get(name).latest
            log.info("model %s ready: versions %s, latest %s", name, sorted(new_versions), latest,
                     extra={"event": "model.loaded", "model": name, "version": latest})

    def _apply_policy(self, name: str, entry: ModelEntry, config: ModelConfig) -> bool:
        """A policy-only edit: switch every version's policy in place, without reloading sessions."""
        for mv in entry.versions.values():
            try:
                ModelPolicy(mv.served_by, config.policy, mv.model)  # dry run: does it fit the model?
            except ValueError as exc:
                log.error("model %s: config rejected, keeping what is loaded: %s", name, exc,
                          extra={"event": "model.config_rejected", "model": name})
                self.registry.put(ModelEntry(name, entry.versions, {**entry.errors, "config": str(exc)}))
                return False
        for mv in entry.versions.values():
            mv.policy.apply(config.policy)
            injector = getattr(mv.model, "faults", None)
            if injector is not None:
                injector.update(config.faults)
                fault_injection.announce(mv.served_by, config.faults)
        errors = {k: v for k, v in entry.errors.items() if k != "config"}
        self.registry.put(ModelEntry(name, entry.versions, errors))
        log.info("model %s: policy updated in place (versions %s)", name, sorted(entry.versions),
                 extra={"event": "model.policy_updated", "model": name})
        return True

    async def _load(self, model_dir: ModelDir, version: str, config: ModelConfig) -> ModelVersion:
        loop = asyncio.get_running_loop()
        settings = self._settings
        model = await loop.run_in_executor(
            None, OnnxModel, model_dir.model_path(version), model_dir.name, version, config,
            settings.execution_providers)
        if settings.allow_fault_injection:
            model = fault_injection.FaultyModel(model, fault_injection.FaultInjector(config.faults))
            fault_injection.announce(model.served_by, config.faults)
        try:
            policy = ModelPolicy(f"{model_dir.name}@{version}", config.policy, model)
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from None
        telemetry_id = 0
        if self._telemetry is not None:
            classes = None
            if model.classifier_output is not None:
                spec = next(s for s in model.outputs if s.name == model.classifier_output)
                classes = spec.shape[-1] if spec.shape[-1] > 0 else None
            features = {s.name: _features(s.shape) for s in model.inputs}
            telemetry_id = self._telemetry.register_model(
                model.name, version, inputs=features, classifier_classes=classes,
                logits=bool(config.classifier and config.classifier.logits), labels=list(config.labels) or None,
                input_binning=InputBinning(config.input_stats.bins, config.input_stats.warmup_rows,
                                           dict(config.input_stats.ranges)))
        batching = config.batching
        batcher = DynamicBatcher(
            model, self._executor,
            max_batch_size=model.max_batch_size if settings.batching else 0,
            max_queue_delay_us=batching.max_queue_delay_us,
            preferred_batch_sizes=batching.preferred_batch_sizes,
            max_queue_size=batching.max_queue_size,
            instance_count=config.instance_count,
            observer=confidence_observer(model, self._telemetry, telemetry_id),
            # injected latency must never sleep on the event loop
            inline_below_us=0 if settings.allow_fault_injection else settings.inline_execution_below_us)
        batcher.start()
        return ModelVersion(model_dir.name, version, model, batcher, telemetry_id, policy)

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
            await self.reload()


def _features(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape[1:]:
        if d < 0:
            return 0  # unknown until data arrives
        n *= d
    return n
