"""Typed training configuration: nested dataclasses, YAML files, ``key=value`` overrides.

A training run is fully described by a :class:`TrainConfig`:

* ``data``: which dataset, which split, where the frame cache lives, the input geometry
  (local crop, global size) and the number of loader workers;
* ``model``: a registered model name plus free keyword arguments that
  :func:`dualtrack.models.create_model` validates (it raises on unknown keys);
* ``sampling``: how training items are drawn from sweeps (contiguous clips, random sorted
  subsets, full sweeps / long windows) and the label-preserving augmentations;
* ``optim``: AdamW, cosine schedule with warm-up, gradient clipping, epochs;
* ``stage``: the stage name, chaining to earlier runs (``init_from``, ``local_from``,
  ``global_from``), frozen sub-modules and optional phases (e.g. the local encoder's CNN phase
  followed by the pooling/temporal phase with a frozen CNN);
* ``runtime``: seed, device, mixed precision, validation and logging cadence.

YAML is only the file format. A file may name another config with ``extends: NAME_OR_PATH``;
its values are loaded first and the file's values merged over them. Unknown keys are errors
that name the key and list the valid ones, in files and in command-line overrides alike.
Overrides are ``dotted.key=value``; the value is parsed as YAML (``[256, 256]``, ``null``,
``true``, ``1e-4``) and checked against the dataclass field type (``int`` fields reject
``1.5``, ``str`` fields keep the raw text). List items are addressed by index
(``stage.phases.1.lr=1e-3``). Under ``model`` every key other than ``name`` is a model keyword
argument (``model.depth=4``).

Shipped configs live in ``dualtrack/configs/*.yaml`` and are referenced by name
(``dualtrack train local``) or by path.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from dualtrack.utils import UsageError

__all__ = [
    "ConfigError",
    "coerce",
    "DataConfig",
    "ModelConfig",
    "SamplingConfig",
    "OptimConfig",
    "PhaseConfig",
    "StageConfig",
    "RuntimeConfig",
    "TrainConfig",
    "load_config",
    "config_from_dict",
    "check_values",
    "config_to_dict",
    "apply_overrides",
    "shipped_configs",
    "resolve_config_path",
    "dump_config",
]


class ConfigError(UsageError):
    """A configuration is invalid: unknown key, wrong type, missing file or bad chaining (CLI exit
    code 2, see :class:`dualtrack.utils.UsageError`)."""


@dataclass
class DataConfig:
    """Dataset, split and input geometry.

    Attributes:
        root: dataset directory in a TUS-REC layout (train ``frames_transfs/`` or val/test
            ``frames/`` + ``transfs/``).
        splits: subject-level split file (JSON, :mod:`dualtrack.data.splits`); ``None`` makes
            a split of ``root``'s subjects with ``val_fraction`` / ``test_fraction`` / ``split_seed``.
        val_fraction: fraction of subjects held out for validation when ``splits`` is ``None``.
        test_fraction: fraction of subjects held out for testing when ``splits`` is ``None``.
        split_seed: seed of that split.
        local_crop: ``[h, w]`` crop of the native frames fed to the local branch (random in training
            when ``sampling.random_crop``, centred otherwise and at inference); ``null`` = whole frames.
        global_size: ``[h, w]`` frames are resized to for a global branch (``subset`` mode and the
            global input of ``dualtrack``); ``null`` = the model's own global size, else native.
        cache_dir: folder of the memory-mapped frame cache; ``null`` = ``<root>/.dualtrack_cache``.
        num_workers: DataLoader worker processes (0 = load in the main process).
    """

    root: str = ""
    splits: str | None = None
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    split_seed: int = 0
    local_crop: list[int] | None = field(default_factory=lambda: [256, 256])
    global_size: list[int] | None = None
    cache_dir: str | None = None
    num_workers: int = 4


@dataclass
class ModelConfig:
    """A registered model: ``name`` and the keyword arguments of its factory."""

    name: str = "dualtrack"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class SamplingConfig:
    """How training items are drawn and augmented.

    Attributes:
        mode: ``clip`` = contiguous clips of ``clip_length`` frames (local encoder, two-frame and
            clip baselines); ``subset`` = ``subset_size`` random sorted frames of a sweep resized
            to ``data.global_size`` (global encoder); ``sweep`` = whole sweeps, or random windows
            of ``max_length`` frames when a sweep is longer (fusion, coupled, sequence models).
        clip_length: frames per clip in ``clip`` mode.
        clips_per_scan: items drawn from each training scan per epoch (``clip`` / ``subset``).
        subset_size: frames per item in ``subset`` mode.
        max_length: longest window in ``sweep`` mode (``null`` = whole sweeps).
        batch_size: items per optimiser step and process.
        flip: probability of a horizontal flip (transforms mirrored accordingly).
        reverse: probability of reversing the sweep (inverse transforms, reversed order).
        random_crop: random instead of centred ``data.local_crop`` in training.
        strides: temporal sub-sampling factors drawn uniformly per item in ``clip`` / ``sweep``
            mode (``[1]`` = none); targets compose the skipped transforms.
        stats_items: items whose targets estimate the normalisation statistics.
    """

    mode: Literal["clip", "subset", "sweep"] = "clip"
    clip_length: int = 16
    clips_per_scan: int = 1
    subset_size: int = 64
    max_length: int | None = None
    batch_size: int = 16
    flip: float = 0.0
    reverse: float = 0.0
    random_crop: bool = False
    strides: list[int] = field(default_factory=lambda: [1])
    stats_items: int = 512


@dataclass
class OptimConfig:
    """AdamW with a cosine schedule and linear warm-up, stepped per optimiser step.

    Attributes:
        epochs: passes over the training items (one clip per scan per epoch in ``clip`` mode).
        lr: peak learning rate.
        weight_decay: AdamW decoupled weight decay.
        betas: AdamW betas.
        warmup_epochs: linear warm-up length in epochs (may be fractional).
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        grad_clip: maximum global gradient norm (``0`` = no clipping).
    """

    epochs: int = 100
    lr: float = 1e-4
    weight_decay: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0


@dataclass
class PhaseConfig:
    """One phase of a multi-phase stage; ``null`` fields inherit from ``optim`` / ``sampling``.

    Attributes:
        name: label written to ``metrics.csv``.
        epochs, lr, weight_decay, warmup_epochs: optimiser settings of this phase.
        freeze: sub-modules frozen in this phase (added to ``stage.freeze``).
        mode, clip_length, max_length, batch_size: sampling settings of this phase.
    """

    name: str = "phase"
    epochs: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    warmup_epochs: float | None = None
    freeze: list[str] = field(default_factory=list)
    mode: Literal["clip", "subset", "sweep"] | None = None
    clip_length: int | None = None
    max_length: int | None = None
    batch_size: int | None = None


@dataclass
class StageConfig:
    """Stage name and chaining to earlier run directories (checked before training starts).

    Attributes:
        name: ``local``, ``global``, ``fusion`` or any label for single-stage training.
        init_from: run directory (or checkpoint / exported folder) whose weights initialise the
            whole model; the architecture must match.
        local_from: run directory of a ``local_only`` model loaded into the ``local`` encoder.
        global_from: run directory of a ``global_only`` model loaded into the ``global`` encoder.
        freeze: sub-modules kept frozen (no gradients, eval mode), see the model's freezing API.
        finetune: with ``local_from`` / ``global_from``, also train the loaded encoders
            (end-to-end fine-tuning) instead of freezing them.
        phases: optional sequence of phases run one after the other in the same run directory.
    """

    name: str = "single"
    init_from: str | None = None
    local_from: str | None = None
    global_from: str | None = None
    freeze: list[str] = field(default_factory=list)
    finetune: bool = False
    phases: list[PhaseConfig] = field(default_factory=list)


@dataclass
class RuntimeConfig:
    """Seed, device, precision, cadence of validation, logging and checkpoints.

    Attributes:
        seed: seed of data order, augmentations, initialisation and dropout.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        amp: mixed precision: bf16 autocast of training on GPUs and on CPUs with native bf16 (AMX /
            AVX-512 BF16), plain fp32 elsewhere; validation then predicts with ``precision="auto"``.
        val_every: validate every this many epochs (``0`` = only at the end).
        val_max_sweeps: at most this many validation sweeps per validation.
        log_every: optimiser steps per ``metrics.csv`` row.
        checkpoint_every: steps between ``last.pt`` saves (``0`` = at each epoch end).
        stop_after_steps: stop (after saving ``last.pt``) once this many steps are done, without
            changing the schedule; resume later with ``--resume``.
        tensorboard: write TensorBoard logs when ``tensorboard`` is installed.
        progress: show a progress bar.
        cache_features: in ``sweep``-mode phases where every parameter group of the model's
            per-frame encoder (``encode_groups()``: DualTrack's 3D CNN and pooling) is frozen, and
            without random crops or temporal sub-sampling, compute its output once per scan (and
            frame order) and train the rest on those features, as the authors do; the 3D CNN
            then does not run during the phase. Features come from the whole sweep, so a window
            (``sampling.max_length``) sees the real neighbours at its ends, as at inference.
    """

    seed: int = 0
    device: str = "auto"
    amp: bool = True
    val_every: int = 1
    val_max_sweeps: int = 8
    log_every: int = 10
    checkpoint_every: int = 0
    stop_after_steps: int | None = None
    tensorboard: bool = True
    progress: bool = True
    cache_features: bool = True


@dataclass
class TrainConfig:
    """A complete training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


# ----------------------------------------------------------------------------------------------
# dict <-> dataclass with type checking


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (converting ints to floats, lists to
    dataclasses); raise :class:`ConfigError` naming ``key`` on a mismatch."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [coerce(v, args[0], f"{key}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _from_dict(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported field type {_type_name(tp)}")


def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    if cls is ModelConfig:
        data = dict(data)
        name = data.pop("name", ModelConfig.name)
        kwargs = data.pop("kwargs", {})
        if not isinstance(name, str):
            raise ConfigError(f"{prefix}.name: expected a string, got {name!r}")
        if not isinstance(kwargs, dict):
            raise ConfigError(f"{prefix}.kwargs: expected a mapping, got {kwargs!r}")
        return ModelConfig(name=name, kwargs={**kwargs, **data})
    fields = _fields(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = prefix or "config"
        raise ConfigError(
            f"unknown key {prefix + '.' if prefix else ''}{unknown[0]!s} in {where}; "
            f"valid keys: {', '.join(fields)}"
        )
    values = {k: coerce(v, fields[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**values)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from a nested mapping (missing keys take defaults) and check
    every value's range (:func:`check_values`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping, got {type(data).__name__}")
    cfg = _from_dict(TrainConfig, data)
    check_values(cfg)
    return cfg


_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def _need(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {value!r} is out of range; it must be {rule}")


def _finite(x: float) -> bool:
    return math.isfinite(x)


def _size_pair(key: str, value: list[int] | None, minimum: int) -> None:
    if value is not None:
        _need(len(value) == 2 and all(v >= minimum for v in value), key, value,
              f"[height, width] with both >= {minimum}, or null")


def check_values(cfg: TrainConfig) -> None:
    """Check the range of every numeric setting (counts positive, fractions in their interval,
    rates finite) so that a bad value stops the run before its folder is created.

    Raises:
        ConfigError: naming the key, the value and the allowed range.
    """
    d, s, o, r = cfg.data, cfg.sampling, cfg.optim, cfg.runtime
    for key, v in (("data.val_fraction", d.val_fraction), ("data.test_fraction", d.test_fraction)):
        _need(_finite(v) and 0.0 <= v < 1.0, key, v, "a fraction in [0, 1)")
    _need(d.val_fraction + d.test_fraction < 1.0, "data.val_fraction + data.test_fraction",
          d.val_fraction + d.test_fraction, "below 1 (some subjects must be left for training)")
    _need(d.num_workers >= 0, "data.num_workers", d.num_workers, ">= 0")
    _size_pair("data.local_crop", d.local_crop, 2)
    _size_pair("data.global_size", d.global_size, 2)
    _need(s.clip_length >= 2, "sampling.clip_length", s.clip_length, ">= 2 (a transition needs two frames)")
    _need(s.clips_per_scan >= 1, "sampling.clips_per_scan", s.clips_per_scan, ">= 1")
    _need(s.subset_size >= 2, "sampling.subset_size", s.subset_size, ">= 2")
    _need(s.max_length is None or s.max_length >= 2, "sampling.max_length", s.max_length, ">= 2 or null")
    _need(s.batch_size >= 1, "sampling.batch_size", s.batch_size, ">= 1")
    for key, v in (("sampling.flip", s.flip), ("sampling.reverse", s.reverse)):
        _need(_finite(v) and 0.0 <= v <= 1.0, key, v, "a probability in [0, 1]")
    _need(len(s.strides) >= 1 and min(s.strides) >= 1, "sampling.strides", s.strides,
          "a non-empty list of integers >= 1")
    _need(s.stats_items >= 1, "sampling.stats_items", s.stats_items, ">= 1")
    _need(o.epochs >= 0, "optim.epochs", o.epochs, ">= 0")
    _need(_finite(o.lr) and o.lr > 0, "optim.lr", o.lr, "a finite number > 0")
    _need(_finite(o.weight_decay) and o.weight_decay >= 0, "optim.weight_decay", o.weight_decay,
          "a finite number >= 0")
    _need(len(o.betas) == 2 and all(_finite(b) and 0.0 <= b < 1.0 for b in o.betas), "optim.betas",
          o.betas, "two numbers in [0, 1), e.g. [0.9, 0.999]")
    _need(_finite(o.warmup_epochs) and o.warmup_epochs >= 0, "optim.warmup_epochs", o.warmup_epochs,
          "a finite number >= 0")
    _need(_finite(o.min_lr_ratio) and 0.0 <= o.min_lr_ratio <= 1.0, "optim.min_lr_ratio", o.min_lr_ratio,
          "in [0, 1]")
    _need(_finite(o.grad_clip) and o.grad_clip >= 0, "optim.grad_clip", o.grad_clip,
          "a finite number >= 0 (0 = no clipping)")
    for i, p in enumerate(cfg.stage.phases):
        k = f"stage.phases.{i}"
        _need(p.epochs is None or p.epochs >= 0, f"{k}.epochs", p.epochs, ">= 0 or null")
        _need(p.lr is None or (_finite(p.lr) and p.lr > 0), f"{k}.lr", p.lr, "a finite number > 0 or null")
        wd = p.weight_decay
        _need(wd is None or (_finite(wd) and wd >= 0), f"{k}.weight_decay", wd, "finite, >= 0 or null")
        _need(p.warmup_epochs is None or (_finite(p.warmup_epochs) and p.warmup_epochs >= 0),
              f"{k}.warmup_epochs", p.warmup_epochs, "a finite number >= 0 or null")
        _need(p.clip_length is None or p.clip_length >= 2, f"{k}.clip_length", p.clip_length, ">= 2 or null")
        _need(p.max_length is None or p.max_length >= 2, f"{k}.max_length", p.max_length, ">= 2 or null")
        _need(p.batch_size is None or p.batch_size >= 1, f"{k}.batch_size", p.batch_size, ">= 1 or null")
    _need(bool(_DEVICE.fullmatch(r.device)), "runtime.device", r.device, "auto, cpu, cuda, cuda:N or mps")
    _need(r.val_every >= 0, "runtime.val_every", r.val_every, ">= 0 (0 = only at the end)")
    _need(r.val_max_sweeps >= 1, "runtime.val_max_sweeps", r.val_max_sweeps, ">= 1")
    _need(r.log_every >= 1, "runtime.log_every", r.log_every, ">= 1")
    _need(r.checkpoint_every >= 0, "runtime.checkpoint_every", r.checkpoint_every, ">= 0 (0 = each epoch)")
    _need(r.stop_after_steps is None or r.stop_after_steps >= 1, "runtime.stop_after_steps",
          r.stop_after_steps, ">= 1 or null")


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain nested dict of ``cfg``; model kwargs are flattened next to ``model.name``."""
    out = dataclasses.asdict(cfg)
    model = out.pop("model")
    out["model"] = {"name": model["name"], **model["kwargs"]}
    order = ["data", "model", "sampling", "optim", "stage", "runtime"]
    return {k: out[k] for k in order}


def dump_config(cfg: TrainConfig) -> str:
    """YAML text of ``cfg`` (round-trips through :func:`config_from_dict`)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


# ----------------------------------------------------------------------------------------------
# files and overrides


def shipped_configs() -> list[str]:
    """Names of the training configs shipped in ``dualtrack/configs`` (without ``.yaml``).

    Other YAML files of that folder (e.g. benchmark definitions) are not listed: a training
    config has only the sections of :class:`TrainConfig` (and ``extends``).
    """
    root = resources.files("dualtrack") / "configs"
    valid = {f.name for f in dataclasses.fields(TrainConfig)} | {"extends"}
    names = []
    for p in root.iterdir():
        if not p.name.endswith(".yaml"):
            continue
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError:
            continue
        if isinstance(data, dict) and set(data) <= valid:
            names.append(p.name[: -len(".yaml")])
    return sorted(names)


def shipped_names(prefix: str) -> list[str]:
    """Names (without ``.yaml``) of the files shipped in ``dualtrack/configs`` that start with
    ``prefix`` (``benchmark``, ``pipeline``)."""
    root = resources.files("dualtrack") / "configs"
    names = (p.name for p in root.iterdir())
    return sorted(n[: -len(".yaml")] for n in names if n.startswith(prefix) and n.endswith(".yaml"))


def find_config_file(
    name_or_path: str | os.PathLike,
    shipped: Sequence[str],
    what: str,
    kind: str,
    relative_to: Path | None = None,
) -> Path:
    """An existing file (tried relative to ``relative_to`` first), or the shipped
    ``dualtrack/configs/<name>.yaml`` when ``name_or_path`` is a bare name among ``shipped``.

    Raises:
        ConfigError: neither (the message lists the shipped names).
    """
    p = Path(name_or_path)
    candidates = [p]
    if relative_to is not None and not p.is_absolute():
        candidates.insert(0, relative_to / p)
    for c in candidates:
        if c.is_file():
            return c
    name = p.name[: -len(".yaml")] if p.name.endswith(".yaml") else p.name
    if p.parent == Path(".") and name in shipped:
        return Path(str(resources.files("dualtrack") / "configs" / f"{name}.yaml"))
    raise ConfigError(
        f"{what} {str(name_or_path)!r} is neither a file nor a shipped {kind}; shipped: {', '.join(shipped)}"
    )


def resolve_config_path(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    """A config path: an existing file, a path relative to ``relative_to``, or a shipped name."""
    return find_config_file(name_or_path, shipped_configs(), "config", "config", relative_to)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular 'extends' chain")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping")
    parent = data.pop("extends", None)
    if parent is not None:
        base = _read_yaml(resolve_config_path(parent, path.parent), (*seen, path))
        data = _merge(base, data)
    return data


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, part, parts[: i + 1])]
            continue
        if part not in node or node[part] is None:
            node[part] = {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, parts)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"override {key}: {'.'.join(parts[:-1])} is not a section")


def _list_index(node: list, part: str, parts: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override {'.'.join(parts)}: list index must be 0..{len(node) - 1}")
    return int(part)


def _check_override_key(key: str) -> None:
    """Reject unknown sections/fields early, naming the valid keys at the failing level."""
    parts = key.split(".")
    cls: Any = TrainConfig
    for i, part in enumerate(parts):
        if cls is ModelConfig:
            return
        if dataclasses.is_dataclass(cls):
            fields = _fields(cls)
            if part not in fields:
                where = ".".join(parts[:i]) or "config"
                raise ConfigError(
                    f"unknown key {'.'.join(parts[: i + 1])} in {where}; valid keys: {', '.join(fields)}"
                )
            cls = fields[part]
            continue
        origin = typing.get_origin(cls)
        if origin is list and part.isdigit():
            cls = typing.get_args(cls)[0]
            continue
        raise ConfigError(f"override {key}: {'.'.join(parts[:i])} has no sub-keys")
    if dataclasses.is_dataclass(cls) and cls is not ModelConfig:
        raise ConfigError(f"override {key}: {key} is a section; set one of its keys")


def _field_type(key: str) -> Any:
    cls: Any = TrainConfig
    for part in key.split("."):
        if cls is ModelConfig:
            return str if part == "name" else Any
        if dataclasses.is_dataclass(cls):
            cls = _fields(cls)[part]
        else:
            cls = typing.get_args(cls)[0]
    return cls


def _parse_value(text: str, tp: Any) -> Any:
    if tp is str or (typing.get_origin(tp) in (Union, types.UnionType) and str in typing.get_args(tp)):
        if text in ("null", "~", "None") and type(None) in typing.get_args(tp):
            return None
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(
    data: dict[str, Any], overrides: list[str], origin: str = "command-line override"
) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides to a config mapping (values parsed as YAML).

    Each value is type-checked against its field here, so an error names the override as the
    user typed it and where it came from (``origin``), not the config file it was applied to.

    Raises:
        ConfigError: malformed override, unknown key (the message lists the valid keys) or a
            value of the wrong type.
    """
    out = copy.deepcopy(data)
    for item in overrides:
        try:
            if "=" not in item:
                raise ConfigError("must look like key=value (e.g. optim.lr=3e-4)")
            key, text = item.split("=", 1)
            key = key.strip()
            if not key:
                raise ConfigError("has an empty key")
            _check_override_key(key)
            tp = _field_type(key)
            value = _parse_value(text, tp)
            coerce(value, tp, key)
            _set_dotted(out, key, value)
        except ConfigError as exc:
            raise ConfigError(f"{origin} {item!r}: {exc}") from None
    return out


def load_config(
    name_or_path: str | Path | None,
    overrides: list[str] | None = None,
    origin: str = "command-line override",
) -> TrainConfig:
    """Load a config file (or shipped name), apply overrides and type-check everything.

    Args:
        name_or_path: YAML file or shipped config name (``local``, ``tiny_fusion``, ...);
            ``None`` starts from the defaults.
        overrides: ``dotted.key=value`` strings applied after the file.
        origin: how an error names where the overrides came from.

    Raises:
        ConfigError: missing file, invalid YAML, unknown key or a value of the wrong type.
    """
    path = None if name_or_path is None else resolve_config_path(name_or_path)
    data = {} if path is None else _read_yaml(path)
    data = apply_overrides(data, list(overrides or []), origin)
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path or 'config'}: {exc}") from None
