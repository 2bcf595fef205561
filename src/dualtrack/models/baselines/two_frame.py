"""2-Frame CNN baseline (Prevost et al., MedIA 2018; TUS-REC organisers' baseline).

Two consecutive frames are stacked as the 2 input channels of a 2D CNN that regresses the 6-DoF
motion between them. The model is applied independently to every consecutive pair of the input:
output ``i`` (``T_{i-1<-i}``) depends on frames ``i-1`` and ``i`` only (halo 1), so the predictor
runs a sweep through it in chunks of pairs (bounded memory) and chains the outputs.

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
from dualtrack.models.spec import InputSpec

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

    def __init__(self, backbone: nn.Module, dropout: float = 0.25) -> None:
        super().__init__(InputSpec(halo=1))
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.num_features, 6)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, H, W) -> (B, T, 6)``: row ``t`` = the prediction for the pair ``t-1, t`` (row 0
        zeros), so encoding in chunks with a halo of 1 frame is exact."""
        b, t = frames.shape[:2]
        out = self.head(self.dropout(self.backbone(frame_pairs(frames)))).reshape(b, t - 1, 6)
        return torch.cat([out.new_zeros(b, 1, 6), out], 1)

    def decode(self, features, *, index, global_frames=None, global_index=None) -> torch.Tensor:
        """Per-frame rows of :meth:`encode` -> ``(B, T-1, 6)`` (drops row 0)."""
        return features[:, 1:]


@register_model("two_frame_cnn")
def two_frame_cnn(backbone: str = "efficientnet", dropout: float = 0.25) -> TwoFrameCNN:
    """2-Frame CNN with a full-size backbone (EfficientNet-B1 6.5 M or ResNet-18 11.2 M parameters)."""
    return TwoFrameCNN(_pair_backbone(backbone, tiny=False), dropout=dropout)


@register_model("two_frame_cnn_tiny")
def two_frame_cnn_tiny(backbone: str = "efficientnet", dropout: float = 0.25) -> TwoFrameCNN:
    """Test-size 2-Frame CNN (width ~8, one block per stage)."""
    return TwoFrameCNN(_pair_backbone(backbone, tiny=True), dropout=dropout)
