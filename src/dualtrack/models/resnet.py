"""ResNet backbones written from scratch (no torchvision): a 2D per-image ResNet and a 3D video ResNet.

Both follow the ResNet-18 layout (BasicBlocks, four stages of widths ``w, 2w, 4w, 8w``) with a
configurable base width ``w`` and number of blocks per stage, so tiny variants (e.g. ``width=8,
layers=(1, 1, 1, 1)``) run in milliseconds on a CPU for tests.

* :class:`ResNet2d` (:func:`resnet18_2d`): per-image backbone. Input ``(B, C_in, H, W)``; ``forward``
  returns the spatially mean-pooled feature vector ``(B, 8w)``, ``forward_features`` the map
  ``(B, 8w, H/s, W/s)`` with ``s = 16`` (``s = 32`` with ``stem_pool=True``).
* :class:`ResNet3d` (:func:`resnet18_3d`): video backbone for the local encoder. Grayscale stem
  (a spatial ``1 x 7 x 7`` conv with spatial stride 2, then a temporal ``k x 1 x 1`` conv), no max-pool,
  **temporal stride 1 everywhere**: one feature map per input frame, spatial downsampling only
  (``/16``). Input ``(B, C_in, T, H, W)``, output ``(B, 8w, T, H/16, W/16)``. With
  ``small_window=True`` only the first stage uses ``k x 3 x 3`` convs; stages 2-4 use ``1 x 3 x 3``.

Temporal receptive field (frames on each side of a frame that influence its features), computed by
:attr:`ResNet3d.temporal_receptive_field` from the built layers: ``(k-1)/2`` for the stem plus
``(k-1)/2`` for every temporal conv on the residual branches. ResNet-18 with ``k = 3``: ``1 + 4*2*2 =
17`` (a 35-frame window); ``small_window``: ``1 + 2*2 = 5`` (11 frames). Shortcut convolutions are
``1 x 1 x 1`` and never widen it. Because all temporal padding is zero padding and temporal strides are
1, running the network on a window of frames ``[a - r, b + r)`` (clipped to the sequence) gives exactly
the features of frames ``[a, b)`` of the full sequence in eval mode (BatchNorm with running statistics).

Speed: in eval mode every BatchNorm is folded into the convolution before it (:func:`conv_bn`: one
convolution with scaled weights and a bias, the same result up to round-off; the modules and
their ``state_dict`` are unchanged), and the 3D network keeps its weights and activations in
``channels_last_3d`` memory format, which oneDNN (CPU, with bf16 autocast several times faster than
the default layout) and cuDNN run fastest.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ResNet2d", "ResNet3d", "resnet18_2d", "resnet18_3d", "half_resolution_activation_bytes"]


def conv_bn(
    conv: nn.Conv2d | nn.Conv3d, bn: nn.BatchNorm2d | nn.BatchNorm3d, x: torch.Tensor
) -> torch.Tensor:
    """``bn(conv(x))``; when ``bn`` is in eval mode, computed as one convolution with the BatchNorm
    folded in (weights scaled by ``gamma / sqrt(var + eps)``, bias ``beta - mean * scale``)."""
    if bn.training or not bn.track_running_stats:
        return bn(conv(x))
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale.reshape(-1, *([1] * (conv.weight.ndim - 1)))
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return conv._conv_forward(x, weight, bias)


def half_resolution_activation_bytes(channels: int, height: int, width: int, itemsize: int) -> int:
    """Peak activation bytes per input frame of ``height x width`` of these ResNets: about four
    ``channels``-wide maps at half resolution alive at once (the stem output and the first
    stage), plus the float32 input frame. Sizes the automatic chunk plan of
    :func:`dualtrack.inference.predict_trajectory`."""
    return 4 * channels * (height // 2) * (width // 2) * itemsize + 4 * height * width


def _shortcut(shortcut: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Identity, or the ``Sequential(conv, bn)`` projection through :func:`conv_bn`."""
    if isinstance(shortcut, nn.Sequential):
        return conv_bn(shortcut[0], shortcut[1], x)
    return shortcut(x)


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _BasicBlock2d(nn.Module):
    """Two ``3 x 3`` convs with BN/ReLU and an identity (or strided ``1 x 1``) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(conv_bn(self.conv1, self.bn1, x))
        out = conv_bn(self.conv2, self.bn2, out)
        return self.relu(out + _shortcut(self.shortcut, x))


class _BasicBlock3d(nn.Module):
    """3D BasicBlock: ``kt x 3 x 3`` convs with spatial stride only; ``1 x 1 x 1`` shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, kt: int) -> None:
        super().__init__()
        pad = (kt // 2, 1, 1)
        self.kt = kt
        self.conv1 = nn.Conv3d(cin, cout, (kt, 3, 3), (1, stride, stride), pad, bias=False)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = nn.Conv3d(cout, cout, (kt, 3, 3), 1, pad, bias=False)
        self.bn2 = nn.BatchNorm3d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv3d(cin, cout, 1, (1, stride, stride), bias=False), nn.BatchNorm3d(cout)
            )

    @property
    def temporal_halo(self) -> int:
        """Frames each side seen by this block (two temporal convs on the residual branch)."""
        return 2 * (self.kt // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(conv_bn(self.conv1, self.bn1, x))
        out = conv_bn(self.conv2, self.bn2, out)
        return self.relu(out + _shortcut(self.shortcut, x))


def _check_layers(layers: Sequence[int], width: int) -> tuple[int, ...]:
    layers = tuple(int(n) for n in layers)
    if len(layers) != 4 or min(layers) < 1:
        raise ValueError(f"layers must be 4 positive block counts, got {layers}")
    if width < 1:
        raise ValueError(f"width must be positive, got {width}")
    return layers


class ResNet2d(nn.Module):
    """2D ResNet (ResNet-18 layout by default) returning a per-image feature vector.

    Args:
        in_channels: input channels (1 for grayscale B-mode).
        width: channels of the first stage; stages have ``width * (1, 2, 4, 8)``.
        layers: BasicBlocks per stage.
        stem_pool: add the classic ``3 x 3`` stride-2 max-pool after the stem (total stride 32
            instead of 16).
        stem: ``"resnet"``: one ``7 x 7`` stride-2 conv to ``width`` channels; ``"r2plus1d"``: a
            ``7 x 7`` stride-2 conv to ``round(width * 45 / 64)`` channels, then a ``3 x 3`` conv to
            ``width`` (each with BN and ReLU), the authors' global backbone (their per-frame
            ``1 x k x k`` video convolutions are these 2D ones).

    Shapes: ``forward``: ``(B, in_channels, H, W) -> (B, num_features)``;
    ``forward_features``: ``(B, in_channels, H, W) -> (B, num_features, H/16, W/16)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 64,
        layers: Sequence[int] = (2, 2, 2, 2),
        stem_pool: bool = False,
        stem: str = "resnet",
    ) -> None:
        super().__init__()
        layers = _check_layers(layers, width)
        if stem not in ("resnet", "r2plus1d"):
            raise ValueError(f"stem must be 'resnet' or 'r2plus1d', got {stem!r}")
        pool = nn.MaxPool2d(3, 2, 1) if stem_pool else nn.Identity()
        if stem == "resnet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                pool,
            )
        else:
            mid = max(1, round(width * 45 / 64))
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, mid, 7, 2, 3, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                nn.Conv2d(mid, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                pool,
            )
        stages = []
        cin = width
        for i, n in enumerate(layers):
            cout = width * 2**i
            blocks = [_BasicBlock2d(cin, cout, 1 if i == 0 else 2)]
            blocks += [_BasicBlock2d(cout, cout, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, num_features, h, w)`` feature map."""
        s = self.stem
        for i in range(0, len(s) - 1, 3):  # (conv, bn, relu) groups, then the pool
            x = s[i + 2](conv_bn(s[i], s[i + 1], x))
        return self.stages(s[-1](x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, num_features)`` spatially mean-pooled features."""
        return self.forward_features(x).mean((-2, -1))


class ResNet3d(nn.Module):
    """3D video ResNet with temporal stride 1 everywhere (one feature map per frame).

    Args:
        in_channels: input channels (1 for grayscale).
        width: channels of the first stage; stages have ``width * (1, 2, 4, 8)``. The stem's
            intermediate (spatial) conv has ``round(width * 45 / 64)`` channels, R(2+1)D style.
        layers: BasicBlocks per stage.
        temporal_kernel: odd temporal kernel size ``k`` of the temporal convs.
        small_window: temporal convs only in the stem and the first stage (``1 x 3 x 3`` later).

    Shapes: ``(B, in_channels, T, H, W) -> (B, num_features, T, H/16, W/16)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 64,
        layers: Sequence[int] = (2, 2, 2, 2),
        temporal_kernel: int = 3,
        small_window: bool = False,
    ) -> None:
        super().__init__()
        layers = _check_layers(layers, width)
        if temporal_kernel < 1 or temporal_kernel % 2 == 0:
            raise ValueError(f"temporal_kernel must be a positive odd number, got {temporal_kernel}")
        kt = temporal_kernel
        self.width = width
        mid = max(1, round(width * 45 / 64))
        self.stem_kt = kt
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, mid, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, width, (kt, 1, 1), 1, (kt // 2, 0, 0), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )
        stages = []
        cin = width
        for i, n in enumerate(layers):
            cout = width * 2**i
            k = kt if (i == 0 or not small_window) else 1
            blocks = [_BasicBlock3d(cin, cout, 1 if i == 0 else 2, k)]
            blocks += [_BasicBlock3d(cout, cout, 1, k) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        _init_weights(self)
        self.to(memory_format=torch.channels_last_3d)

    @property
    def temporal_receptive_field(self) -> int:
        """Frames on each side of a frame that influence its output features (from the layers)."""
        halo = self.stem_kt // 2
        for stage in self.stages:
            for block in stage:
                halo += block.temporal_halo
        return halo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, T, H, W) -> (B, num_features, T, H/16, W/16)`` (``channels_last_3d`` memory)."""
        x = x.contiguous(memory_format=torch.channels_last_3d)
        s = self.stem
        x = s[2](conv_bn(s[0], s[1], x))
        x = s[5](conv_bn(s[3], s[4], x))
        return self.stages(x)


def resnet18_2d(
    in_channels: int = 1, width: int = 64, layers: Sequence[int] = (2, 2, 2, 2), stem_pool: bool = False
) -> ResNet2d:
    """2D ResNet-18 (11.2 M parameters at ``width=64``, 1 input channel); see :class:`ResNet2d`."""
    return ResNet2d(in_channels=in_channels, width=width, layers=layers, stem_pool=stem_pool)


def resnet18_3d(
    in_channels: int = 1,
    width: int = 64,
    temporal_kernel: int = 3,
    small_window: bool = False,
    layers: Sequence[int] = (2, 2, 2, 2),
) -> ResNet3d:
    """3D ResNet-18 with a grayscale stem and temporal stride 1; see :class:`ResNet3d`.

    At ``width=64``: about 33 M parameters and a ±17-frame temporal receptive field; with
    ``small_window=True`` about 11.5 M parameters and ±5 frames.
    """
    return ResNet3d(
        in_channels=in_channels,
        width=width,
        layers=layers,
        temporal_kernel=temporal_kernel,
        small_window=small_window,
    )
