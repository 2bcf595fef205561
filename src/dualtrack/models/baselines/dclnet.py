"""DCL-Net baseline (Guo et al., "Sensorless freehand 3D ultrasound reconstruction via deep
contextual learning", MICCAI 2020).

The network sees a short clip of ``clip_length`` (N, default 5) consecutive frames as a
1-channel volume ``(1, N, H, W)``: a 3D ResNeXt (ResNeXt-50 layout: 3-4-6-3 bottleneck blocks,
cardinality 32, bottleneck widths 128..1024, outputs 256..2048; stem conv ``3x7x7`` with
spatial stride 2, max-pool ``1x3x3`` stride ``(1, 2, 2)``, stages 2-4 stride 2 in all axes),
then a spatial self-attention map (BN -> 1x1x1 conv -> ReLU -> 1x1x1 conv -> BN -> sigmoid)
multiplied onto the final features, ReLU, global average pooling and ``Linear(C, 6)``. It
predicts the **mean** 6-DoF motion over the ``N-1`` transitions in the clip.

Mapping clip means to the per-transition contract ``(B, T, H, W) -> (B, T-1, 6)``:

* the output of transition ``i`` (frame ``i`` relative to ``i-1``) is the mean motion predicted
  for the window of N frames centred on frame ``i`` (frames ``i - N//2 .. i - N//2 + N - 1``),
  shifted inwards at the sequence ends so that it always lies inside the input (no padding);
  sequences shorter than N frames are padded by repeating the last frame;
* the network runs once per distinct window (``T - N + 1`` of them), so a training clip of
  exactly N frames is one forward pass whose mean is broadcast to all N-1 transitions -- the
  original DCL-Net training;
* :meth:`DCLNet.loss` compares every output with the *mean of the targets over the same
  window*, so training the per-transition outputs is training the original mean-motion target;
  at inference each transition receives the mean motion of the window centred on it (sliding
  window, as in the paper and DualTrack's reproduction).

Loss: MSE + ``corr_weight`` * correlation loss ``1 - r``, ``r`` = Pearson correlation per DoF over
all windows of the batch (the clips of a batch play the role of DCL-Net's "case" samples).

Halo ``clip_length - 1``: a conservative bound including the inward shift
at the ends (interior outputs reach ``N//2`` frames), which makes chunked inference with that
halo exact, so the predictor evaluates a whole sweep chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dualtrack.models.baselines._common import pearson_correlation_loss
from dualtrack.models.registry import TrajectoryModel, register_model
from dualtrack.models.spec import InputSpec

__all__ = ["ResNeXt3d", "DCLNet", "dclnet", "dclnet_tiny", "window_starts", "window_mean"]


class _Bottleneck3d(nn.Module):
    """ResNeXt bottleneck: 1x1x1 -> grouped 3x3x3 (stride) -> 1x1x1 (x2 channels), projection shortcut."""

    def __init__(self, cin: int, mid: int, cardinality: int, stride: int) -> None:
        super().__init__()
        cout = 2 * mid
        self.body = nn.Sequential(
            nn.Conv3d(cin, mid, 1, bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, mid, 3, stride, 1, groups=cardinality, bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, cout, 1, bias=False),
            nn.BatchNorm3d(cout),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv3d(cin, cout, 1, stride, bias=False), nn.BatchNorm3d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNeXt3d(nn.Module):
    """3D ResNeXt with DCL-Net's attention pooling: ``(B, 1, N, H, W) -> (B, num_features)``.

    Args:
        stem_width: channels of the stem conv (64).
        widths: bottleneck (grouped conv) widths per stage; stage outputs are twice these.
        layers: bottleneck blocks per stage.
        cardinality: groups of the 3x3x3 convs (must divide every width).
    """

    def __init__(
        self,
        stem_width: int = 64,
        widths: Sequence[int] = (128, 256, 512, 1024),
        layers: Sequence[int] = (3, 4, 6, 3),
        cardinality: int = 32,
    ) -> None:
        super().__init__()
        if len(widths) != len(layers) or min(layers) < 1:
            raise ValueError(f"widths {tuple(widths)} and layers {tuple(layers)} must pair up (>= 1 block)")
        if any(w % cardinality for w in widths):
            raise ValueError(f"cardinality {cardinality} must divide every width {tuple(widths)}")
        self.stem = nn.Sequential(
            nn.Conv3d(1, stem_width, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
            nn.BatchNorm3d(stem_width),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        )
        blocks = []
        cin = stem_width
        for i, (mid, n) in enumerate(zip(widths, layers, strict=True)):
            for j in range(n):
                blocks.append(_Bottleneck3d(cin, mid, cardinality, 2 if (i > 0 and j == 0) else 1))
                cin = 2 * mid
        self.stages = nn.Sequential(*blocks)
        self.attention = nn.Sequential(
            nn.BatchNorm3d(cin),
            nn.Conv3d(cin, cin // 2, 1),
            nn.ReLU(inplace=True),
            nn.Conv3d(cin // 2, 1, 1),
            nn.BatchNorm3d(1),
            nn.Sigmoid(),
        )
        self.relu = nn.ReLU(inplace=True)
        self.num_features = cin
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, N, H, W) -> (B, num_features)`` attention-weighted, average-pooled features."""
        feats = self.stages(self.stem(x))
        return self.relu(feats * self.attention(feats)).mean((-3, -2, -1))


def window_starts(num_frames: int, clip_length: int, device: torch.device | None = None) -> torch.Tensor:
    """First frame of the window used for each transition ``i = 1..num_frames-1``: ``(num_frames-1,)``.

    ``start_i = clamp(i - clip_length // 2, 0, max(num_frames - clip_length, 0))``.
    """
    i = torch.arange(1, num_frames, device=device)
    return (i - clip_length // 2).clamp(0, max(num_frames - clip_length, 0))


def window_mean(target: torch.Tensor, clip_length: int) -> torch.Tensor:
    """Mean-motion targets of the DCL-Net windows: ``(B, T-1, 6) -> (B, T-1, 6)``.

    Entry ``i-1`` is the mean of the per-transition targets inside the window of transition ``i``
    (transitions ``start_i + 1 .. start_i + N - 1``; all of them if ``T < N``).
    """
    b, m, d = target.shape
    starts = window_starts(m + 1, clip_length, target.device)
    span = min(clip_length - 1, m)
    csum = torch.cat([target.new_zeros(b, 1, d), target.cumsum(1)], dim=1)  # (B, T, 6)
    return (csum[:, starts + span] - csum[:, starts]) / span


class DCLNet(TrajectoryModel):
    """DCL-Net: 3D ResNeXt + attention on N-frame clips, mean motion per window (see module doc).

    Args:
        clip_length: frames per clip N (>= 2).
        stem_width, widths, layers, cardinality: :class:`ResNeXt3d` size.
        corr_weight: weight of the correlation loss term (0 = plain MSE, as DualTrack ran it).
    """

    def __init__(
        self,
        clip_length: int = 5,
        stem_width: int = 64,
        widths: Sequence[int] = (128, 256, 512, 1024),
        layers: Sequence[int] = (3, 4, 6, 3),
        cardinality: int = 32,
        corr_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if clip_length < 2:
            raise ValueError(f"dclnet: clip_length must be >= 2, got {clip_length}")
        self.clip_length = int(clip_length)
        self.input_spec = InputSpec(halo=self.clip_length - 1, min_frames=self.clip_length)
        self.backbone = ResNeXt3d(stem_width, widths, layers, cardinality)
        self.head = nn.Linear(self.backbone.num_features, 6)
        self.corr_weight = float(corr_weight)

    def clip_forward(self, clips: torch.Tensor) -> torch.Tensor:
        """``(K, N, H, W)`` clips -> ``(K, 6)`` normalised mean motion of each clip."""
        return self.head(self.backbone(clips.unsqueeze(1)))

    def _windows(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, H, W) -> (B, W, N, H, W)``: all distinct N-frame windows (``W = max(T-N, 0) + 1``)."""
        n = self.clip_length
        if frames.shape[1] < n:
            pad = frames[:, -1:].expand(-1, n - frames.shape[1], -1, -1)
            frames = torch.cat([frames, pad], dim=1)
        return frames.unfold(1, n, 1).permute(0, 1, 4, 2, 3)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, H, W) -> (B, T, 6)``: row ``i`` = the mean motion of transition ``i``'s window
        (row 0 zeros); exact under chunking with a halo of ``clip_length - 1`` frames."""
        b, t, h, w = frames.shape
        windows = self._windows(frames)  # (B, W, N, H, W)
        nwin = windows.shape[1]
        out = self.clip_forward(windows.reshape(b * nwin, self.clip_length, h, w)).reshape(b, nwin, 6)
        out = out[:, window_starts(t, self.clip_length, frames.device)]
        return torch.cat([out.new_zeros(b, 1, 6), out], 1)

    def decode(self, features, *, index, global_frames=None, global_index=None) -> torch.Tensor:
        """Per-frame rows of :meth:`encode` -> ``(B, T-1, 6)`` per-transition window means."""
        return features[:, 1:]

    def frame_memory_bytes(self, height: int, width: int, itemsize: int) -> int:
        """Every frame enters ``clip_length`` windows."""
        return self.clip_length * super().frame_memory_bytes(height, width, itemsize)

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """MSE against the window-mean targets + ``corr_weight`` * (1 - Pearson r per DoF over the batch).

        Args:
            pred: ``(B, T-1, 6)`` output of :meth:`forward`.
            target: ``(B, T-1, 6)`` normalised per-transition targets.
        """
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        mean_target = window_mean(target.float(), self.clip_length)
        mse = torch.nn.functional.mse_loss(pred.float(), mean_target)
        if self.corr_weight == 0:
            return mse
        corr = pearson_correlation_loss(pred.reshape(-1, 6), mean_target.reshape(-1, 6), dim=0)
        return mse + self.corr_weight * corr


@register_model("dclnet")
def dclnet(clip_length: int = 5, corr_weight: float = 1.0) -> DCLNet:
    """DCL-Net with a 3D ResNeXt-50 (cardinality 32) on 5-frame clips."""
    return DCLNet(clip_length=clip_length, corr_weight=corr_weight)


@register_model("dclnet_tiny")
def dclnet_tiny(clip_length: int = 4, corr_weight: float = 1.0) -> DCLNet:
    """Test-size DCL-Net (stem 8, widths 8-16, cardinality 4, one block per stage, 4-frame clips)."""
    return DCLNet(
        clip_length=clip_length,
        stem_width=8,
        widths=(8, 8, 16, 16),
        layers=(1, 1, 1, 1),
        cardinality=4,
        corr_weight=corr_weight,
    )
