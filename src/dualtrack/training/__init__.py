"""Staged training of trajectory models: typed configs, sampling, the loop and runs.

Entry points: :func:`load_config` / :func:`prepare_run` (configs) and :func:`train` (the loop, also
under ``torchrun``). Weights on disk (checkpoints, exports, loading) are
:mod:`dualtrack.models.weights`. See ``docs/training.md``.
"""

from dualtrack.training.config import ConfigError, TrainConfig, load_config
from dualtrack.training.loop import TrainResult, prepare_run, train

__all__ = [
    "ConfigError",
    "TrainConfig",
    "load_config",
    "prepare_run",
    "train",
    "TrainResult",
]
