"""One freehand ultrasound sweep: frames, tracker transforms, calibration and landmarks.

Frames of a sweep on disk are wrapped by :class:`LazyFrames`, which opens the HDF5 file on each
access and keeps no open handle, so a :class:`Sweep` is cheap to create, safe to pickle into
DataLoader workers and never holds a whole 226 GB dataset in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from dualtrack import geometry
from dualtrack.data.calibration import TUSREC2024_CALIBRATION, Calibration
from dualtrack.utils import available_memory_bytes

__all__ = ["LazyFrames", "Sweep", "open_h5", "read_tforms", "resize_frames"]


def open_h5(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 file read-only with a clear error naming the file.

    Raises:
        FileNotFoundError: the file does not exist.
        OSError: the file exists but is not a readable HDF5 file (e.g. truncated by a killed copy).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HDF5 file not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise OSError(f"{path}: cannot open as HDF5 (truncated or corrupt file?): {exc}") from None


def read_tforms(f: h5py.File) -> np.ndarray | None:
    """The ``tforms`` dataset of an open scan file, ``None`` when it has none.

    Raises:
        ValueError: not ``(N, 4, 4)``, or NaN / infinite values (the message names the file and
            the first bad frame).
    """
    if "tforms" not in f:
        return None
    ds = f["tforms"]
    need = int(np.prod(ds.shape)) * ds.dtype.itemsize
    if need > 0.5 * available_memory_bytes():
        raise MemoryError(
            f"{f.filename}: 'tforms' claims shape {ds.shape} ({need / 1e9:.3g} GB); the file's header is "
            "damaged (dualtrack verify-data checks it)"
        )
    tforms = ds[()]
    if tforms.ndim != 3 or tforms.shape[1:] != (4, 4):
        raise ValueError(f"{f.filename}: 'tforms' must be (N, 4, 4), got {tforms.shape}")
    bad = np.flatnonzero(~np.isfinite(tforms).all(axis=(1, 2)))
    if bad.size:
        raise ValueError(
            f"{f.filename}: 'tforms' of frame(s) {bad[:5].tolist()} contain NaN or infinite values "
            f"({bad.size} of {len(tforms)} frames)"
        )
    return tforms


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 frames ``(N, H, W)`` to ``(N, h, w)`` (bilinear, anti-aliased, uint8).

    The resize maps the image extent onto itself (``align_corners=False``), so the image centre
    stays the image centre and centre-origin image-mm coordinates are unchanged; only the pixel
    spacing changes to ``(sx W / w, sy H / h)``.
    """
    frames = np.asarray(frames)
    if tuple(frames.shape[1:]) == tuple(size):
        return frames.astype(np.uint8, copy=False)
    x = torch.from_numpy(np.ascontiguousarray(frames)).float()[:, None]
    y = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return y[:, 0].round_().clamp_(0, 255).to(torch.uint8).numpy()


class LazyFrames:
    """Array-like view of an ``(N, H, W)`` frame dataset inside an HDF5 file.

    The file is opened on every access and closed right after; no handle is kept, so the object
    pickles as just ``(path, dataset, shape, dtype)``. Supports ``len``, ``.shape``, ``.dtype``,
    ``.ndim``, integer and slice indexing (``frames[3]``, ``frames[a:b]``, ``frames[a:b, y0:y1]``),
    integer lists/arrays (``frames[[0, 5, 9]]``, any order, repeats allowed) and ``np.asarray``.

    Args:
        path: the ``.h5`` file.
        dataset: name of the dataset inside the file (``"frames"`` for TUS-REC).
        shape, dtype: known shape and dtype (skips opening the file to read them).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        dataset: str = "frames",
        shape: tuple[int, ...] | None = None,
        dtype: np.dtype | str | None = None,
    ) -> None:
        self.path = Path(path)
        self.dataset = dataset
        self._shape = tuple(int(s) for s in shape) if shape is not None else None
        self._dtype = np.dtype(dtype) if dtype is not None else None

    def _open_dataset(self, f: h5py.File) -> h5py.Dataset:
        if self.dataset not in f:
            raise KeyError(f"{self.path}: no dataset {self.dataset!r} (found {sorted(f.keys())})")
        return f[self.dataset]

    def _load_meta(self) -> None:
        with open_h5(self.path) as f:
            ds = self._open_dataset(f)
            self._shape = tuple(int(s) for s in ds.shape)
            self._dtype = ds.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """``(N, H, W)``."""
        if self._shape is None:
            self._load_meta()
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        """Element type (``uint8`` for TUS-REC)."""
        if self._dtype is None:
            self._load_meta()
        return self._dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyFrames({str(self.path)!r}, {self.dataset!r}, shape={self._shape}, dtype={self._dtype})"

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        n = len(self)
        with open_h5(self.path) as f:
            ds = self._open_dataset(f)
            if isinstance(key, (int, np.integer)):
                i = int(key)
                if not -n <= i < n:
                    raise IndexError(f"frame index {i} out of range for {n} frames ({self.path})")
                return ds[(i % n, *rest)]
            if isinstance(key, slice):
                start, stop, step = key.indices(n)
                if step > 0:
                    return ds[(slice(start, stop, step), *rest)]
                key = np.arange(start, stop, step)
            idx = np.asarray(key)
            if idx.dtype == bool:
                idx = np.flatnonzero(idx)
            if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
                raise TypeError(f"unsupported frame index {key!r}: use an int, a slice or a 1-D int array")
            if idx.size and (idx.min() < -n or idx.max() >= n):
                raise IndexError(f"frame indices out of range for {n} frames ({self.path})")
            idx = idx % n if idx.size else idx
            sample = ds[(0, *rest)] if n else np.empty(self.shape[1:], self.dtype)
            out = np.empty((len(idx), *sample.shape), dtype=sample.dtype)
            for k, i in enumerate(idx):
                out[k] = ds[(int(i), *rest)]
            return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        need = int(np.prod(self.shape)) * self.dtype.itemsize
        have = available_memory_bytes()
        if need > 0.8 * have:
            raise MemoryError(
                f"{self.path}: reading all {self.shape[0]} frames {tuple(self.shape[1:])} needs "
                f"{need / 1e9:.3g} GB, more than the {have / 1e9:.3g} GB of memory available; if that frame "
                "count is wrong, the file's header is damaged (dualtrack verify-data checks it)"
            )
        with open_h5(self.path) as f:
            arr = self._open_dataset(f)[()]
        return arr if dtype is None else arr.astype(dtype, copy=False)


@dataclass(eq=False)
class Sweep:
    """One tracked (or untracked) ultrasound sweep.

    Attributes:
        subject: subject id, e.g. ``"000"``.
        name: scan name, e.g. ``"LH_Par_C_DtP"`` or ``"LH_rotation"``.
        frames: ``(N, H, W)`` uint8 B-mode frames; a :class:`LazyFrames` for sweeps on disk or an
            in-memory ``np.ndarray``.
        tforms: ``(N, 4, 4)`` float32 tracker transforms, tool -> camera (``p_cam = T_i p_tool``),
            or ``None`` when the sweep has no ground truth (e.g. the hidden test set).
        calibration: the probe :class:`Calibration` (``S`` pixel -> mm, ``C`` image mm -> tool).
        landmarks: ``(K, 3)`` int ``(frame index 0-based, x 1-based column, y 1-based row)``, or ``None``.
    """

    subject: str
    name: str
    frames: LazyFrames | np.ndarray
    tforms: np.ndarray | None
    calibration: Calibration
    landmarks: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.frames.shape) != 3:
            raise ValueError(
                f"sweep {self.key}: frames must be (N, H, W), got shape {tuple(self.frames.shape)}"
            )
        n = self.frames.shape[0]
        if self.tforms is not None:
            self.tforms = np.asarray(self.tforms)
            if self.tforms.shape != (n, 4, 4):
                raise ValueError(
                    f"sweep {self.key}: tforms must be ({n}, 4, 4) to match {n} frames, "
                    f"got {self.tforms.shape}"
                )
        if self.landmarks is not None:
            self.landmarks = np.asarray(self.landmarks)
            if self.landmarks.ndim != 2 or self.landmarks.shape[1] != 3:
                raise ValueError(f"sweep {self.key}: landmarks must be (K, 3), got {self.landmarks.shape}")

    @classmethod
    def from_arrays(
        cls,
        frames: np.ndarray,
        tforms: np.ndarray | None = None,
        calibration: Calibration | None = None,
        subject: str = "000",
        name: str = "sweep",
        landmarks: np.ndarray | None = None,
    ) -> Sweep:
        """An in-memory sweep.

        Args:
            frames: ``(N, H, W)`` uint8 frames.
            tforms: ``(N, 4, 4)`` tool -> camera transforms, or ``None``.
            calibration: the probe calibration; ``None`` means :data:`TUSREC2024_CALIBRATION`
                (the TUS-REC probe: 480x640 frames, about 0.229 x 0.221 mm per pixel).
            subject, name: identifiers.
            landmarks: optional ``(K, 3)`` int landmarks.
        """
        frames = np.asarray(frames)
        return cls(
            subject=str(subject),
            name=str(name),
            frames=frames,
            tforms=None if tforms is None else np.asarray(tforms),
            calibration=TUSREC2024_CALIBRATION if calibration is None else calibration,
            landmarks=None if landmarks is None else np.asarray(landmarks),
        )

    @property
    def key(self) -> str:
        """TUS-REC dataset key ``"sub<subject>__<name>"``."""
        return f"sub{self.subject}__{self.name}"

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """Frame size ``(H, W)`` in pixels."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def spacing(self) -> tuple[float, float]:
        """``(sx, sy)`` mm per pixel along columns and rows."""
        return self.calibration.spacing

    @property
    def has_tforms(self) -> bool:
        return self.tforms is not None

    def _require_tforms(self) -> np.ndarray:
        if self.tforms is None:
            raise ValueError(
                f"sweep {self.key} has no tracker transforms (tforms): ground-truth poses are not "
                "available (val/test layout without transfs/, or an untracked in-memory sweep)"
            )
        return np.asarray(self.tforms, dtype=np.float64)

    def global_transforms(self) -> np.ndarray:
        """Ground-truth global poses ``G_i = C^-1 T_0^-1 T_i C``.

        Returns:
            ``(N, 4, 4)`` float64, ``G[0] = I``, ``G[i] = T_{0<-i}`` in corner-origin image mm.
        """
        return geometry.global_from_tforms(self._require_tforms(), self.calibration.image_to_tool)

    def local_transforms(self) -> np.ndarray:
        """Ground-truth local poses ``L_i = C^-1 T_{i-1}^-1 T_i C``.

        Returns:
            ``(N-1, 4, 4)`` float64, row ``i-1`` = ``T_{i-1<-i}`` in corner-origin image mm.
        """
        return geometry.local_from_tforms(self._require_tforms(), self.calibration.image_to_tool)

    def __repr__(self) -> str:
        return (
            f"Sweep({self.key}, frames={tuple(self.frames.shape)}, "
            f"tforms={'yes' if self.tforms is not None else 'no'}, "
            f"landmarks={None if self.landmarks is None else self.landmarks.shape[0]})"
        )
