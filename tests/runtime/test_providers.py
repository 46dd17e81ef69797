"""Which execution providers a session is asked for: the preference order, only those this
onnxruntime build has, CPU always last; CUDA dropped after it was found unusable."""
from __future__ import annotations

import logging

import pytest

from gateway.runtime import providers

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


@pytest.fixture
def cuda_state():
    saved = providers._cuda_unusable
    yield
    providers._cuda_unusable = saved


def test_cpu_is_always_asked_for_and_last(cuda_state):
    providers._cuda_unusable = False
    has_cuda = CUDA in providers.available()
    assert providers.requested(["cpu"]) == [CPU]
    assert providers.requested(["cuda"]) == ([CUDA] if has_cuda else []) + [CPU]
    assert providers.requested(None) == providers.requested(["cuda", "cpu"])
    assert providers.requested(["cpu", "cuda"]) == [CPU] + ([CUDA] if has_cuda else [])
    assert CPU in providers.available()


def test_a_cuda_fallback_is_logged_once_and_cuda_is_not_asked_for_again(cuda_state, caplog):
    providers._cuda_unusable = False
    with caplog.at_level(logging.WARNING, logger="gateway.runtime"):
        providers.note_fallback(CPU, CPU)                          # asked for the CPU: nothing to say
        providers.note_fallback(CUDA, CPU)
        providers.note_fallback(CUDA, CPU)
    assert [r.getMessage() for r in caplog.records] == [
        "CUDA execution provider is not usable here (no GPU or CUDA/cuDNN libraries); models run on "
        "CPUExecutionProvider"]
    assert providers.requested(["cuda", "cpu"]) == [CPU]
