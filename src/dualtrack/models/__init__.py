"""Trajectory models, their contract and registry (``create_model``, ``list_models``)."""

from dualtrack.models import baselines, dualtrack  # noqa: F401  (registers the architectures)
from dualtrack.models.config import FusionConfig, GlobalEncoderConfig, LocalEncoderConfig
from dualtrack.models.registry import TrajectoryModel, create_model, list_models, register_model
from dualtrack.models.spec import InputSpec, StageSource

__all__ = [
    "TrajectoryModel",
    "create_model",
    "list_models",
    "register_model",
    "InputSpec",
    "StageSource",
    "LocalEncoderConfig",
    "GlobalEncoderConfig",
    "FusionConfig",
]
