"""Turns a loaded model and its config into a servable :class:`ModelVersion`: policy, classifier
head, telemetry registration and observer, batcher. The repository layer asks; this decides."""
from __future__ import annotations

import logging
from concurrent.futures import Executor
from dataclasses import dataclass

from ..config.model import ModelConfig
from ..config.profile import ReferenceProfile
from ..policy import faults as fault_injection
from ..policy.state import ModelPolicy
from .batching import DynamicBatcher
from .observers import Decisions, ModelObservers
from .postprocess import ClassifierHead
from .registry import ModelVersion, Runtime

log = logging.getLogger("gateway.core")


@dataclass(frozen=True)
class AssemblyOptions:
    """The server-wide settings that shape every version."""

    batching: bool = True
    inline_execution_below_us: int = 250
    allow_fault_injection: bool = False


class InvalidPolicy(ValueError):
    """The version's ``policy:`` block does not fit the model (e.g. a static answer of the wrong shape)."""


class Assembler:
    def __init__(self, executor: Executor, options: AssemblyOptions, *,
                 observers: ModelObservers | None = None, decisions: Decisions | None = None) -> None:
        self._executor = executor
        self._options = options
        self._observers = observers
        self._decisions = decisions or Decisions()

    def policy(self, served_by: str, config: ModelConfig, model: Runtime,
               profile: ReferenceProfile | None = None) -> ModelPolicy:
        """The version's policy; raises :class:`InvalidPolicy` when it does not fit the model.
        ``profile`` gives the outlier gate its reference (without one the gate is off)."""
        decisions = self._decisions

        def on_transition(name: str, frm: str, to: str) -> None:
            decisions(None, "circuit_breaker.transition", model=name, **{"from": frm, "to": to})

        try:
            return ModelPolicy(served_by, config.policy, model.outputs, model.batchable,
                               on_transition=on_transition if decisions else None,
                               outlier_reference=profile.outlier_references() if profile is not None else None)
        except ValueError as exc:
            raise InvalidPolicy(str(exc)) from None

    def build(self, model: Runtime, config: ModelConfig, *, profile: ReferenceProfile | None = None) -> ModelVersion:
        """Everything but the session; starts the version's batcher (call on the event loop).
        ``profile``: the version's reference profile (None: captured from its first rows)."""
        options = self._options
        if options.allow_fault_injection:
            model = fault_injection.FaultyModel(model, fault_injection.FaultInjector(config.faults))
            fault_injection.announce(model.served_by, config.faults)
        policy = self.policy(model.served_by, config, model, profile)
        if config.policy.outliers.enabled and profile is None:
            log.warning("model %s: policy.outliers is on but the version has no reference profile "
                        "(profile.npz): no request is checked", model.served_by,
                        extra={"event": "model.outliers_off", "model": model.name, "version": model.version})
        logits = bool(config.classifier and config.classifier.logits)
        labels = tuple(config.labels)
        head = ClassifierHead(model.classifier_output, logits, labels) \
            if model.classifier_output is not None else None
        telemetry_id = 0
        observer = None
        monitored = config.monitoring.enabled
        if self._observers is not None and not monitored:
            # latency, throughput and errors only: no statistics per batch, no reference
            telemetry_id = self._observers.register(
                model.name, model.version, inputs={}, classes=None, logits=logits, labels=list(labels) or None,
                input_stats=config.input_stats)
        elif self._observers is not None:
            classes = None
            if model.classifier_output is not None:
                spec = next(s for s in model.outputs if s.name == model.classifier_output)
                classes = spec.shape[-1] if spec.shape[-1] > 0 else None
            telemetry_id = self._observers.register(
                model.name, model.version, inputs={s.name: _features(s.shape) for s in model.inputs},
                classes=classes, logits=logits, labels=list(labels) or None, input_stats=config.input_stats,
                profile=profile, outlier_thresholds=(config.policy.outliers.max_out_of_range,
                                                     config.policy.outliers.max_robust_z))
            value_output = None
            if model.classifier_output is None:
                first = model.outputs[0] if model.outputs else None
                if first is not None and first.dtype.kind in "fiu" and first.shape and first.shape[0] == -1:
                    value_output = first.name
            observer = self._observers.batch_observer(telemetry_id, model.classifier_output, logits, value_output)
        batching = config.batching
        batcher = DynamicBatcher(
            model, self._executor,
            max_batch_size=model.max_batch_size if options.batching else 0,
            max_queue_delay_us=batching.max_queue_delay_us,
            preferred_batch_sizes=batching.preferred_batch_sizes,
            max_queue_size=batching.max_queue_size,
            instance_count=config.instance_count,
            head=head, observer=observer,
            # injected latency must never sleep on the event loop
            inline_below_us=0 if options.allow_fault_injection else options.inline_execution_below_us)
        batcher.start()
        return ModelVersion(model.name, model.version, model, batcher, policy, head, labels, telemetry_id,
                            monitored)


def _features(shape: tuple[int, ...]) -> int:
    """Features per row of an input (0 while a dimension is unknown until data arrives)."""
    n = 1
    for d in shape[1:]:
        if d < 0:
            return 0
        n *= d
    return n
