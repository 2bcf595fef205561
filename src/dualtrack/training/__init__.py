"""Staged training of trajectory models: typed configs, sampling, the loop, runs and export.

Entry points: :func:`load_config` / :func:`prepare_run` (configs), :func:`train` (the loop, also
under ``torchrun``), :func:`export_model` and :func:`load_model` (released weights). See
``docs/training.md``.
"""

from dualtrack.training.config import ConfigError, TrainConfig, load_config
from dualtrack.training.export import export_model, load_bundle, load_model
from dualtrack.training.loop import TrainResult, prepare_run, train

__all__ = [
    "ConfigError",
    "TrainConfig",
    "load_config",
    "prepare_run",
    "train",
    "TrainResult",
    "export_model",
    "load_model",
    "load_bundle",
]
