"""A model's config.yaml (gateway.config.model): defaults, validation messages naming the key."""
from __future__ import annotations

import pytest

from gateway.config.errors import SettingsError
from gateway.config.model import load_model_config


def test_model_config_defaults_and_errors(tmp_path):
    assert load_model_config(tmp_path / "missing.yaml").batching.max_batch_size == 32
    path = tmp_path / "config.yaml"
    path.write_text("batching:\n  max_batch_size: 0\n  preferred_batch_sizes: [8, 4, 8]\n")
    with pytest.raises(SettingsError, match=r"batching\.max_batch_size"):
        load_model_config(path)
    path.write_text("batching:\n  preferred_batch_sizes: [8, 4, 8]\nexecution_providers: [cpu]\n")
    cfg = load_model_config(path)
    assert cfg.batching.preferred_batch_sizes == [4, 8] and cfg.execution_providers == ["cpu"]
    path.write_text("execution_providers: [tpu]\n")
    with pytest.raises(SettingsError, match=r"execution_providers\.0"):
        load_model_config(path)


@pytest.mark.parametrize("text, expected", [
    ("input_stats:\n  ranges:\n    features: [2, 1]\n", "range of input 'features'"),
    ("input_stats:\n  ranges:\n    features: [0, .inf]\n", "range of input 'features'"),
    ("input_stats:\n  bins: 0\n", "input_stats.bins"),
    ("input_stats:\n  warmup_row: 10\n", "input_stats.warmup_row"),
])
def test_bad_values_are_rejected_by_name(tmp_path, text, expected):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError, match="input_stats") as err:
        load_model_config(path)
    assert expected in str(err.value)
