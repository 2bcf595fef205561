"""Global encoder of DualTrack: per-frame 2D image backbone -> temporal transformer.

Pipeline for frames ``(B, T, H, W)`` in ``[0, 1]`` (whole frames, any size; typically every 8th frame
of a sweep, or randomly sampled non-contiguous frames during global pretraining):

1. resize each frame to ``size x size`` (bilinear with antialiasing, which removes the
   speckle detail on purpose);
2. 2D backbone -> one feature vector per frame, ``Linear`` to ``dim`` (:meth:`frame_features`);
3. sinusoidal encoding of the **true frame index** added, bidirectional transformer
   (paper: width 512, FFN 1024, 8 layers, 8 heads) -> ``(B, T, dim)``. With ``transformer: bert``
   (the authors' layout) a learned table of ``max_positions`` rows indexed by the true frame index
   is added instead, and the transformer is a post-norm BERT encoder.

Backbones are chosen by name from a small registry (:func:`register_global_backbone`,
:func:`build_global_backbone`):

* ``"resnet18"`` (default): :class:`~dualtrack.models.resnet.ResNet2d`, grayscale, own code;
  ``width`` / ``layers`` set its size; ``stem_pool`` (default) keeps the standard
  stride-2 max-pool after the stem (7 x 7 maps at 224²; ``False``: 14 x 14 as in the authors' code).
* ``"timm:<model name>"``: any timm model, created with ``pretrained=False, in_chans=1,
  num_classes=0`` (pooled features). Needs the optional package ``timm``.

``weights`` is a local file (``.safetensors`` or a torch ``state_dict``, optionally nested under
``"state_dict"`` or ``"model"``) loaded strictly into the backbone. Nothing is ever downloaded. For
timm backbones, a 3-channel first convolution in the file is summed over its input channels to fit
the grayscale input.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dualtrack.models.config import GlobalEncoderConfig
from dualtrack.models.resnet import ResNet2d, half_resolution_activation_bytes
from dualtrack.models.transformer import BertTransformer, TransformerEncoder, sinusoidal_encoding

__all__ = [
    "GlobalEncoder",
    "register_global_backbone",
    "build_global_backbone",
    "list_global_backbones",
    "load_weights_file",
]

BackboneBuilder = Callable[..., tuple[nn.Module, int]]
_BACKBONES: dict[str, BackboneBuilder] = {}


def register_global_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Register ``builder(width=, layers=, weights=, stem_pool=, stem=) -> (module, num_features)``
    under ``name``.

    The module maps ``(N, 1, S, S)`` images to ``(N, num_features)`` vectors.
    """

    def deco(fn: BackboneBuilder) -> BackboneBuilder:
        if name in _BACKBONES:
            raise ValueError(f"global backbone {name!r} is registered twice")
        _BACKBONES[name] = fn
        return fn

    return deco


def list_global_backbones() -> list[str]:
    """Registered backbone names (``timm:<name>`` is accepted in addition)."""
    return sorted(_BACKBONES)


def load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``state_dict`` from a local ``.safetensors`` or torch file (never downloads).

    A torch file holding a dict with a ``"state_dict"`` or ``"model"`` entry is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read weights from {path}: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not contain a state_dict (got {type(state).__name__})")
    return state


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"weights in {path} do not fit the backbone: {exc}") from exc


@register_global_backbone("resnet18")
def _resnet18(
    width: int = 64,
    layers: Sequence[int] = (2, 2, 2, 2),
    weights: str | os.PathLike | None = None,
    stem_pool: bool = True,
    stem: str = "resnet",
) -> tuple[nn.Module, int]:
    net = ResNet2d(in_channels=1, width=width, layers=layers, stem_pool=stem_pool, stem=stem)
    if weights is not None:
        _load_strict(net, load_weights_file(weights), weights)
    return net, net.num_features


def _timm_backbone(model_name: str, weights: str | os.PathLike | None) -> tuple[nn.Module, int]:
    try:
        timm = importlib.import_module("timm")
    except ImportError as exc:
        raise ImportError(
            f"global backbone 'timm:{model_name}' needs the optional package timm "
            "(pip install 'dualtrack[timm]'); the built-in backbone is 'resnet18'"
        ) from exc
    net = timm.create_model(model_name, pretrained=False, in_chans=1, num_classes=0)
    if weights is not None:
        state = load_weights_file(weights)
        own = net.state_dict()
        for key, value in state.items():
            target = own.get(key)
            if target is not None and value.ndim == 4 and target.shape[1] == 1 and value.shape[1] == 3:
                state[key] = value.sum(1, keepdim=True)
        state = {k: v for k, v in state.items() if k in own or not k.startswith(("head", "fc", "classifier"))}
        _load_strict(net, state, weights)
    return net, int(net.num_features)


def build_global_backbone(
    name: str,
    *,
    width: int = 64,
    layers: Sequence[int] = (2, 2, 2, 2),
    weights: str | os.PathLike | None = None,
    stem_pool: bool = True,
    stem: str = "resnet",
) -> tuple[nn.Module, int]:
    """Build a per-image backbone ``(N, 1, S, S) -> (N, F)`` by name; returns ``(module, F)``.

    ``width``/``layers``/``stem_pool``/``stem`` apply to the built-in ResNet; ``weights`` is an
    optional local file.
    """
    if name.startswith("timm:"):
        return _timm_backbone(name.removeprefix("timm:"), weights)
    if name not in _BACKBONES:
        raise KeyError(
            f"unknown global backbone {name!r}; available: {', '.join(list_global_backbones())} "
            "or 'timm:<model name>'"
        )
    return _BACKBONES[name](width=width, layers=layers, weights=weights, stem_pool=stem_pool, stem=stem)


class GlobalEncoder(nn.Module):
    """2D backbone per frame + temporal transformer (see the module docstring), sized by a
    :class:`~dualtrack.models.config.GlobalEncoderConfig`.

    Shapes: ``forward(frames (B, T, H, W), index (B, T)) -> (B, T, dim)``.
    """

    def __init__(self, cfg: GlobalEncoderConfig) -> None:
        super().__init__()
        self.backbone, features = build_global_backbone(
            cfg.backbone, width=cfg.width, layers=cfg.layers, weights=cfg.weights, stem_pool=cfg.stem_pool,
            stem=cfg.stem,
        )
        self.size = int(cfg.size)
        self.proj = nn.Linear(features, cfg.dim)
        self.temporal: nn.Module
        self.positions: nn.Embedding | None = None
        if cfg.transformer == "bert":
            self.positions = nn.Embedding(cfg.max_positions, cfg.dim)
            self.temporal = BertTransformer(cfg.dim, cfg.num_layers, cfg.heads, cfg.ffn, cfg.dropout)
        else:
            self.temporal = TransformerEncoder(cfg.dim, cfg.num_layers, cfg.heads, cfg.ffn, cfg.dropout)
        self.dim = cfg.dim

    def frame_memory_bytes(self, itemsize: int) -> int:
        """Peak activation bytes per frame of :meth:`frame_features` (frames resized to
        ``size``; a 64-channel ResNet stem is an upper bound for the built-in ResNet)."""
        return half_resolution_activation_bytes(64, self.size, self.size, itemsize)

    def resize(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, H, W) -> (B*T, 1, S, S)`` with ``S = size`` (bilinear, antialiased)."""
        x = frames.flatten(0, 1)[:, None]
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
            )
        return x

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, H, W)`` frames in ``[0, 1]`` -> ``(B, T, dim)`` per-frame embeddings."""
        b, t = frames.shape[:2]
        return self.proj(self.backbone(self.resize(frames))).unflatten(0, (b, t))

    def temporal_tokens(self, features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``(B, T, dim)`` embeddings + ``(B, T)`` true frame indices -> ``(B, T, dim)``."""
        if self.positions is None:
            return self.temporal(features + sinusoidal_encoding(index, self.dim).to(features.dtype))
        limit = self.positions.num_embeddings
        if int(index.max()) >= limit:
            raise ValueError(f"frame index {int(index.max())} is beyond the {limit} positions of the global "
                             "encoder's learned position table")
        return self.temporal(features + self.positions(index).to(features.dtype))

    def forward(self, frames: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.temporal_tokens(self.frame_features(frames), index)
