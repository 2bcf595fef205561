"""Training checkpoints (``last.pt`` / ``best.pt``): everything needed to continue exactly.

A checkpoint is a plain dict saved with :func:`torch.save` (loadable with ``weights_only=True``):

* ``model``: the model ``state_dict`` (unwrapped from DDP), with ``model_name`` and
  ``model_config`` (the :func:`~dualtrack.models.create_model` arguments);
* ``optimizer``, ``scheduler``: their ``state_dict``;
* ``state``: :class:`TrainState` as a dict (step, epoch, phase, batches done in the epoch, best
  validation GPE, the running loss of the current logging interval);
* ``rng``: the torch CPU (and CUDA) generator states, restored on resume so dropout continues
  identically;
* ``config``: the resolved training config (plain dict) and ``input``: the model's
  :class:`~dualtrack.models.spec.InputSpec` (:meth:`~dualtrack.models.spec.InputSpec.to_dict`).

Reading (:func:`~dualtrack.models.weights.read_checkpoint`) lives with the other weight readers.

Writes are atomic, so a run killed while saving keeps its previous ``last.pt``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dualtrack.models import TrajectoryModel
from dualtrack.models.weights import CHECKPOINT_FORMAT
from dualtrack.utils import atomic_write

__all__ = [
    "TrainState",
    "unwrap",
    "rng_state",
    "set_rng_state",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

@dataclass
class TrainState:
    """Counters of a run.

    Attributes:
        step: optimiser steps done in the whole run (all phases).
        epoch: epoch index within the current phase (the epoch in progress).
        phase: index of the phase in progress.
        batches_done: batches of ``epoch`` already done by each process.
        best_gpe: best validation GPE so far (mm; ``inf`` before the first validation).
        loss_sum, loss_count: running training loss since the last ``metrics.csv`` row.
        samples_seen: training items seen by all processes.
    """

    step: int = 0
    epoch: int = 0
    phase: int = 0
    batches_done: int = 0
    best_gpe: float = math.inf
    loss_sum: float = 0.0
    loss_count: int = 0
    samples_seen: int = 0


def unwrap(model: nn.Module) -> TrajectoryModel:
    """The bare model inside a DDP wrapper."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def rng_state() -> dict[str, Any]:
    """Generator states of torch (CPU and every CUDA device)."""
    out: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state` (CUDA states only when the device count matches)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    state: TrainState,
    config: dict[str, Any],
) -> Path:
    """Write a checkpoint atomically (see the module docstring). Returns the path."""
    bare = unwrap(model)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_name": bare.model_name,
        "model_config": dict(bare.model_config),
        "model": bare.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "state": dataclasses.asdict(state),
        "rng": rng_state(),
        "config": config,
        "input": bare.input_spec.to_dict(),
    }
    path = Path(path)
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
    return path
