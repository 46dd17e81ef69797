"""Which onnxruntime execution providers to ask for, and which one a session really got."""
from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Sequence

import onnxruntime as ort

log = logging.getLogger("gateway.runtime")

_NAMES = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


_cuda_unusable = False


@functools.lru_cache(maxsize=1)
def available() -> tuple[str, ...]:
    names = tuple(ort.get_available_providers())
    if "CUDAExecutionProvider" in names:
        _preload_cuda_libraries()
    return names


def _preload_cuda_libraries() -> None:
    """Where CUDA and cuDNN come as pip packages (nvidia-*, e.g. beside PyTorch), onnxruntime-gpu
    only finds them once preloaded; system-wide installs need nothing."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None or importlib.util.find_spec("nvidia") is None:
        return
    try:
        preload()
    except Exception as exc:  # best effort: the session's own provider check says what happened
        log.debug("preloading CUDA libraries from nvidia-* packages failed: %s", exc)


def note_fallback(asked: str, got: str) -> None:
    """onnxruntime-gpu lists CUDA even where its libraries can't load, then quietly uses the CPU.
    After the first such session, stop asking for CUDA and say so once."""
    global _cuda_unusable
    if asked == "CUDAExecutionProvider" and not _cuda_unusable:
        _cuda_unusable = True
        log.warning("CUDA execution provider is not usable here (no GPU or CUDA/cuDNN libraries); "
                    "models run on %s", got, extra={"event": "provider.fallback", "fields": {"provider": got}})


def requested(preference: Sequence[str] | None) -> list[str]:
    """Provider names to pass to ``InferenceSession`` for a preference like ``["cuda", "cpu"]``.

    ``None`` means CUDA when this onnxruntime build has it, then CPU. CPU is always
    appended last so a model still loads where no GPU is usable.
    """
    wanted = preference or ["cuda", "cpu"]
    names = [_NAMES[p] for p in wanted if _NAMES[p] in available()
             and not (p == "cuda" and _cuda_unusable)]
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")
    return names
