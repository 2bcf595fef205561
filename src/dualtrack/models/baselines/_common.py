"""Pieces shared by the baseline models: the correlation loss, frame-pair and
video encoders, and a base class for "CNN features -> sequence model" baselines.

Every encoder turns frames ``(B, T, H, W)`` in ``[0, 1]`` into one feature vector per
*transition* ``i = 1..T-1`` (frame ``i`` relative to frame ``i-1``), shape ``(B, T-1, C)``, and
states its ``halo``: the number of frames on each side of a transition's two frames that
influence its features; the predictor uses it to encode a long sweep in exact chunks before the
(whole-sequence) temporal model runs once (:class:`SequenceBaseline`).
"""

from __future__ import annotations

import torch
from torch import nn

from dualtrack.models.registry import TrajectoryModel
from dualtrack.models.resnet import resnet18_2d, resnet18_3d
from dualtrack.models.spec import InputSpec

__all__ = [
    "pearson_correlation_loss",
    "frame_pairs",
    "PairEncoder",
    "VideoEncoder",
    "SequenceBaseline",
    "build_encoder",
]


def pearson_correlation_loss(
    pred: torch.Tensor, target: torch.Tensor, dim: int | tuple[int, ...], min_var: float = 1e-8
) -> torch.Tensor:
    """Correlation loss ``1 - r`` of DCL-Net (Guo et al. 2020) and MoNet (Luo et al. 2022).

    ``r`` is the Pearson correlation between ``pred`` and ``target`` computed along ``dim`` (the
    "samples" axes) separately for every remaining position (e.g. every sequence and DoF);
    the loss is the mean of ``1 - r`` over those positions. It is 0 for perfectly (positively,
    affinely) correlated predictions, 1 for uncorrelated ones and 2 for perfectly
    anti-correlated ones, and it ignores the scale/offset of ``pred`` (the MSE term handles
    those). Positions whose target variance along ``dim`` is below ``min_var`` (a constant
    target, e.g. a single sample) have no defined correlation and are skipped; if none is left
    the loss is 0 (with a graph, so ``backward`` still works).

    Args:
        pred, target: tensors of equal shape, e.g. ``(B, T-1, 6)``.
        dim: axis or axes along which the correlation is taken (e.g. ``1`` = over time).
        min_var: minimum (mean squared deviation) target variance for a position to count.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    p = pred.float() - pred.float().mean(dim, keepdim=True)
    t = target.float() - target.float().mean(dim, keepdim=True)
    cov = (p * t).sum(dim)
    n = p.numel() // max(1, cov.numel())  # samples per position
    var_p = (p * p).sum(dim)
    var_t = (t * t).sum(dim)
    r = cov / torch.sqrt(var_p * var_t + 1e-12)
    valid = (var_t > min_var * n).float()
    return ((1.0 - r) * valid).sum() / valid.sum().clamp_min(1.0)


def frame_pairs(frames: torch.Tensor) -> torch.Tensor:
    """Consecutive frames stacked as 2 channels: ``(B, T, H, W) -> (B*(T-1), 2, H, W)``, pair
    ``b*(T-1) + i-1`` = frames ``i-1`` and ``i`` of sequence ``b``."""
    b, t, h, w = frames.shape
    return torch.stack([frames[:, :-1], frames[:, 1:]], dim=2).reshape(b * (t - 1), 2, h, w)


class PairEncoder(nn.Module):
    """2D ResNet-18 on consecutive frame pairs stacked as 2 channels (Prevost et al. 2018 input).

    ``(B, T, H, W) -> (B, T-1, C)``: transition ``i`` sees exactly frames ``i-1`` and ``i``.
    """

    halo = 0

    def __init__(self, width: int = 64, layers: tuple[int, ...] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.backbone = resnet18_2d(in_channels=2, width=width, layers=layers)
        self.num_features = self.backbone.num_features

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[:2]
        return self.backbone(frame_pairs(frames)).reshape(b, t - 1, -1)


class VideoEncoder(nn.Module):
    """3D ResNet-18 with temporal stride 1 (one feature vector per frame); the first frame's
    features are dropped so that feature ``i-1`` belongs to transition ``i``.

    ``(B, T, H, W) -> (B, T-1, C)``; ``halo`` = the backbone's temporal receptive field.
    """

    def __init__(
        self, width: int = 64, layers: tuple[int, ...] = (2, 2, 2, 2), small_window: bool = True
    ) -> None:
        super().__init__()
        self.backbone = resnet18_3d(in_channels=1, width=width, layers=layers, small_window=small_window)
        self.num_features = self.backbone.num_features
        self.halo = self.backbone.temporal_receptive_field

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(frames.unsqueeze(1)).mean((-2, -1))  # (B, C, T)
        return feats.transpose(1, 2)[:, 1:]


def build_encoder(kind: str, width: int, layers: tuple[int, ...]) -> PairEncoder | VideoEncoder:
    """``"pair2d"`` -> :class:`PairEncoder`, ``"video3d"`` -> small-window :class:`VideoEncoder`."""
    if kind == "pair2d":
        return PairEncoder(width=width, layers=layers)
    if kind == "video3d":
        return VideoEncoder(width=width, layers=layers, small_window=True)
    raise ValueError(f"unknown encoder {kind!r}; expected 'pair2d' or 'video3d'")


class SequenceBaseline(TrajectoryModel):
    """Base of the "per-transition CNN features -> temporal model" baselines (MoNet, Hybrid
    Transformer). Subclasses pass their encoder to ``__init__`` and implement :meth:`sequence_model`.

    Contract (:mod:`dualtrack.models.registry`): :meth:`encode` gives frame ``t`` the features of the
    transition ``t-1 -> t`` (frame 0 gets zeros), so its halo is the encoder's, at least 1 (the
    previous frame); :meth:`decode` runs the temporal model once over all ``T-1`` transitions.
    """

    def __init__(self, encoder: PairEncoder | VideoEncoder) -> None:
        super().__init__(InputSpec(halo=max(1, encoder.halo)))
        self.encoder = encoder

    def sequence_model(self, feats: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``feats (B, T-1, C)``, frame ``index (B, T)`` -> normalised 6-DoF ``(B, T-1, 6)``."""
        raise NotImplementedError

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, H, W) -> (B, T, C)``: row ``t`` = features of transition ``t`` (row 0 zeros)."""
        feats = self.encoder(frames)
        return torch.cat([feats.new_zeros(feats.shape[0], 1, feats.shape[2]), feats], 1)

    def decode(self, features, *, index, global_frames=None, global_index=None) -> torch.Tensor:
        return self.sequence_model(features[:, 1:], index)
