"""Trajectory models and their registry (``create_model``, ``list_models``)."""

from dualtrack.models import baselines, dualtrack  # noqa: F401  (registers the architectures)
from dualtrack.models.registry import TrajectoryModel, create_model, list_models, register_model

__all__ = ["TrajectoryModel", "create_model", "list_models", "register_model"]
