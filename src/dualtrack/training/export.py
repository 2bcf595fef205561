"""Released weights: ``model.safetensors`` + ``config.json``, and one loader for every source.

``dualtrack export RUN -o DIR`` writes::

    DIR/model.safetensors   the model state (weights and buffers, incl. target_mean / target_std)
    DIR/config.json         {"format", "model_name", "model_config", "target_mean", "target_std",
                             "input": {"crop": [h, w] | null}, "source", "dualtrack_version"}

``input.crop`` is the centre crop of the local input at inference
(:func:`dualtrack.inference.predict_trajectory`'s ``crop``). :func:`load_model` accepts a run
directory (``best.pt``, else ``last.pt``), a checkpoint file or an exported folder, rebuilds the
registered architecture and loads the weights **strictly**: weights of another architecture or
configuration are an error naming both, never a silent partial load.
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
from dualtrack.models import TrajectoryModel, create_model
from dualtrack.training.checkpoint import read_checkpoint
from dualtrack.training.runs import find_checkpoint
from dualtrack.utils import atomic_dir, check_output_dir

__all__ = ["LoadedModel", "read_weights", "read_input_spec", "export_model", "load_bundle", "load_model"]

EXPORT_FORMAT = "dualtrack-export-1"


@dataclass
class LoadedModel:
    """A model rebuilt from weights, with how to feed it.

    Attributes:
        model: the :class:`TrajectoryModel` (eval mode, CPU unless a device was given).
        name: registry name. config: factory keyword arguments.
        input: ``{"crop": [h, w] | None}``, the local-input centre crop used at inference.
        source: the file or folder the weights came from.
    """

    model: TrajectoryModel
    name: str
    config: dict[str, Any]
    input: dict[str, Any]
    source: Path

    @property
    def crop(self) -> tuple[int, int] | None:
        crop = self.input.get("crop")
        return None if crop is None else (int(crop[0]), int(crop[1]))


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
) -> tuple[str, dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """``(model_name, model_config, state_dict, input_spec)`` of a checkpoint file or an exported
    folder, each file read once; damaged or hostile files are a ``ValueError`` naming the file."""
    try:
        if _is_export(path):
            meta = _read_export_config(path)
            name, config, spec = meta["model_name"], meta.get("model_config", {}), meta.get("input", {})
            state = load_file(str(path / "model.safetensors"))
        else:
            ckpt = read_checkpoint(path)
            name, config, spec = ckpt.get("model_name"), ckpt.get("model_config"), ckpt.get("input") or {}
            state = ckpt.get("model")
    except (FileNotFoundError, ValueError):
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors / torch raise their own error types
        raise ValueError(f"{path}: cannot read the weights ({type(exc).__name__}: {exc})") from None
    _check_metadata(path, name, config, spec)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds no model state_dict (a mapping of tensor names to tensors)")
    return name, config, state, spec


def read_weights(source: str | os.PathLike) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """``(model_name, model_config, state_dict)`` of a checkpoint file or an exported folder.

    Raises:
        FileNotFoundError / ValueError: missing or unreadable (the message names the path).
    """
    name, config, state, _ = _read_source(Path(source))
    return name, config, state


def read_input_spec(source: str | os.PathLike) -> dict[str, Any]:
    """The ``input`` entry (local crop) of a checkpoint or export."""
    path = Path(source)
    if _is_export(path):
        return dict(_read_export_config(path).get("input", {}))
    return dict(read_checkpoint(path).get("input") or {})


MAX_PARAMETERS = 2_000_000_000
"""Largest model :func:`load_bundle` builds (a damaged config can claim any size)."""


def _check_metadata(source: Path, name: Any, config: Any, input_spec: Any) -> None:
    """Refuse metadata of the wrong type or a local crop that is not two positive sizes."""
    if not isinstance(name, str):
        raise ValueError(f"{source}: the model name must be a string, got {name!r}")
    if not isinstance(config, dict):
        raise ValueError(f"{source}: the model config must be a mapping, got {type(config).__name__}")
    if not isinstance(input_spec, dict):
        raise ValueError(f"{source}: the input spec must be a mapping, got {type(input_spec).__name__}")
    crop = input_spec.get("crop")
    if crop is not None and not (
        isinstance(crop, (list, tuple)) and len(crop) == 2
        and all(isinstance(c, int) and not isinstance(c, bool) and 2 <= c <= 65536 for c in crop)
    ):
        raise ValueError(f"{source}: input crop must be null or [height, width] in 2..65536, got {crop!r}")


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
            name, another architecture than ``expected``, or weights that do not fit the
            architecture (strict loading; the message names both sides).
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
    model.to(device).eval()
    bundle = LoadedModel(
        model=model, name=name, config=config, input=input_spec, source=Path(source)
    )
    model.input_crop = bundle.crop  # predict_trajectory's default local-input crop
    return bundle


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
    out = check_output_dir(out_dir, overwrite)
    bundle = load_bundle(path_or_run)
    state = {k: v.detach().contiguous().clone() for k, v in bundle.model.state_dict().items()}
    meta = {
        "format": EXPORT_FORMAT,
        "model_name": bundle.name,
        "model_config": bundle.config,
        "target_mean": bundle.model.target_mean.tolist(),
        "target_std": bundle.model.target_std.tolist(),
        "input": bundle.input,
        "source": str(bundle.source),
        "dualtrack_version": __version__,
    }
    with atomic_dir(out, overwrite) as tmp:
        save_file(state, str(tmp / "model.safetensors"),
                  metadata={"format": EXPORT_FORMAT, "model_name": bundle.name})
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out
