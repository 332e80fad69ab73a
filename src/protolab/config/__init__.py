"""The YAML config users edit: a typed, validated model plus dotted command-line overrides.

The config is rules only: it imports no other part of protolab but its leaves (errors, store
URL rules, formatting). Checks that need a loaded experiment, a dataset, a store or a backend
live beside those inputs (``protolab.sweep``'s checks, ``protolab._stores``); the backend
registry is handed to :func:`load_config` rather than imported.
"""

from protolab.config._load import apply_overrides, config_hash, load_config
from protolab.config._machine import check_hardware, visible_gpus
from protolab.config._metrics import (
    METRICS,
    Direction,
    check_metric_name,
    infer_direction,
    logged_names_problem,
    metric_task_problem,
)
from protolab.config._model import (
    SCHEDULE_OPTIONS,
    BackendNames,
    Choice,
    Config,
    HardwareConfig,
    Range,
    StudyConfig,
    TrackingConfig,
    TrainConfig,
    check_study_name,
    parse_constraint,
)

__all__ = [
    "METRICS",
    "SCHEDULE_OPTIONS",
    "BackendNames",
    "Choice",
    "Config",
    "Direction",
    "HardwareConfig",
    "Range",
    "StudyConfig",
    "TrackingConfig",
    "TrainConfig",
    "apply_overrides",
    "check_hardware",
    "check_metric_name",
    "check_study_name",
    "config_hash",
    "infer_direction",
    "load_config",
    "logged_names_problem",
    "metric_task_problem",
    "parse_constraint",
    "visible_gpus",
]
