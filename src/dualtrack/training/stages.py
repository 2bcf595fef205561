"""Training stages: building the model of a config, chaining to earlier runs, phases and freezing.

DualTrack trains in stages, each its own run directory:

1. ``local`` (``local_only``): phase ``cnn`` trains the whole local encoder on 16-frame clips,
   phase ``pooling`` freezes the 3D CNN (``local_cnn``) and trains attention pooling, temporal
   transformer and head on clips, and phase ``temporal`` freezes the pooling too and trains the
   temporal transformer and head on whole sweeps, the length it attends over at inference
   (``configs/local.yaml``);
2. ``global`` (``global_only``): random sorted frame subsets of whole sweeps
   (``configs/global.yaml``);
3. ``fusion`` (``dualtrack``): ``local_from: <local run>`` and ``global_from: <global run>`` load
   both encoders. What stays frozen is the model's to say
   (:meth:`~dualtrack.models.registry.TrajectoryModel.stage_sources`): for DualTrack the 3D CNN and
   the pooling, as in the authors' fusion; the local temporal transformer, the global encoder, the
   decoder and the head train. ``stage.freeze`` freezes more, ``stage.finetune: true`` nothing;
   full sweeps (or long windows) with the global branch on every 8th frame
   (``configs/fusion.yaml``).

Any other registered model (``coupled``, ``two_frame_cnn``, ``monet``, ``dclnet``,
``hybrid_transformer``) trains as a single stage whose sampling mode comes from its config.
:func:`prepare_model` builds the model and loads every referenced run **before** a run directory
is created, so a missing directory, a missing checkpoint or weights of another architecture stop
the command with a clear message instead of failing hours later.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dualtrack.models import TrajectoryModel, create_model
from dualtrack.models.weights import find_checkpoint, read_weights
from dualtrack.training.config import ConfigError, PhaseConfig, SamplingConfig, TrainConfig

__all__ = [
    "Phase",
    "resolve_phases",
    "build_model",
    "load_source",
    "prepare_model",
    "check_groups",
    "set_frozen",
    "chained_freeze",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phase:
    """Fully resolved settings of one training phase.

    Attributes:
        name: label in ``metrics.csv``.
        epochs, lr, weight_decay, warmup_epochs: optimiser settings.
        freeze: parameter groups frozen during the phase.
        sampling: the sampling settings of the phase.
    """

    name: str
    epochs: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    freeze: tuple[str, ...]
    sampling: SamplingConfig


def resolve_phases(cfg: TrainConfig) -> list[Phase]:
    """The phases of ``cfg`` (one phase named after the stage when ``stage.phases`` is empty)."""
    phases = cfg.stage.phases or [PhaseConfig(name=cfg.stage.name)]
    out = []
    for p in phases:
        sampling = dataclasses.replace(
            cfg.sampling,
            **{
                k: getattr(p, k)
                for k in ("mode", "clip_length", "max_length", "batch_size")
                if getattr(p, k) is not None
            },
        )
        out.append(
            Phase(
                name=p.name,
                epochs=cfg.optim.epochs if p.epochs is None else p.epochs,
                lr=cfg.optim.lr if p.lr is None else p.lr,
                weight_decay=cfg.optim.weight_decay if p.weight_decay is None else p.weight_decay,
                warmup_epochs=cfg.optim.warmup_epochs if p.warmup_epochs is None else p.warmup_epochs,
                freeze=tuple(dict.fromkeys([*cfg.stage.freeze, *p.freeze])),
                sampling=sampling,
            )
        )
    return out


def build_model(cfg: TrainConfig) -> TrajectoryModel:
    """``create_model(cfg.model.name, **cfg.model.kwargs)`` with errors as :class:`ConfigError`."""
    try:
        return create_model(cfg.model.name, **cfg.model.kwargs)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"model: {exc}") from None


def load_source(path: str | Path, what: str) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """``(model_name, model_config, state_dict)`` of a run directory, checkpoint or export.

    Raises:
        ConfigError: missing directory / checkpoint or unreadable weights (``what`` names the key).
    """
    try:
        source = find_checkpoint(path, what)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    try:
        return read_weights(source)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what}: {exc}") from None


def check_groups(
    model: TrajectoryModel, groups: tuple[str, ...] | list[str], what: str = "stage.freeze"
) -> None:
    """Raise :class:`ConfigError` unless every name is a parameter group of ``model``."""
    valid = model.groups
    unknown = sorted(set(groups) - set(valid))
    if unknown:
        raise ConfigError(
            f"{what}: model {model.model_name!r} has no parameter groups {unknown}; "
            f"valid: {sorted(valid) or 'none (this model cannot be partially frozen)'}"
        )


def set_frozen(model: TrajectoryModel, groups: tuple[str, ...] | list[str]) -> None:
    """Freeze exactly ``groups`` (and unfreeze the others) through the model's freezing API.

    Frozen groups get no gradients and stay in eval mode under ``model.train()``.
    """
    check_groups(model, groups)
    valid = list(model.groups)
    if valid:
        model.unfreeze(valid)
        model.freeze(list(groups))


def _load_source(model: TrajectoryModel, key: str, path: str) -> None:
    """Load what the run at ``path`` provides under ``stage.<key>`` (the model's stage sources)."""
    what = f"stage.{key}"
    source = model.stage_sources().get(key)
    if source is None:
        raise ConfigError(
            f"{what}: model {model.model_name!r} takes no {key} run; it takes "
            f"{sorted(model.stage_sources()) or 'none (a single-stage model)'}"
        )
    name, mcfg, state = load_source(path, what)
    try:
        model.init_from(state, source.modules)
    except (KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise ConfigError(
            f"{what}: {path} holds a {name!r} model ({mcfg}) whose {', '.join(source.modules)} does not "
            f"match {model.model_name!r} ({cfg_text(model)}): {first}"
        ) from None
    log.info("%s: loaded %s from %s (%s)", what, ", ".join(source.modules), path, name)


def cfg_text(model: TrajectoryModel) -> str:
    """``key=value`` list of a model's factory arguments (for error messages)."""
    return ", ".join(f"{k}={v}" for k, v in model.model_config.items()) or "defaults"


def prepare_model(cfg: TrainConfig) -> tuple[TrajectoryModel, bool]:
    """Build the model and load the runs it is chained to (see the module docstring).

    Returns:
        ``(model, has_stats)``: ``has_stats`` is ``True`` when the weights came with their target
        statistics (``init_from``), which are then kept.

    Raises:
        ConfigError: bad model config, missing run / checkpoint, or weights of another architecture.
    """
    model = build_model(cfg)
    st = cfg.stage
    has_stats = False
    if st.init_from:
        name, mcfg, state = load_source(st.init_from, "stage.init_from")
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0][:300]
            raise ConfigError(
                f"stage.init_from: {st.init_from} holds a {name!r} model ({mcfg}), which does not match "
                f"{cfg.model.name!r} ({cfg_text(model)}): {first}"
            ) from None
        has_stats = True
        log.info("stage.init_from: loaded %s (%s)", st.init_from, name)
    for key, path in (("local_from", st.local_from), ("global_from", st.global_from)):
        if path:
            _load_source(model, key, path)
    for phase in resolve_phases(cfg):
        check_groups(model, (*phase.freeze, *chained_freeze(cfg, model)))
    return model, has_stats


def chained_freeze(cfg: TrainConfig, model: TrajectoryModel) -> tuple[str, ...]:
    """Groups frozen because an earlier run provided them (``stage.local_from`` /
    ``stage.global_from``, as the model's stage sources say), unless ``stage.finetune``."""
    if cfg.stage.finetune:
        return ()
    sources = model.stage_sources()
    out: list[str] = []
    for key, path in (("local_from", cfg.stage.local_from), ("global_from", cfg.stage.global_from)):
        if path and key in sources:
            out += sources[key].freeze
    return tuple(dict.fromkeys(out))
