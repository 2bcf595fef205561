"""2-Frame CNN baseline (Prevost et al., MedIA 2018; TUS-REC organisers' baseline).

Two consecutive frames are stacked as the 2 input channels of a 2D CNN that regresses the 6-DoF
motion between them. The model is applied independently to every consecutive pair of the input:
output ``i`` (``T_{i-1<-i}``) depends on frames ``i-1`` and ``i`` only (``temporal_receptive_field
= 1``), so a sweep is predicted by sliding over all pairs and chaining (:meth:`TwoFrameCNN.predict_sweep`
does this in chunks of pairs to bound memory).

Backbones (``backbone=``):

* ``"efficientnet"`` (default): own EfficientNet-B1 (:mod:`.efficientnet`), as run by the TUS-REC
  organisers and by DualTrack's reproduction of this baseline.
* ``"resnet18"``: the shared 2D ResNet-18 (:func:`dualtrack.models.resnet.resnet18_2d`).

Head: dropout 0.25 then ``Linear(C, 6)``. Loss: MSE on the normalised 6-DoF (registry default).
"""

from __future__ import annotations

import torch
from torch import nn

from dualtrack.models.baselines._common import frame_pairs
from dualtrack.models.baselines.efficientnet import EfficientNet, efficientnet_b1
from dualtrack.models.registry import TrajectoryModel, register_model
from dualtrack.models.resnet import resnet18_2d

__all__ = ["TwoFrameCNN", "two_frame_cnn", "two_frame_cnn_tiny"]

BACKBONES = ("efficientnet", "resnet18")


def _pair_backbone(backbone: str, tiny: bool) -> nn.Module:
    if backbone == "efficientnet":
        if tiny:
            return EfficientNet(in_channels=2, width_mult=0.25, depth_mult=0.01, head_channels=32)
        return efficientnet_b1(in_channels=2)
    if backbone == "resnet18":
        return resnet18_2d(in_channels=2, width=8, layers=(1, 1, 1, 1)) if tiny else resnet18_2d(2)
    raise ValueError(f"two_frame_cnn: unknown backbone {backbone!r}; expected one of {BACKBONES}")


class TwoFrameCNN(TrajectoryModel):
    """Pairwise 2D CNN: ``(B, T, H, W) -> (B, T-1, 6)``, one independent prediction per pair.

    Args:
        backbone: feature extractor taking ``(N, 2, H, W)`` and returning ``(N, C)`` with a
            ``num_features`` attribute.
        dropout: dropout before the linear head.
    """

    temporal_receptive_field = 1

    def __init__(self, backbone: nn.Module, dropout: float = 0.25) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.num_features, 6)

    def forward(
        self,
        frames: torch.Tensor,
        *,
        index: torch.Tensor | None = None,
        global_frames: torch.Tensor | None = None,
        global_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``frames (B, T, H, W)`` in ``[0, 1]`` -> normalised 6-DoF ``(B, T-1, 6)`` of ``T_{i-1<-i}``.

        ``index`` and ``global_*`` are accepted for the common contract and ignored.
        """
        self.check_frames(frames)
        b, t = frames.shape[:2]
        out = self.head(self.dropout(self.backbone(frame_pairs(frames))))
        return out.reshape(b, t - 1, 6)

    @torch.no_grad()
    def predict_sweep(
        self, frames: torch.Tensor, index: torch.Tensor | None = None, chunk_size: int = 256
    ) -> torch.Tensor:
        """Whole-sweep inference in chunks of ``chunk_size`` pairs (bounded memory), equal to ``forward``.

        Args:
            frames: ``(1, N, H, W)`` in ``[0, 1]``.
            index: ignored (accepted for the common inference interface).
            chunk_size: pairs per CNN pass (>= 1).
        Returns:
            ``(1, N-1, 6)`` normalised 6-DoF of ``T_{i-1<-i}``.
        """
        self.check_frames(frames)
        n = frames.shape[1]
        step = max(1, int(chunk_size))
        return torch.cat([self(frames[:, a - 1 : min(a + step, n)]) for a in range(1, n, step)], dim=1)


@register_model("two_frame_cnn")
def two_frame_cnn(backbone: str = "efficientnet", dropout: float = 0.25) -> TwoFrameCNN:
    """2-Frame CNN with a full-size backbone (EfficientNet-B1 6.5 M or ResNet-18 11.2 M parameters)."""
    return TwoFrameCNN(_pair_backbone(backbone, tiny=False), dropout=dropout)


@register_model("two_frame_cnn_tiny")
def two_frame_cnn_tiny(backbone: str = "efficientnet", dropout: float = 0.25) -> TwoFrameCNN:
    """Test-size 2-Frame CNN (width ~8, one block per stage)."""
    return TwoFrameCNN(_pair_backbone(backbone, tiny=True), dropout=dropout)
