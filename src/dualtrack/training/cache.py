"""Decoded frames cached at model resolution in one memory-mapped ``.npy`` file per scan.

Reading a training clip from the TUS-REC ``.h5`` files means opening a file, decoding and
resizing on every step; with many workers and GPUs this starves the GPU. The cache decodes each
scan once, resizes it to the resolution the model consumes (``(h, w)``, bilinear with
anti-aliasing) and stores it as ``uint8 (N, h, w)`` in ``<cache_dir>/<key>.npy``. Workers
memory-map the files (the OS page cache shares them between processes), so a training step only
copies the frames it uses.

At native resolution, an uncompressed HDF5 frame dataset stored contiguously or one frame per
chunk (as :func:`dualtrack.data.write_scan` and the simulator write it) is memory-mapped in place
(no copy is made); other layouts and compressed files are decoded into the cache like resized
ones.

The key hashes the dataset folder (absolute path), the subject, the scan name, the frame count,
the resolution and the scan file's size and modification time, so a cache directory can be shared
by several datasets and resolutions, and a scan whose frames were rewritten (even with the same
frame count) is decoded again instead of served stale. Files are written atomically; delete the
folder to reclaim the space of outdated entries.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import h5py
import numpy as np

from dualtrack.data import LazyFrames, Sweep
from dualtrack.data.sweep import resize_frames
from dualtrack.utils import atomic_write

__all__ = ["FrameCache", "ChunkedFrames", "direct_map", "source_stamp"]

log = logging.getLogger(__name__)

_CHUNK = 64


class ChunkedFrames:
    """Read-only view of an uncompressed HDF5 frame dataset (contiguous or one frame per chunk).

    Frames are read straight from a memory map of the file at each chunk's byte offset: no HDF5
    call per step and no copy of the dataset on disk. Supports ``len``, ``.shape``, slices and
    integer index arrays like an ``(N, H, W)`` array.

    Args:
        path: the ``.h5`` file. offsets: ``(N,)`` byte offset of each frame in the file.
        shape: ``(N, H, W)``.
    """

    def __init__(self, path: str, offsets: np.ndarray, shape: tuple[int, int, int]) -> None:
        self.path = path
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.shape = tuple(shape)
        self._mm: np.memmap | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        idx = np.arange(self.shape[0])[key]
        size = self.shape[1] * self.shape[2]
        out = np.empty((len(idx), *self.shape[1:]), dtype=np.uint8)
        for k, i in enumerate(idx):
            off = self.offsets[i]
            out[k] = self._mm[off : off + size].reshape(self.shape[1:])
        return out

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_mm": None}


def direct_map(frames: object) -> ChunkedFrames | None:
    """A zero-copy :class:`ChunkedFrames` view of ``frames`` when it is an uncompressed uint8 HDF5
    dataset stored contiguously or one frame per chunk, else ``None``."""
    if not isinstance(frames, LazyFrames):
        return None
    with h5py.File(frames.path, "r") as f:
        ds = f[frames.dataset]
        if ds.compression is not None or ds._filters or ds.dtype != np.uint8 or ds.ndim != 3:
            return None
        shape = tuple(int(x) for x in ds.shape)
        if ds.chunks is None:
            offset = ds.id.get_offset()
            if offset is None:
                return None
            return ChunkedFrames(str(frames.path), offset + np.arange(shape[0]) * shape[1] * shape[2], shape)
        if tuple(ds.chunks) != (1, *shape[1:]) or ds.id.get_num_chunks() != shape[0]:
            return None
        offsets = np.empty(shape[0], dtype=np.int64)
        for k in range(shape[0]):
            info = ds.id.get_chunk_info(k)
            if info.size != shape[1] * shape[2] or info.filter_mask:
                return None
            offsets[info.chunk_offset[0]] = info.byte_offset
        return ChunkedFrames(str(frames.path), offsets, shape)


def source_stamp(sweep: Sweep) -> str:
    """``"<bytes>-<mtime ns>"`` of the file a sweep's frames are read from (``""`` for in-memory
    frames): part of the cache key, so rewriting a scan invalidates its cached frames."""
    frames = sweep.frames
    if not isinstance(frames, LazyFrames):
        return ""
    st = os.stat(frames.path)
    return f"{st.st_size}-{st.st_mtime_ns}"


class FrameCache:
    """Per-scan memory-mapped frame arrays at a fixed resolution.

    Args:
        cache_dir: folder of the ``.npy`` files (created on demand).
        dataset_root: the dataset folder the sweeps come from (part of the key).
    """

    def __init__(self, cache_dir: str | os.PathLike, dataset_root: str | os.PathLike) -> None:
        self.cache_dir = Path(cache_dir)
        self.dataset_root = str(Path(dataset_root).resolve())
        self._open: dict[Path, np.ndarray] = {}
        self._direct: dict[Path, ChunkedFrames] = {}
        self._built: dict[tuple[str, str, int, tuple[int, int]], Path] = {}

    def path(
        self, subject: str, name: str, num_frames: int, size: tuple[int, int], stamp: str
    ) -> Path:
        """File of one scan at resolution ``size = (h, w)``; ``stamp`` identifies the source file's
        content (see :func:`source_stamp`)."""
        key = f"{self.dataset_root}|{subject}|{name}|{num_frames}|{size[0]}x{size[1]}|{stamp}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        return self.cache_dir / f"{subject}_{name}_{size[0]}x{size[1]}_{digest}.npy"

    def build(self, sweep: Sweep, size: tuple[int, int]) -> Path:
        """Decode and resize ``sweep`` into the cache unless present; returns the file."""
        path = self.path(sweep.subject, sweep.name, sweep.num_frames, size, source_stamp(sweep))
        self._built[(sweep.subject, sweep.name, sweep.num_frames, tuple(size))] = path
        if path.is_file() or path in self._direct:
            return path
        if tuple(size) == sweep.shape:
            direct = direct_map(sweep.frames)
            if direct is not None:
                self._direct[path] = direct
                return path
        n = sweep.num_frames
        with atomic_write(path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, *size))
            for a in range(0, n, _CHUNK):
                out[a : a + _CHUNK] = resize_frames(sweep.frames[a : min(a + _CHUNK, n)], size)
            out.flush()
            del out
        log.debug("cached %s at %dx%d -> %s", sweep.key, size[0], size[1], path)
        return path

    def frames(
        self, subject: str, name: str, num_frames: int, size: tuple[int, int]
    ) -> np.ndarray | ChunkedFrames:
        """Read-only memory map ``(N, h, w)`` uint8 of a cached scan (opened once per process).

        Raises:
            FileNotFoundError: the scan was not cached (call :meth:`build` first).
        """
        path = self._built.get((subject, name, num_frames, tuple(size)))
        if path is None:
            raise FileNotFoundError(
                f"frame cache of {subject}/{name} at {size} was not built; build the cache first"
            )
        arr = self._direct.get(path)
        if arr is None:
            arr = self._open.get(path)
        if arr is None:
            if not path.is_file():
                raise FileNotFoundError(f"frame cache {path} is missing; build the cache first")
            arr = np.load(path, mmap_mode="r")
            self._open[path] = arr
        return arr

    def __getstate__(self) -> dict:
        # Memory maps are reopened in each worker process.
        state = dict(self.__dict__)
        state["_open"] = {}
        return state
