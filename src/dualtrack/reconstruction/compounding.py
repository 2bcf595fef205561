"""Freehand 3D compounding: tracked 2D frames -> a regular voxel grid.

Coordinate conventions
----------------------
* **Pixels.** Frame ``f`` has shape ``(H, W)``; pixel ``(u, v)`` is column ``u = 1..W`` and row
  ``v = 1..H`` (TUS-REC, 1-based, origin upper-left). Its position in the frame's own image mm is
  ``S @ (u, v, 0, 1)`` (plane ``z = 0``, ``S`` = pixel -> mm scaling).
* **Reference frame.** Poses ``G[i] = T_{0<-i}`` map image mm of frame ``i`` into image mm of
  frame 0 (corner origin, see :mod:`dualtrack.geometry`). The volume lives in this *reference*
  frame: ``x`` = lateral (columns of frame 0), ``y`` = depth (rows of frame 0), ``z = x × y`` =
  elevation, millimetres.
* **Volume grid.** ``Volume.data`` has shape ``(D, H, W) = (nk, nj, ni)`` and ``data[k, j, i]``
  is the voxel whose *centre* lies at
  ``origin + direction @ (spacing * (i, j, k))`` in reference mm. ``spacing``, ``origin`` and the
  columns of ``direction`` are in ``(i, j, k)`` order, i.e. the reverse of ``data``'s axis order
  (the NRRD / ITK order: the fastest-varying index first). ``Volume.affine`` is the 4x4 matrix
  of this map.
* **Grid orientation.** ``frame="first"`` aligns the grid axes with frame 0 (``direction = I``);
  ``frame="obb"`` uses a tight oriented box of all frame corners found by PCA, with its axes
  ordered and signed to stay as close as possible to frame 0's axes.
* **Slicer.** :func:`dualtrack.reconstruction.export.write_nrrd` maps reference mm to Slicer's
  RAS world with the fixed rotation ``IMAGE_MM_TO_RAS`` (documented there), the same matrix that
  :func:`~dualtrack.reconstruction.export.write_sequence_metafile` applies to the per-frame
  transforms, so volume and tracked frames overlay in Slicer.

Algorithm
---------
Pixel-based method (as in PLUS): every (masked, optionally subsampled) pixel of every frame is
mapped to continuous voxel coordinates and splatted into the nearest voxel (``method="nearest"``)
or its 8 neighbours with trilinear weights (``method="trilinear"``). Sums and weights accumulate
with ``index_add_`` (``compound="mean"``) or the running maximum with ``scatter_reduce_``
(``compound="max"``). Frames are processed in chunks, so only the accumulators scale with the
sweep. Empty voxels *between* frames are then optionally filled by an iterative neighbourhood
mean (normalised convolution), bounded in distance and limited to voxels with data on both
sides along some grid axis, so the volume does not grow outside the swept region.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dualtrack.geometry import image_points, transform_points
from dualtrack.utils import available_memory_bytes, progress_bar

log = logging.getLogger(__name__)

__all__ = [
    "Volume",
    "VolumeTooLargeError",
    "GridSpec",
    "plan_grid",
    "as_scale_matrix",
    "estimate_memory_bytes",
    "reconstruct_volume",
    "fill_holes_",
]

_METHODS = ("nearest", "trilinear")
_COMPOUNDS = ("mean", "max")
_FRAMES = ("first", "obb")


class VolumeTooLargeError(MemoryError):
    """The requested grid would exceed the memory or voxel limit.

    Attributes:
        what: the grid and why it is refused (size, spacing, estimated GB, the limit exceeded).
        suggested_spacing: the smallest isotropic spacing in mm whose grid fits the limits.
    The message (``str(exc)``) adds the fix in Python terms (``spacing_mm=``, ``memory_limit_gb=``,
    ``frame="obb"``); the CLI rephrases it with its flags.
    """

    def __init__(self, what: str, suggested_spacing: float) -> None:
        self.what = what
        self.suggested_spacing = suggested_spacing
        super().__init__(
            f"{what}; use spacing_mm >= {suggested_spacing:.2f} (or raise memory_limit_gb, or use "
            'frame="obb" for a tighter box)'
        )


@dataclass
class Volume:
    """A scalar volume on a regular grid in reference (frame-0 image) mm.

    Attributes:
        data: ``(D, H, W)`` float32 or uint8, indexed ``data[k, j, i]``.
        spacing: ``(3,)`` voxel size in mm along ``(i, j, k)``.
        origin: ``(3,)`` centre of voxel ``(0, 0, 0)`` in reference mm.
        direction: ``(3, 3)`` orthonormal; column ``a`` is the unit vector of index axis ``a``
            (``i, j, k``) in reference mm.
        weight: ``(D, H, W)`` float32 accumulated splat weight per voxel before hole filling
            (pixel count for ``nearest``; sum of trilinear weights); 0 = no pixel landed there.
            ``None`` for volumes read from files.
    """

    data: np.ndarray
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray
    weight: np.ndarray | None = None

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        """Grid size ``(ni, nj, nk)`` (the reverse of ``data.shape``)."""
        d, h, w = self.data.shape
        return (w, h, d)

    @property
    def affine(self) -> np.ndarray:
        """``(4, 4)`` map from homogeneous voxel index ``(i, j, k, 1)`` to reference mm."""
        out = np.eye(4)
        out[:3, :3] = np.asarray(self.direction, float) * np.asarray(self.spacing, float)[None, :]
        out[:3, 3] = self.origin
        return out

    def index_to_reference(self, ijk: np.ndarray) -> np.ndarray:
        """Voxel indices ``(P, 3)`` in ``(i, j, k)`` order -> reference mm ``(P, 3)``."""
        return transform_points(self.affine, np.asarray(ijk, float))

    def reference_to_index(self, points: np.ndarray) -> np.ndarray:
        """Reference mm ``(P, 3)`` -> continuous voxel indices ``(P, 3)`` in ``(i, j, k)`` order."""
        return transform_points(np.linalg.inv(self.affine), np.asarray(points, float))


@dataclass(frozen=True)
class GridSpec:
    """Geometry of a planned grid (see :func:`plan_grid`): ``size`` is ``(ni, nj, nk)``."""

    size: tuple[int, int, int]
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray

    @property
    def num_voxels(self) -> int:
        return int(np.prod(self.size, dtype=np.int64))

    @property
    def reference_to_index(self) -> np.ndarray:
        """``(4, 4)`` map from reference mm to continuous voxel index ``(i, j, k)``."""
        out = np.eye(4)
        rot = self.direction.T / self.spacing[:, None]
        out[:3, :3] = rot
        out[:3, 3] = -rot @ self.origin
        return out


def as_scale_matrix(scale: Any) -> np.ndarray:
    """``(4, 4)`` pixel -> mm matrix ``S`` from ``S`` itself or a spacing ``(sx, sy)`` (mm/pixel)."""
    s = np.asarray(scale, dtype=np.float64)
    if s.shape == (4, 4):
        return s
    if s.shape == (2,):
        if np.any(s <= 0):
            raise ValueError(f"pixel spacing must be positive, got {s.tolist()}")
        return np.diag([s[0], s[1], 1.0, 1.0])
    raise ValueError(f"scale must be a (4, 4) pixel->mm matrix or a spacing (sx, sy), got shape {s.shape}")


def _spacing3(spacing_mm: float | Sequence[float]) -> np.ndarray:
    s = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,)).copy()
    if np.any(~np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
    return s


def _obb_axes(points: np.ndarray) -> np.ndarray:
    """PCA axes of ``points (P, 3)``, permuted and signed to be closest to the identity."""
    centred = points - points.mean(0)
    _, vecs = np.linalg.eigh(centred.T @ centred)
    best, best_score = None, -1.0
    for perm in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        cand = vecs[:, perm]
        score = float(np.abs(np.diag(cand)).sum())
        if score > best_score:
            best, best_score = cand, score
    axes = best * np.where(np.diag(best) < 0, -1.0, 1.0)[None, :]
    if np.linalg.det(axes) < 0:
        weakest = int(np.argmin(np.abs(np.diag(axes))))
        axes[:, weakest] *= -1
    return axes


def plan_grid(
    poses: np.ndarray,
    shape: tuple[int, int],
    scale: Any,
    spacing_mm: float | Sequence[float] = 0.5,
    frame: str = "first",
) -> GridSpec:
    """Grid that contains every pixel centre of every frame.

    Args:
        poses: ``(N, 4, 4)`` global poses ``T_{0<-i}`` in corner-origin image mm.
        shape: frame shape ``(H, W)``.
        scale: ``(4, 4)`` pixel -> mm matrix ``S`` or spacing ``(sx, sy)`` mm/pixel.
        spacing_mm: voxel size in mm (scalar or ``(3,)`` along ``i, j, k``).
        frame: ``"first"`` (axes of frame 0) or ``"obb"`` (PCA-oriented tight box).

    Returns:
        The :class:`GridSpec`; voxel ``(0, 0, 0)`` is centred on the box's minimum corner.
    """
    if frame not in _FRAMES:
        raise ValueError(f"frame must be one of {_FRAMES}, got {frame!r}")
    s_mat = as_scale_matrix(scale)
    spacing = _spacing3(spacing_mm)
    corners = image_points(shape, s_mat, "corners")  # (4, 3) pixel centres of the corner pixels
    g = np.asarray(poses, dtype=np.float64)
    pts = transform_points(g, corners).reshape(-1, 3)
    direction = np.eye(3) if frame == "first" else _obb_axes(pts)
    local = pts @ direction
    lo, hi = local.min(0), local.max(0)
    size = np.ceil((hi - lo) / spacing - 1e-9).astype(np.int64) + 1
    origin = direction @ lo
    return GridSpec(tuple(int(x) for x in size), spacing, origin, direction)


def estimate_memory_bytes(num_voxels: int, fill_holes: bool = True, out_dtype: str = "float32") -> int:
    """Peak bytes of the accumulators and post-processing for a grid of ``num_voxels``.

    Counts the float32 sum (or running max) and weight accumulators, the known-voxel mask and a
    normalisation temporary (13 bytes per voxel) and, with hole filling, its masks and box-sum
    temporaries (23 more); per-chunk pixel buffers are bounded by ``chunk_frames`` and not
    included. Measured on a 21 Mvox grid: 35 bytes per voxel with hole filling
    (``benchmarks/bench_compounding.py``).
    """
    per_voxel = 13 + (23 if fill_holes else 0) + (1 if out_dtype == "uint8" else 0)
    return int(num_voxels) * per_voxel


def _frames_chunk(frames: Any, start: int, stop: int, device: torch.device) -> torch.Tensor:
    if isinstance(frames, torch.Tensor):
        chunk = frames[start:stop]
    else:
        chunk = torch.from_numpy(np.ascontiguousarray(np.asarray(frames[start:stop])))
    return chunk.to(device, non_blocking=True)


def _box_sum(x: torch.Tensor) -> torch.Tensor:
    """3x3x3 box sum with zero padding, as three separable 1-D passes of shifted adds."""
    for dim in range(3):
        n = x.shape[dim]
        out = x.clone()
        out.narrow(dim, 1, n - 1).add_(x.narrow(dim, 0, n - 1))
        out.narrow(dim, 0, n - 1).add_(x.narrow(dim, 1, n - 1))
        x = out
    return x


def _shift_or(mask: torch.Tensor, step: int, dim: int, forward: bool) -> torch.Tensor:
    """``mask | mask`` shifted by ``step`` voxels along ``dim`` (zero fill)."""
    n = mask.shape[dim]
    out = mask.clone()
    if step < n:
        if forward:  # out[x] |= mask[x + step]
            out.narrow(dim, 0, n - step).logical_or_(mask.narrow(dim, step, n - step))
        else:  # out[x] |= mask[x - step]
            out.narrow(dim, step, n - step).logical_or_(mask.narrow(dim, 0, n - step))
    return out


def _reach(known: torch.Tensor, dist: int, dim: int, forward: bool) -> torch.Tensor:
    """Whether a known voxel lies within ``1..dist`` voxels along ``dim`` (one direction).

    Built by doubling: after shifting by 1, 1, 2, 4, ... the mask covers offsets ``1..2^k``;
    a last shift completes ``1..dist``.
    """
    n = known.shape[dim]
    first = torch.zeros_like(known)
    if forward:
        first.narrow(dim, 0, n - 1).copy_(known.narrow(dim, 1, n - 1))
    else:
        first.narrow(dim, 1, n - 1).copy_(known.narrow(dim, 0, n - 1))
    covered, out = 1, first
    while 2 * covered <= dist:
        out = _shift_or(out, covered, dim, forward)
        covered *= 2
    if covered < dist:
        out = _shift_or(out, dist - covered, dim, forward)
    return out


def fill_holes_(data: torch.Tensor, known: torch.Tensor, max_distance: int) -> int:
    """Fill empty voxels enclosed by data, in place, by iterated 3x3x3 neighbourhood means.

    A voxel is a candidate when it is empty and, along at least one grid axis, known voxels lie
    within ``2 * max_distance`` voxels on *both* sides (a gap between frames, not the outside of
    the sweep). Candidates are filled layer by layer from the gap's border inward, each with the
    mean of its already known neighbours, for at most ``max_distance`` iterations: gaps up to
    ``2 * max_distance`` voxels wide close completely, and no filled voxel is farther than
    ``max_distance`` voxels from measured data.

    Args:
        data: ``(D, H, W)`` float32 volume; values of unknown voxels are ignored.
        known: ``(D, H, W)`` bool, voxels that hold data.
        max_distance: bound in voxels (>= 1).

    Returns:
        The number of voxels filled.
    """
    if max_distance < 1:
        return 0
    enclosed = torch.zeros_like(known)
    for dim in range(3):
        reach = 2 * max_distance
        enclosed |= _reach(known, reach, dim, True) & _reach(known, reach, dim, False)
    todo = enclosed & ~known
    del enclosed
    known_f = known.to(data.dtype)
    filled = 0
    data.mul_(known_f)
    for _ in range(max_distance):
        if not bool(todo.any()):
            break
        den = _box_sum(known_f)
        new = todo & (den > 0)
        if not bool(new.any()):
            break
        num = _box_sum(data)
        num.div_(den.clamp_(min=1.0))  # den is a neighbour count: >= 1 wherever it matters
        torch.where(new, num, data, out=data)
        known_f.masked_fill_(new, 1.0)
        todo &= ~new
        filled += int(new.sum())
        del den, num, new
    return filled


def _accumulate(
    acc: torch.Tensor, wsum: torch.Tensor, lin: torch.Tensor, vals: torch.Tensor,
    wts: torch.Tensor | None, compound: str,
) -> None:
    if compound == "mean":
        acc.index_add_(0, lin, vals if wts is None else vals * wts)
    else:
        src = vals if wts is None else torch.where(wts > 0, vals, 0.0)
        # int64: the documented index type of scatter ops on every backend
        acc.scatter_reduce_(0, lin.long(), src, reduce="amax", include_self=True)
    wsum.index_add_(0, lin, torch.ones_like(vals) if wts is None else wts)


def _splat_nearest(
    coords: torch.Tensor, vals: torch.Tensor, size: tuple[int, int, int], acc: torch.Tensor,
    wsum: torch.Tensor, compound: str, index_dtype: torch.dtype,
) -> None:
    """Nearest-voxel splat of ``vals (c, P)`` at ``coords (c, 3, P)`` into flat accumulators."""
    ni, nj, _ = size
    for axis, n_ax in enumerate(size):
        coords[:, axis].clamp_(0, n_ax - 1)
    idx = coords.add_(0.5).to(index_dtype)  # floor(x + 0.5) = round half up, x >= 0
    lin = idx[:, 2] * (ni * nj)
    lin.add_(idx[:, 1], alpha=ni).add_(idx[:, 0])
    _accumulate(acc, wsum, lin.reshape(-1), vals.reshape(-1), None, compound)


def _splat_trilinear(
    coords: torch.Tensor, vals: torch.Tensor, size: tuple[int, int, int], acc: torch.Tensor,
    wsum: torch.Tensor, compound: str, index_dtype: torch.dtype,
) -> None:
    """Trilinear splat of ``vals (c, P)`` at ``coords (c, 3, P)`` into the 8 surrounding voxels."""
    ni, nj, _ = size
    steps = (1, ni, ni * nj)
    lins, weights = [], []
    for axis, n_ax in enumerate(size):
        x = coords[:, axis].clamp_(0, n_ax - 1)
        lo = x.to(index_dtype)
        frac = x - lo
        hi = (lo + 1).clamp_(max=n_ax - 1)
        lins.append((lo * steps[axis], hi * steps[axis]))
        weights.append((1.0 - frac, frac))
    flat_vals = vals.reshape(-1)
    for corner in range(8):
        bx, by, bz = corner & 1, (corner >> 1) & 1, (corner >> 2) & 1
        lin = lins[0][bx] + lins[1][by] + lins[2][bz]
        wts = weights[0][bx] * weights[1][by] * weights[2][bz]
        _accumulate(acc, wsum, lin.reshape(-1), flat_vals, wts.reshape(-1), compound)


def reconstruct_volume(
    frames: Any,
    poses: Any,
    scale: Any,
    *,
    spacing_mm: float | Sequence[float] = 0.5,
    method: str = "nearest",
    compound: str = "mean",
    fill_holes: bool = True,
    fill_max_distance_mm: float = 2.0,
    mask: np.ndarray | None = None,
    pixel_step: int = 1,
    frame: str = "first",
    device: str | torch.device = "cpu",
    chunk_frames: int | None = None,
    max_voxels: int | None = None,
    memory_limit_gb: float | None = 4.0,
    out_dtype: str = "float32",
    progress: bool = False,
) -> Volume:
    """Compound a tracked sweep into a voxel volume (see the module docstring for conventions).

    Args:
        frames: ``(N, H, W)`` uint8, a numpy array, torch tensor or lazy array supporting
            ``len``, ``frames[a:b]`` slicing and ``np.asarray`` (e.g. ``Sweep.frames``).
        poses: ``(N, 4, 4)`` global poses ``T_{0<-i}`` (frame ``i`` image mm -> frame 0 image mm,
            corner origin).
        scale: ``(4, 4)`` pixel -> mm matrix ``S`` or spacing ``(sx, sy)`` in mm/pixel.
        spacing_mm: voxel size in mm (scalar or ``(3,)``).
        method: ``"nearest"`` (each pixel into its nearest voxel; exact ties round up) or
            ``"trilinear"`` (into the 8 surrounding voxels with trilinear weights).
        compound: ``"mean"`` (weighted mean of all contributions) or ``"max"`` (maximum of the
            pixels that touch a voxel; with ``trilinear``, every pixel within one voxel).
        fill_holes: fill empty voxels enclosed by data (see :func:`fill_holes_`).
        fill_max_distance_mm: distance bound of hole filling in mm.
        mask: optional ``(H, W)`` bool, True for pixels to use (e.g. the fan of a convex probe).
        pixel_step: use every ``pixel_step``-th row and column (speed over detail).
        frame: grid orientation, ``"first"`` or ``"obb"``.
        device: torch device for accumulation (``"cpu"``, ``"cuda"``, ...).
        chunk_frames: frames per chunk; default about 0.5 M pixels per chunk on the CPU (cache
            friendly) and 4 M on a GPU. The result does not depend on it.
        max_voxels: refuse grids with more voxels than this.
        memory_limit_gb: refuse grids whose estimated peak memory exceeds this many GB
            (``None`` = no limit).
        out_dtype: ``"float32"`` or ``"uint8"`` (rounded and clipped to 0..255).
        progress: show a progress bar.

    Returns:
        A :class:`Volume` in reference mm; voxels that no pixel reached (and that hole filling
        did not fill) are 0.

    Raises:
        ValueError: inconsistent shapes or bad options.
        VolumeTooLargeError: the grid exceeds ``max_voxels`` or ``memory_limit_gb``; the message
            gives the grid size, the estimate and the spacing that would fit.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if compound not in _COMPOUNDS:
        raise ValueError(f"compound must be one of {_COMPOUNDS}, got {compound!r}")
    if out_dtype not in ("float32", "uint8"):
        raise ValueError(f"out_dtype must be 'float32' or 'uint8', got {out_dtype!r}")
    if pixel_step < 1:
        raise ValueError(f"pixel_step must be >= 1, got {pixel_step}")
    fshape = tuple(getattr(frames, "shape", ()))
    if not fshape and hasattr(frames, "__len__"):
        fshape = (len(frames), *np.asarray(frames[0:1]).shape[1:])
    if len(fshape) != 3:
        raise ValueError(f"frames must have shape (N, H, W), got {fshape}")
    n, h, w = (int(x) for x in fshape)
    g = np.asarray(poses.cpu() if isinstance(poses, torch.Tensor) else poses, dtype=np.float64)
    if g.shape != (n, 4, 4):
        raise ValueError(f"poses must have shape ({n}, 4, 4) to match {n} frames, got {g.shape}")
    if not np.all(np.isfinite(g)):
        raise ValueError("poses contain NaN or infinite values")
    if n == 0:
        raise ValueError("the sweep has no frames")
    s_mat = as_scale_matrix(scale)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (h, w):
            raise ValueError(f"mask must have the frame shape {(h, w)}, got {mask.shape}")

    limits = (max_voxels, memory_limit_gb, fill_holes, out_dtype)
    grid = _check_size(g, (h, w), s_mat, spacing_mm, frame, limits)
    nvox = grid.num_voxels
    est = estimate_memory_bytes(nvox, fill_holes, out_dtype)
    log.info(
        "compounding %d frames %dx%d into %s voxels of %s mm (%.1f Mvox, ~%.2f GB)",
        n, h, w, "x".join(map(str, grid.size)), "/".join(f"{x:g}" for x in grid.spacing),
        nvox / 1e6, est / 1e9,
    )

    dev = _device(device)
    ni, nj, nk = grid.size
    # pixel list (1-based u, v) after mask and subsampling
    vv, uu = np.meshgrid(np.arange(1, h + 1, pixel_step), np.arange(1, w + 1, pixel_step), indexing="ij")
    sel = np.ones(vv.shape, bool) if mask is None else mask[::pixel_step, ::pixel_step]
    flat_idx = torch.from_numpy(((vv - 1) * w + (uu - 1))[sel].astype(np.int64)).to(dev)
    uv1 = torch.from_numpy(np.stack([uu[sel], vv[sel], np.ones(int(sel.sum()))]).astype(np.float32)).to(dev)
    npix = uv1.shape[1]
    if npix == 0:
        raise ValueError("the mask selects no pixels")
    use_all = mask is None and pixel_step == 1

    # per-frame 3x3 maps from (u, v, 1) to continuous voxel index (i, j, k)
    full = grid.reference_to_index[None] @ g @ s_mat[None]
    maps = torch.from_numpy(full[:, :3][:, :, [0, 1, 3]].astype(np.float32)).to(dev)

    acc = torch.zeros(nvox, dtype=torch.float32, device=dev)
    wsum = torch.zeros(nvox, dtype=torch.float32, device=dev)
    if chunk_frames is None:
        # small chunks stay in the CPU cache; GPUs want large launches
        chunk_frames = max(1, (1 << (22 if dev.type == "cuda" else 19)) // npix)
    splat = _splat_nearest if method == "nearest" else _splat_trilinear
    index_dtype = torch.int32 if nvox < 2**31 else torch.int64

    for a in progress_bar(range(0, n, chunk_frames), desc="compounding", unit="chunk", enabled=progress):
        b = min(n, a + chunk_frames)
        vals = _frames_chunk(frames, a, b, dev).reshape(b - a, -1)
        if not use_all:
            vals = vals[:, flat_idx]
        coords = maps[a:b] @ uv1  # (c, 3, P) continuous voxel indices (i, j, k)
        splat(coords, vals.to(torch.float32), grid.size, acc, wsum, compound, index_dtype)

    known = wsum > 0
    if compound == "mean":
        acc.div_(torch.where(known, wsum, 1.0))
    data = acc.reshape(nk, nj, ni)
    known = known.reshape(nk, nj, ni)
    if fill_holes:
        dist = max(1, int(round(fill_max_distance_mm / float(grid.spacing.min()))))
        filled = fill_holes_(data, known, dist)
        log.info("hole filling: %d voxels filled (max distance %d voxels)", filled, dist)
    del known
    if out_dtype == "uint8":
        data = data.round_().clamp_(0, 255).to(torch.uint8)
    return Volume(
        data=data.cpu().numpy(),
        spacing=grid.spacing.copy(),
        origin=grid.origin.copy(),
        direction=grid.direction.copy(),
        weight=wsum.reshape(nk, nj, ni).cpu().numpy(),
    )


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"invalid torch device {device!r} (e.g. 'cpu', 'cuda', 'cuda:1')") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


def _check_size(
    poses: np.ndarray,
    shape: tuple[int, int],
    s_mat: np.ndarray,
    spacing_mm: float | Sequence[float],
    frame: str,
    limits: tuple[int | None, float | None, bool, str],
) -> GridSpec:
    """Plan the grid; raise :class:`VolumeTooLargeError` with a spacing that fits if it is too big."""
    max_voxels, memory_limit_gb, fill_holes, out_dtype = limits
    available = available_memory_bytes()

    def over(g: GridSpec) -> list[str]:
        reasons = []
        if max_voxels is not None and g.num_voxels > max_voxels:
            reasons.append(f"more than max_voxels={max_voxels}")
        est = estimate_memory_bytes(g.num_voxels, fill_holes, out_dtype)
        if memory_limit_gb is not None and est > memory_limit_gb * 1e9:
            reasons.append(f"more than the memory limit of {memory_limit_gb:g} GB")
        elif est > 0.9 * available:  # a limit set above the machine's memory still stops here
            reasons.append(f"more than the {available / 1e9:.3g} GB of memory this machine has available")
        return reasons

    grid = plan_grid(poses, shape, s_mat, spacing_mm, frame)
    reasons = over(grid)
    if not reasons:
        return grid
    # smallest spacing (in 0.01 mm steps, isotropic) whose grid fits, starting from the s^-3 guess
    s0 = float(grid.spacing.max())
    est = estimate_memory_bytes(grid.num_voxels, fill_holes, out_dtype)
    ratio = max(
        grid.num_voxels / max_voxels if max_voxels else 1.0,
        est / (memory_limit_gb * 1e9) if memory_limit_gb else 1.0,
    )
    suggest = math.ceil(100 * s0 * ratio ** (1.0 / 3.0)) / 100
    while over(plan_grid(poses, shape, s_mat, suggest, frame)):
        suggest = math.ceil(100 * suggest * 1.02 + 1) / 100
    raise VolumeTooLargeError(
        f"volume of {'x'.join(map(str, grid.size))} voxels ({grid.num_voxels / 1e6:.3g} Mvox) at spacing "
        f"{s0:g} mm needs about {est / 1e9:.3g} GB, {' and '.join(reasons)}",
        suggest,
    )
