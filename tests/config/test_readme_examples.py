"""The configuration examples in the README are valid as written."""
from __future__ import annotations

import pathlib
import re

import yaml

from gateway.config.model import ModelConfig
from gateway.config.settings import GatewaySettings

README = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
BLOCKS = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", README, flags=re.S)]


def test_every_yaml_block_is_a_valid_model_config_or_gateway_settings():
    assert len(BLOCKS) >= 3
    for block in BLOCKS:
        if "policy" in block or "batching" in block:
            ModelConfig.model_validate(block)
        else:
            GatewaySettings.model_validate(block)
