"""Label-preserving augmentations of (frames, transforms) pairs, as pure functions.

All transforms here are local poses ``L`` of shape ``(T-1, 4, 4)`` with ``L[k-1] = T_{k-1<-k}``
between consecutive *input* frames, in **centre-origin** image mm (see :mod:`dualtrack.geometry`):
the origin is the centre of the image the network sees, x along columns, y along rows, z out of
the image plane. Each augmentation changes the frames and the transforms together so that the
transforms stay the true motion of the augmented frames:

* :func:`flip_horizontal`: mirroring the columns maps a centre-origin point ``p`` to ``F p`` with
  ``F = diag(-1, 1, 1, 1)``; motions become ``F T F`` (still proper rigid transforms).
* :func:`reverse_sweep`: reversed frame order; ``T'_{k-1<-k}`` is the inverse of the original
  transform between the same two frames.
* :func:`crop_offset_mm` + :func:`recentre`: a crop moves the image centre by ``d`` mm; a point
  ``p_c`` in the crop's centre frame is ``p_c + d`` in the full image's centre frame, so motions
  become ``D^-1 T D`` with ``D`` the translation by ``d``.
* :func:`subsample_local`: keeping every ``k``-th frame composes ``k`` consecutive transforms.

Frames are ``(T, H, W)`` arrays or tensors; the randomness of a whole item is drawn by the caller
from one ``torch.Generator`` (see :func:`draw_augmentation`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dualtrack import geometry

__all__ = [
    "FLIP_X",
    "flip_horizontal",
    "flip_transforms",
    "reverse_sweep",
    "reverse_transforms",
    "crop_offset_mm",
    "recentre",
    "subsample_local",
    "Augmentation",
    "draw_augmentation",
]

FLIP_X = np.diag([-1.0, 1.0, 1.0, 1.0])
"""Mirror of the image x axis about the image centre (centre-origin image mm)."""


def flip_transforms(local: np.ndarray) -> np.ndarray:
    """Transforms of horizontally flipped frames: ``F @ L @ F`` with ``F = diag(-1, 1, 1, 1)``.

    Args:
        local: ``(..., 4, 4)`` motions in centre-origin image mm.

    Returns:
        ``(..., 4, 4)`` motions of the mirrored frames (proper rigid transforms).
    """
    return FLIP_X @ np.asarray(local, dtype=np.float64) @ FLIP_X


def flip_horizontal(frames: np.ndarray, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror frames ``(T, H, W)`` along W (columns) and their motions ``(T-1, 4, 4)``."""
    return np.ascontiguousarray(np.asarray(frames)[..., ::-1]), flip_transforms(local)


def reverse_transforms(local: np.ndarray) -> np.ndarray:
    """Motions of the reversed sequence: ``L'[k] = inv(L[T-2-k])``. Shapes ``(T-1, 4, 4)``."""
    return geometry.invert(np.asarray(local, dtype=np.float64)[::-1].copy())


def reverse_sweep(frames: np.ndarray, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reverse frames ``(T, H, W)`` in time together with their motions ``(T-1, 4, 4)``."""
    return np.ascontiguousarray(np.asarray(frames)[::-1]), reverse_transforms(local)


def crop_offset_mm(
    full_shape: tuple[int, int],
    top: int,
    left: int,
    crop_shape: tuple[int, int],
    spacing: tuple[float, float],
) -> np.ndarray:
    """Position of a crop's centre in the full image's centre-origin frame.

    Args:
        full_shape: ``(H, W)`` of the image that is cropped.
        top, left: 0-based row / column of the crop's upper-left pixel.
        crop_shape: ``(h, w)`` of the crop.
        spacing: ``(sx, sy)`` mm per pixel of the image that is cropped.

    Returns:
        ``(3,)`` offset ``d`` in mm: crop-centre point ``p_c`` equals full-image point ``p_c + d``.
    """
    h_full, w_full = full_shape
    h, w = crop_shape
    sx, sy = spacing
    dx = left + (w + 1) / 2.0 - (w_full + 1) / 2.0
    dy = top + (h + 1) / 2.0 - (h_full + 1) / 2.0
    return np.array([sx * dx, sy * dy, 0.0])


def recentre(local: np.ndarray, offset_mm: np.ndarray) -> np.ndarray:
    """Re-express motions ``(..., 4, 4)`` in a frame whose origin is at ``offset_mm`` (3,).

    Returns ``D^-1 @ L @ D`` with ``D`` the translation by ``offset_mm``.
    """
    d = geometry.translation_matrix(offset_mm)
    return geometry.invert(d) @ np.asarray(local, dtype=np.float64) @ d


def subsample_local(local: np.ndarray, stride: int) -> np.ndarray:
    """Motions between every ``stride``-th frame: products of ``stride`` consecutive motions.

    Args:
        local: ``(T-1, 4, 4)`` consecutive motions, ``(T-1) % stride == 0``.
        stride: temporal sub-sampling factor ``k >= 1``.

    Returns:
        ``((T-1) / k, 4, 4)`` with row ``j`` = ``L[jk] @ ... @ L[jk+k-1]`` = ``T_{jk<-(j+1)k}``.
    """
    local = np.asarray(local, dtype=np.float64)
    if stride < 1 or len(local) % stride:
        raise ValueError(f"stride {stride} must be >= 1 and divide the {len(local)} transforms")
    out = local[::stride].copy()
    for j in range(1, stride):
        out = out @ local[j::stride]
    return out


@dataclass(frozen=True)
class Augmentation:
    """The random choices for one training item.

    Attributes:
        flip: mirror columns.
        reverse: reverse time.
        stride: temporal sub-sampling factor.
        crop_top, crop_left: 0-based upper-left pixel of the local crop (``None`` = centred).
    """

    flip: bool = False
    reverse: bool = False
    stride: int = 1
    crop_top: int | None = None
    crop_left: int | None = None


def draw_augmentation(
    gen: torch.Generator,
    *,
    flip: float,
    reverse: float,
    strides: list[int],
    frame_shape: tuple[int, int] | None,
    crop_shape: tuple[int, int] | None,
    random_crop: bool,
) -> Augmentation:
    """Draw one item's augmentation from ``gen`` (always the same number of draws).

    Args:
        gen: generator owned by the item (seeded from run seed, epoch and position).
        flip, reverse: probabilities.
        strides: candidate temporal strides (uniform).
        frame_shape: ``(H, W)`` of the frames before cropping.
        crop_shape: ``(h, w)`` crop or ``None``.
        random_crop: random crop position (else centred).
    """
    u = torch.rand(5, generator=gen, dtype=torch.float64).tolist()
    stride = strides[min(int(u[2] * len(strides)), len(strides) - 1)]
    top = left = None
    if crop_shape is not None and frame_shape is not None:
        h_room = max(frame_shape[0] - crop_shape[0], 0)
        w_room = max(frame_shape[1] - crop_shape[1], 0)
        if random_crop:
            top, left = min(int(u[3] * (h_room + 1)), h_room), min(int(u[4] * (w_room + 1)), w_room)
        else:
            top, left = h_room // 2, w_room // 2
    return Augmentation(
        flip=bool(u[0] < flip), reverse=bool(u[1] < reverse), stride=stride, crop_top=top, crop_left=left
    )
