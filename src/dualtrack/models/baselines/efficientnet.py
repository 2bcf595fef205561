"""A compact EfficientNet (Tan & Le, ICML 2019) written from scratch (no torchvision/timm).

Used by the 2-frame CNN baseline: the TUS-REC organisers' baseline and DualTrack's reproduction
of Prevost et al. both run an EfficientNet-B1 on two stacked frames. The network follows the B0
stage table (MBConv blocks with squeeze-and-excitation, SiLU, BatchNorm, stochastic depth),
scaled by a width and a depth multiplier: B1 = ``width_mult=1.0, depth_mult=1.1``
(stage repeats 2-3-3-4-4-5-2, 6.5 M parameters with a 1280-d head and 1 input channel).

Shapes: ``(B, in_channels, H, W) -> (B, num_features)`` (global average pooled), total
spatial stride 32.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["EfficientNet", "efficientnet_b1", "B0_STAGES"]

# (expand ratio, kernel, stride, output channels, repeats) of EfficientNet-B0.
B0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


def _round_channels(c: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of ``divisor`` (never below 90 % of it)."""
    out = max(divisor, int(c + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * c else out


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2(self.act(self.fc1(x.mean((-2, -1), keepdim=True))))
        return x * torch.sigmoid(s)


class _MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> SE -> 1x1 project (+ residual)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, drop_path: float) -> None:
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU(inplace=True)]
        layers += [
            nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.SiLU(inplace=True),
            _SqueezeExcite(mid, max(1, cin // 4)),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if not self.residual:
            return out
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            mask = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) < keep
            out = out * mask / keep
        return x + out


class EfficientNet(nn.Module):
    """EfficientNet feature extractor (classifier removed).

    Args:
        in_channels: input channels (2 for a stacked frame pair).
        width_mult: channel multiplier of the stem and every stage.
        depth_mult: repeat multiplier (``ceil(repeats * depth_mult)``, at least 1).
        head_channels: channels of the final 1x1 conv (1280 in EfficientNet).
        drop_path: maximal stochastic-depth rate (linearly increasing over the blocks).
        stages: stage table, rows ``(expand, kernel, stride, channels, repeats)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        width_mult: float = 1.0,
        depth_mult: float = 1.0,
        head_channels: int = 1280,
        drop_path: float = 0.2,
        stages: tuple[tuple[int, int, int, int, int], ...] = B0_STAGES,
    ) -> None:
        super().__init__()
        stem = _round_channels(32 * width_mult)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.SiLU(inplace=True)
        )
        plan = []
        cin = stem
        for expand, kernel, stride, channels, repeats in stages:
            cout = _round_channels(channels * width_mult)
            for r in range(max(1, math.ceil(repeats * depth_mult))):
                plan.append((cin, cout, expand, kernel, stride if r == 0 else 1))
                cin = cout
        blocks = [
            _MBConv(ci, co, e, k, s, drop_path * i / max(1, len(plan) - 1))
            for i, (ci, co, e, k, s) in enumerate(plan)
        ]
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Conv2d(cin, head_channels, 1, bias=False), nn.BatchNorm2d(head_channels), nn.SiLU(inplace=True)
        )
        self.num_features = head_channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, num_features)``."""
        return self.head(self.blocks(self.stem(x))).mean((-2, -1))


def efficientnet_b1(in_channels: int = 1, drop_path: float = 0.2) -> EfficientNet:
    """EfficientNet-B1 layout (width 1.0, depth 1.1, 1280-d features)."""
    return EfficientNet(in_channels=in_channels, width_mult=1.0, depth_mult=1.1, drop_path=drop_path)
