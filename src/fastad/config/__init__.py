"""Typed configuration: dataclass schema, YAML loading, ``--set`` overrides, validation."""

from fastad.config.loader import format_config, from_dict, load_config, save_config, to_dict
from fastad.config.schema import (
    Config,
    DataConfig,
    DiffusionConfig,
    DistillationConfig,
    LoggingConfig,
    RunConfig,
    TeacherTrainingConfig,
)

__all__ = [
    "Config", "DataConfig", "DiffusionConfig", "DistillationConfig", "LoggingConfig",
    "RunConfig", "TeacherTrainingConfig", "format_config", "from_dict", "load_config", "save_config", "to_dict",
]
