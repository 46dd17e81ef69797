"""Typed settings: the gateway's own (:mod:`.settings`) and each model's ``config.yaml`` (:mod:`.model`)."""
from .model import BatchingConfig, ClassifierConfig, ModelConfig, load_model_config
from .settings import GatewaySettings, SettingsError, load_settings

__all__ = [
    "BatchingConfig", "ClassifierConfig", "ModelConfig", "load_model_config",
    "GatewaySettings", "SettingsError", "load_settings",
]
