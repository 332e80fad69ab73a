"""The YAML config users edit: a typed, validated model plus dotted command-line overrides."""

from protolab.config._load import apply_overrides, load_config
from protolab.config._model import (
    Choice,
    Config,
    HardwareConfig,
    Range,
    StudyConfig,
    TrackingConfig,
    TrainConfig,
)

__all__ = [
    "Choice",
    "Config",
    "HardwareConfig",
    "Range",
    "StudyConfig",
    "TrackingConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
]
