"""Weights on disk: training checkpoints, released exports, and the one loader for both.

Sources :func:`load_bundle` accepts: a run directory (``best.pt``, else ``last.pt``), a checkpoint
file (``dualtrack-checkpoint-1``, a plain dict read with ``torch.load(weights_only=True)``), or an
export folder written by :func:`export_model` (``dualtrack export RUN -o DIR``)::

    DIR/model.safetensors   the model state (weights and buffers, incl. target_mean / target_std)
    DIR/config.json         {"format", "model_name", "model_config", "target_mean", "target_std",
                             "input": InputSpec.to_dict(), "source", "dualtrack_version"}

``input`` is the model's :class:`~dualtrack.models.spec.InputSpec` (local crop, global branch,
halo, pixel spacing, ...), restored on loading so the predictor feeds the model as it was trained.
The loader rebuilds the registered architecture and loads the weights **strictly**: weights of
another architecture or configuration are an error naming both, never a silent partial load.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from dualtrack import __version__
from dualtrack.models.registry import TrajectoryModel, create_model
from dualtrack.models.spec import InputSpec
from dualtrack.utils import atomic_dir, check_output_dir

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAMES",
    "EXPORT_FORMAT",
    "LoadedModel",
    "read_checkpoint",
    "find_checkpoint",
    "read_weights",
    "load_bundle",
    "load_model",
    "export_model",
    "write_export",
]

CHECKPOINT_FORMAT = "dualtrack-checkpoint-1"
CHECKPOINT_NAMES = ("best.pt", "last.pt")
"""Checkpoint files of a run directory, in order of preference for loading weights."""


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint dict on the CPU (``weights_only=True``: no code is unpickled).

    Raises:
        FileNotFoundError: missing file.
        ValueError: not a dualtrack checkpoint (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        raise ValueError(f"{path}: cannot read as a torch checkpoint ({exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a dualtrack training checkpoint (no 'format' tag)")
    return ckpt


def find_checkpoint(path: str | os.PathLike, what: str = "init_from") -> Path:
    """The weights behind a run reference: a run directory (``best.pt``, else ``last.pt``), a
    checkpoint file, or an exported folder (``model.safetensors`` + ``config.json``).

    Raises:
        FileNotFoundError: the path does not exist or holds no weights (``what`` names the setting
            or argument); a config that refers to it turns this into a ``ConfigError``.
    """
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise FileNotFoundError(
            f"{what}: {p} does not exist (expected a run directory, checkpoint or export)"
        )
    if (p / "model.safetensors").is_file() and (p / "config.json").is_file():
        return p
    for name in CHECKPOINT_NAMES:
        if (p / name).is_file():
            return p / name
    raise FileNotFoundError(
        f"{what}: {p} has no checkpoint ({' or '.join(CHECKPOINT_NAMES)}); did that run finish at least "
        "one epoch?"
    )


EXPORT_FORMAT = "dualtrack-export-1"


@dataclass
class LoadedModel:
    """A model rebuilt from weights.

    Attributes:
        model: the :class:`TrajectoryModel` (eval mode, CPU unless a device was given), its
            ``input_spec`` restored from the file.
        name: registry name. config: factory keyword arguments.
        source: the file or folder the weights came from.
    """

    model: TrajectoryModel
    name: str
    config: dict[str, Any]
    source: Path


def _is_export(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def _read_export_config(folder: Path) -> dict[str, Any]:
    try:
        meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{folder / 'config.json'}: unreadable export config ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT or "model_name" not in meta:
        raise ValueError(
            f"{folder / 'config.json'}: not a dualtrack export (format {EXPORT_FORMAT!r} expected)"
        )
    return meta


def _read_source(
    path: Path,
) -> tuple[str, dict[str, Any], dict[str, torch.Tensor], InputSpec]:
    """``(model_name, model_config, state_dict, input_spec)`` of a checkpoint file or an exported
    folder, each file read once; damaged or hostile files are a ``ValueError`` naming the file."""
    try:
        if _is_export(path):
            meta = _read_export_config(path)
            name, config, spec = meta["model_name"], meta.get("model_config", {}), meta.get("input")
            state = load_file(str(path / "model.safetensors"))
        else:
            ckpt = read_checkpoint(path)
            name, config, spec = ckpt.get("model_name"), ckpt.get("model_config"), ckpt.get("input")
            state = ckpt.get("model")
    except (FileNotFoundError, ValueError):
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors / torch raise their own error types
        raise ValueError(f"{path}: cannot read the weights ({type(exc).__name__}: {exc})") from None
    _check_metadata(path, name, config)
    input_spec = InputSpec.from_dict(spec, str(path))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds no model state_dict (a mapping of tensor names to tensors)")
    return name, config, state, input_spec


def read_weights(source: str | os.PathLike) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """``(model_name, model_config, state_dict)`` of a checkpoint file or an exported folder.

    Raises:
        FileNotFoundError / ValueError: missing or unreadable (the message names the path).
    """
    name, config, state, _ = _read_source(Path(source))
    return name, config, state


MAX_PARAMETERS = 2_000_000_000
"""Largest model :func:`load_bundle` builds (a damaged config can claim any size)."""


def _check_metadata(source: Path, name: Any, config: Any) -> None:
    """Refuse a model name or config of the wrong type."""
    if not isinstance(name, str):
        raise ValueError(f"{source}: the model name must be a string, got {name!r}")
    if not isinstance(config, dict):
        raise ValueError(f"{source}: the model config must be a mapping, got {type(config).__name__}")


def load_bundle(
    path_or_run: str | os.PathLike, device: str | torch.device = "cpu", expected: str | None = None
) -> LoadedModel:
    """Rebuild and strictly load a model from a run directory, checkpoint or exported folder.

    Args:
        path_or_run: run directory, ``.pt`` checkpoint or export folder.
        device: where to put the model.
        expected: if given, the registry name the weights must belong to.

    Raises:
        FileNotFoundError / ValueError: nothing loadable at ``path_or_run``, an unknown model
            name, another architecture than ``expected``, weights or a saved input spec that do
            not fit the architecture (strict loading; the message names both sides).
    """
    source = find_checkpoint(path_or_run, "weights")
    name, config, state, input_spec = _read_source(Path(source))
    if expected is not None and name != expected:
        raise ValueError(f"{source} holds a {name!r} model, expected {expected!r}")
    try:
        with torch.device("meta"):  # sizes first: a damaged config must not reach the allocator
            count = sum(p.numel() for p in create_model(name, **config).parameters())
        if count > MAX_PARAMETERS:
            raise ValueError(f"{count:,} parameters, more than the {MAX_PARAMETERS:,} allowed")
        model = create_model(name, **config)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{source}: cannot rebuild model {name!r} ({config}): {exc}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ValueError(
            f"{source}: the weights do not fit model {name!r} ({config}): {' '.join(first[:3])[:400]}"
        ) from None
    model.restore_input(input_spec, str(source))
    model.to(device).eval()
    return LoadedModel(model=model, name=name, config=config, source=Path(source))


def load_model(path_or_run: str | os.PathLike, device: str | torch.device = "cpu") -> TrajectoryModel:
    """The model of a run directory, checkpoint or exported folder (see :func:`load_bundle`)."""
    return load_bundle(path_or_run, device).model


def export_model(path_or_run: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``model.safetensors`` and ``config.json`` for a run (see the module docstring).

    Both files are written into a temporary folder that replaces ``out_dir`` only when both are
    complete (:func:`dualtrack.utils.atomic_dir`), so an interrupted export never pairs one model's
    config with another's weights.

    Returns:
        the export folder.

    Raises:
        FileExistsError: ``out_dir`` exists and is not empty, and ``overwrite`` is False.
    """
    check_output_dir(out_dir, overwrite)
    bundle = load_bundle(path_or_run)
    return write_export(bundle.model, bundle.name, bundle.config, out_dir, source=str(bundle.source),
                        overwrite=overwrite)


def write_export(
    model: TrajectoryModel,
    name: str,
    config: dict[str, Any],
    out_dir: str | os.PathLike,
    *,
    source: str,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (registry ``name``, factory ``config``) as an export folder (module
    docstring), atomically; ``extra`` adds entries to ``config.json`` (e.g. provenance)."""
    out = check_output_dir(out_dir, overwrite)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {
        "format": EXPORT_FORMAT,
        "model_name": name,
        "model_config": config,
        "target_mean": model.target_mean.tolist(),
        "target_std": model.target_std.tolist(),
        "input": model.input_spec.to_dict(),
        "source": source,
        "dualtrack_version": __version__,
        **(extra or {}),
    }
    with atomic_dir(out, overwrite) as tmp:
        save_file(state, str(tmp / "model.safetensors"),
                  metadata={"format": EXPORT_FORMAT, "model_name": name})
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out
