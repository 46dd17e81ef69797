"""One loaded model version: an onnxruntime session plus the metadata the core validates against."""
from __future__ import annotations

import logging
import pathlib
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from ..config.model import ModelConfig
from ..api import TensorSpec
from . import providers

log = logging.getLogger("gateway.runtime")


# ONNX tensor type strings -> numpy dtypes (the element types the gateway carries).
ONNX_TO_NUMPY: dict[str, np.dtype] = {
    "tensor(bool)": np.dtype("?"),
    "tensor(uint8)": np.dtype("u1"),
    "tensor(int8)": np.dtype("i1"),
    "tensor(uint16)": np.dtype("<u2"),
    "tensor(int16)": np.dtype("<i2"),
    "tensor(uint32)": np.dtype("<u4"),
    "tensor(int32)": np.dtype("<i4"),
    "tensor(uint64)": np.dtype("<u8"),
    "tensor(int64)": np.dtype("<i8"),
    "tensor(float16)": np.dtype("<f2"),
    "tensor(float)": np.dtype("<f4"),
    "tensor(double)": np.dtype("<f8"),
}


class ModelLoadError(RuntimeError):
    """The model file could not be turned into a usable session."""


def _spec(node, overrides: dict[str, list[int]]) -> TensorSpec:
    dtype = ONNX_TO_NUMPY.get(node.type)
    if dtype is None:
        raise ModelLoadError(f"tensor {node.name!r} has unsupported type {node.type}")
    if node.name in overrides:
        shape = tuple(int(d) for d in overrides[node.name])
    else:
        # Symbolic ("batch") and unknown (None) dimensions are dynamic.
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
    return TensorSpec(node.name, dtype, shape)


class OnnxModel:
    """A model version ready to run. ``run`` is thread-safe (onnxruntime sessions are)."""

    def __init__(self, path: pathlib.Path, name: str, version: str, config: ModelConfig,
                 default_providers: Sequence[str] | None = None):
        self.path = path
        self.name = name
        self.version = version
        self.config = config
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # onnxruntime's CPU arena grows to the largest batch it has run (in power-of-two steps)
        # and never shrinks: one 100k-row request kept hundreds of MB resident for good. Without
        # it tensors come from malloc, which returns large blocks (gateway.memory); the demo
        # models measured no slower (bench/RESULTS.md, "Memory"). A model with large
        # activations can turn it back on (cpu_memory_arena: page faults on every batch).
        options.enable_cpu_mem_arena = config.cpu_memory_arena
        # onnxruntime-gpu prints loader errors when CUDA libraries are missing and then
        # silently uses the CPU; keep that noise out and say what happened in one line.
        quiet = not log.isEnabledFor(logging.DEBUG)
        options.log_severity_level = 4 if quiet else 1
        ort.set_default_logger_severity(4 if quiet else 1)  # the provider loader logs here
        wanted = providers.requested(config.execution_providers or default_providers)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=wanted)
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise ModelLoadError(f"{path}: {exc}") from None
        self.provider = self.session.get_providers()[0]
        if self.provider != wanted[0]:
            providers.note_fallback(wanted[0], self.provider)
        log.info("model %s@%s: running on %s", name, version, self.provider,
                 extra={"event": "model.provider", "model": name, "version": version,
                        "fields": {"provider": self.provider}})
        graph_inputs = [n.name for n in self.session.get_inputs()]
        graph_outputs = [n.name for n in self.session.get_outputs()]
        for key, named, kind, names in (
                ("inputs", [o.name for o in config.inputs], "inputs", graph_inputs),
                ("outputs", [o.name for o in config.outputs], "outputs", graph_outputs),
                ("input_stats.ranges", list(config.input_stats.ranges), "inputs", graph_inputs)):
            for tensor in named:
                if tensor not in names:
                    raise ModelLoadError(f"model {name}@{version}: config {key} names {tensor!r}, which the "
                                         f"graph does not have (its {kind}: {', '.join(names)})")
        in_over = {o.name: o.shape for o in config.inputs if o.shape is not None}
        out_over = {o.name: o.shape for o in config.outputs if o.shape is not None}
        self.inputs = [_spec(n, in_over) for n in self.session.get_inputs()]
        self.outputs = [_spec(n, out_over) for n in self.session.get_outputs()]
        self.input_by_name = {s.name: s for s in self.inputs}
        self.output_names = [s.name for s in self.outputs]
        # Batchable: every input and output has a dynamic leading dimension.
        self.batchable = all(len(s.shape) >= 1 and s.shape[0] == -1 for s in self.inputs + self.outputs)
        self.max_batch_size = config.batching.max_batch_size if self.batchable and config.batching.enabled else 0
        self.classifier_output = self._classifier_output()
        self._use_io_binding = self.provider == "CUDAExecutionProvider"

    @property
    def served_by(self) -> str:
        return f"{self.name}@{self.version}"

    def _classifier_output(self) -> str | None:
        cfg = self.config
        if cfg.classifier is None and not cfg.labels:
            return None
        wanted = cfg.classifier.output if cfg.classifier and cfg.classifier.output else None
        for spec in self.outputs:
            if wanted is not None and spec.name == wanted:
                return spec.name
            if wanted is None and len(spec.shape) == 2 and spec.dtype.kind == "f":
                return spec.name
        raise ModelLoadError(
            f"model {self.name}@{self.version}: classifier output "
            f"{wanted or '(a 2-D float output)'} not found among {self.output_names}")

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> list[np.ndarray]:
        names = output_names or self.output_names
        if self._use_io_binding:
            binding = self.session.io_binding()
            for key, value in feeds.items():
                binding.bind_cpu_input(key, value)
            for key in names:
                binding.bind_output(key, "cpu")
            self.session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()
        return self.session.run(names, feeds)

    def describe(self) -> str:
        ins = ", ".join(f"{s.name}: {s.describe()}" for s in self.inputs)
        return f"{self.served_by} ({ins}) on {self.provider}"
