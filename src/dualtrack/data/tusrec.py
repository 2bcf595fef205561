"""Read and write TUS-REC datasets (2024 and 2025, train and val/test layouts).

Layouts (``<root>`` may also be a folder holding ``data/`` with one of them):

* **train**: ``frames_transfs/<sid>/<scan>.h5`` with datasets ``frames`` ``(N, H, W)`` uint8 and
  ``tforms`` ``(N, 4, 4)`` float32; ``landmarks/landmark_<sid>.h5``; ``calib_matrix.csv``.
* **test** (validation and the hidden test set): ``frames/<sid>/<scan>.h5`` (``frames`` only),
  ``transfs/<sid>/<scan>.h5`` (``tforms`` only), ``landmark/`` (2024) or ``landmarks/`` (2025)
  ``landmark_<sid>.h5``, ``calib_matrix.csv`` and ``dataset_keys.h5`` whose top-level keys
  ``"sub<sid>__<scan>"`` list the scans.

``tforms[i]`` maps tracking-tool to camera coordinates (``p_cam = T_i p_tool``). Landmark files
hold one ``(K, 3)`` integer dataset per scan name: ``(frame index 0-based, x 1-based column,
y 1-based row)``. Subject ids are digit strings, at least 3 digits (``"000"``..``"049"``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from dualtrack import geometry
from dualtrack.data.calibration import CALIBRATION_FILENAME, Calibration, read_calibration
from dualtrack.data.sweep import LazyFrames, Sweep, open_h5, read_tforms
from dualtrack.utils import atomic_write

log = logging.getLogger(__name__)

__all__ = [
    "open_scan_file",
    "find_calibration",
    "ScanInfo",
    "parse_scan_name",
    "SCAN_NAMES_2024",
    "SCAN_NAMES_2025",
    "normalise_subject",
    "format_dataset_key",
    "parse_dataset_key",
    "detect_layout",
    "TusRecDataset",
    "write_scan",
    "write_landmarks",
    "write_dataset_keys",
    "LAYOUTS",
    "DATASET_KEYS_FILENAME",
]

LAYOUTS = ("train", "test")
DATASET_KEYS_FILENAME = "dataset_keys.h5"
TRAIN_DIR = "frames_transfs"
FRAMES_DIR = "frames"
TRANSFS_DIR = "transfs"
LANDMARK_DIRS = ("landmarks", "landmark")
WRITE_BLOCK_BYTES = 64 << 20
"""Frames are copied into new files in blocks of about this many bytes."""

_ARMS = {"LH": "left arm", "RH": "right arm"}
_ORIENTATIONS = {"Per": "probe perpendicular to the sweep", "Par": "probe parallel to the sweep"}
_SHAPES = {"L": "straight line", "C": "C-shaped", "S": "S-shaped"}
_DIRECTIONS = {"DtP": "distal to proximal", "PtD": "proximal to distal"}

SCAN_NAMES_2024: tuple[str, ...] = tuple(
    sorted(f"{a}_{o}_{s}_{d}" for a in _ARMS for o in _ORIENTATIONS for s in _SHAPES for d in _DIRECTIONS)
)
"""The 24 TUS-REC 2024 scan names of one subject, sorted alphabetically (the baseline's order)."""

SCAN_NAMES_2025: tuple[str, ...] = ("LH_rotation", "RH_rotation")
"""The 2 TUS-REC 2025 (rotation protocol) scan names of one subject."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class ScanInfo:
    """Parsed TUS-REC scan name.

    Attributes:
        name: the scan name, e.g. ``"LH_Par_C_DtP"``.
        arm: ``"LH"`` or ``"RH"``.
        orientation: ``"Per"`` / ``"Par"`` (probe plane perpendicular / parallel to the sweep
            direction), ``None`` for rotation scans.
        shape: ``"L"`` / ``"C"`` / ``"S"`` (line, C, S trajectory), ``None`` for rotation scans.
        direction: ``"DtP"`` / ``"PtD"`` (distal-to-proximal / proximal-to-distal), ``None`` for
            rotation scans.
        protocol: ``"non-rotation"`` (TUS-REC 2024) or ``"rotation"`` (TUS-REC 2025).
    """

    name: str
    arm: str
    orientation: str | None
    shape: str | None
    direction: str | None
    protocol: str

    @property
    def year(self) -> int:
        """Challenge year whose protocol the scan follows (2024 or 2025)."""
        return 2025 if self.protocol == "rotation" else 2024

    def describe(self) -> str:
        """Human-readable description, e.g. ``"left arm, probe parallel ..., C-shaped, ..."``."""
        if self.protocol == "rotation":
            return f"{_ARMS[self.arm]}, rotation protocol (fan, rock, rotate ~90 deg)"
        return ", ".join(
            (
                _ARMS[self.arm],
                _ORIENTATIONS[self.orientation],
                _SHAPES[self.shape],
                _DIRECTIONS[self.direction],
            )
        )


def parse_scan_name(name: str) -> ScanInfo:
    """Parse a TUS-REC scan name (a trailing ``.h5`` is accepted).

    2024: ``{LH|RH}_{Per|Par}_{L|C|S}_{DtP|PtD}``; 2025: ``{LH|RH}_rotation``.

    Raises:
        ValueError: not a TUS-REC scan name (the message says which part is wrong).
    """
    if not isinstance(name, str):
        raise ValueError(f"scan name must be a string, got {type(name).__name__}")
    stem = name[:-3] if name.endswith(".h5") else name
    parts = stem.split("_")
    expected = "expected {LH|RH}_{Per|Par}_{L|C|S}_{DtP|PtD} (2024) or {LH|RH}_rotation (2025)"
    if parts[0] not in _ARMS:
        raise ValueError(f"bad TUS-REC scan name {name!r}: arm {parts[0]!r} is not LH or RH; {expected}")
    if len(parts) == 2:
        if parts[1] == "rotation":
            return ScanInfo(stem, parts[0], None, None, None, "rotation")
        hint = (
            " ('rotating' is a known typo in one README; files use 'rotation')"
            if parts[1] == "rotating"
            else ""
        )
        raise ValueError(f"bad TUS-REC scan name {name!r}{hint}; {expected}")
    if len(parts) != 4:
        raise ValueError(f"bad TUS-REC scan name {name!r}: {len(parts)} parts separated by '_'; {expected}")
    _, orient, shape, direction = parts
    if orient not in _ORIENTATIONS:
        hint = " ('Ver' is a known typo on some pages; files use 'Per')" if orient == "Ver" else ""
        raise ValueError(f"bad TUS-REC scan name {name!r}: orientation {orient!r} is not Per or Par{hint}")
    if shape not in _SHAPES:
        raise ValueError(f"bad TUS-REC scan name {name!r}: shape {shape!r} is not L, C or S")
    if direction not in _DIRECTIONS:
        raise ValueError(f"bad TUS-REC scan name {name!r}: direction {direction!r} is not DtP or PtD")
    return ScanInfo(stem, parts[0], orient, shape, direction, "non-rotation")


def normalise_subject(subject: str | int) -> str:
    """Subject id as the on-disk folder name: digits, zero-padded to at least 3 (``7 -> "007"``).

    Raises:
        ValueError: not a non-negative integer or digit string.
    """
    if isinstance(subject, (int, np.integer)) and not isinstance(subject, bool):
        if subject < 0:
            raise ValueError(f"subject id must be non-negative, got {subject}")
        return f"{int(subject):03d}"
    if isinstance(subject, str) and subject.isdigit() and subject.isascii():
        return subject.zfill(3)
    raise ValueError(
        f"bad subject id {subject!r}: TUS-REC subject ids are digit strings like '000' or '050' "
        "(the organisers' code reads them with int() and formats them as %03d)"
    )


def _check_scan_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or "__" in name or name.endswith(".h5"):
        raise ValueError(
            f"bad scan name {name!r}: use letters, digits, '_', '-' or '.', no '__', no '.h5' suffix "
            "(TUS-REC names look like 'LH_Par_C_DtP' or 'LH_rotation')"
        )
    return name


def format_dataset_key(subject: str | int, name: str) -> str:
    """``("050", "LH_Par_C_DtP") -> "sub050__LH_Par_C_DtP"`` (the ``dataset_keys.h5`` key)."""
    return f"sub{normalise_subject(subject)}__{_check_scan_name(name)}"


def parse_dataset_key(key: str) -> tuple[str, str]:
    """``"sub050__LH_Par_C_DtP" -> ("050", "LH_Par_C_DtP")``.

    Raises:
        ValueError: the key is not ``sub<digits>__<scan name>``.
    """
    parts = key.split("__") if isinstance(key, str) else []
    if len(parts) != 2 or not parts[0].startswith("sub") or not parts[0][3:].isdigit():
        raise ValueError(
            f"bad dataset key {key!r}: expected 'sub<subject digits>__<scan name>', "
            "e.g. 'sub050__LH_Par_C_DtP'"
        )
    return parts[0][3:], _check_scan_name(parts[1])


def detect_layout(root: str | os.PathLike) -> tuple[Path, str]:
    """Find the dataset layout under ``root``.

    Returns:
        ``(data_root, layout)`` with layout ``"train"`` (``frames_transfs/``) or ``"test"``
        (``frames/``); ``data_root`` is ``root`` or ``root/data`` when the layout sits there.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: neither or both layouts are present.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    for cand in (root, root / "data"):
        train, test = (cand / TRAIN_DIR).is_dir(), (cand / FRAMES_DIR).is_dir()
        if train and test:
            raise ValueError(
                f"{cand}: holds both {TRAIN_DIR}/ (train layout) and {FRAMES_DIR}/ (val/test layout); "
                "keep one layout per folder"
            )
        if train or test:
            return cand, "train" if train else "test"
    raise ValueError(
        f"{root}: not a TUS-REC dataset folder: expected {TRAIN_DIR}/<subject>/<scan>.h5 (train layout) or "
        f"{FRAMES_DIR}/<subject>/<scan>.h5 + {TRANSFS_DIR}/ + {DATASET_KEYS_FILENAME} (val/test layout)"
    )


def _subject_dirs(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def _scan_files(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.h5") if not p.name.startswith("."))


def find_landmark_file(root: str | os.PathLike, subject: str) -> Path | None:
    """``<root>/{landmarks|landmark}/landmark_<subject>.h5`` (first found), ``None`` if absent."""
    for folder in LANDMARK_DIRS:
        path = Path(root) / folder / f"landmark_{subject}.h5"
        if path.is_file():
            return path
    return None


def read_dataset_keys(path: str | os.PathLike) -> list[str]:
    """Top-level keys of a ``dataset_keys.h5`` file, in file order."""
    with open_h5(path) as f:
        return list(f.keys())


class TusRecDataset:
    """A TUS-REC dataset folder (either layout); sweeps are loaded lazily.

    Args:
        root: the dataset folder (or a folder with ``data/`` inside).
        calibration: overrides ``<root>/calib_matrix.csv``.

    Attributes:
        root: the resolved data folder.
        layout: ``"train"`` or ``"test"``.
        scans: sorted list of ``(subject, name)``; in the test layout the keys of
            ``dataset_keys.h5`` when present, otherwise the files under ``frames/``.
    """

    def __init__(self, root: str | os.PathLike, calibration: Calibration | None = None) -> None:
        self.root, self.layout = detect_layout(root)
        self._calibration = calibration
        self.scans: list[tuple[str, str]] = self._list_scans()

    def _list_scans(self) -> list[tuple[str, str]]:
        if self.layout == "test":
            keys_path = self.root / DATASET_KEYS_FILENAME
            if keys_path.is_file():
                return sorted(parse_dataset_key(k) for k in read_dataset_keys(keys_path))
            log.warning("%s: no %s; listing scans from %s/", self.root, DATASET_KEYS_FILENAME, FRAMES_DIR)
        top = self.root / (TRAIN_DIR if self.layout == "train" else FRAMES_DIR)
        return [(sid, name) for sid in _subject_dirs(top) for name in _scan_files(top / sid)]

    def __repr__(self) -> str:
        return (
            f"TusRecDataset({str(self.root)!r}, layout={self.layout!r}, "
            f"subjects={len(self.subjects)}, scans={len(self)})"
        )

    def __len__(self) -> int:
        return len(self.scans)

    @property
    def subjects(self) -> list[str]:
        """Sorted subject ids that have at least one scan."""
        return sorted({sid for sid, _ in self.scans})

    @property
    def calibration(self) -> Calibration:
        """The dataset calibration (read from ``calib_matrix.csv`` on first use)."""
        if self._calibration is None:
            path = self.root / CALIBRATION_FILENAME
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} not found: every TUS-REC dataset needs its calibration file; write one with "
                    "dualtrack.data.write_calibration (TUSREC2024_CALIBRATION holds the published values)"
                )
            self._calibration = read_calibration(path)
        return self._calibration

    def frames_path(self, subject: str, name: str) -> Path:
        """The ``.h5`` file holding the frames of a scan."""
        top = TRAIN_DIR if self.layout == "train" else FRAMES_DIR
        return self.root / top / subject / f"{name}.h5"

    def tforms_path(self, subject: str, name: str) -> Path:
        """The ``.h5`` file holding the tracker transforms of a scan."""
        top = TRAIN_DIR if self.layout == "train" else TRANSFS_DIR
        return self.root / top / subject / f"{name}.h5"

    def landmark_path(self, subject: str) -> Path | None:
        """The subject's landmark file (``landmarks/`` or ``landmark/``), ``None`` if absent."""
        return find_landmark_file(self.root, subject)

    def num_frames(self, subject: str, name: str) -> int:
        """Frame count of a scan (reads only the file header)."""
        return len(LazyFrames(self.frames_path(subject, name), "frames"))

    def load(self, subject: str | int, name: str) -> Sweep:
        """Open one scan as a :class:`Sweep` (frames lazy, tforms and landmarks in memory).

        Raises:
            KeyError: the scan is not part of the dataset.
            FileNotFoundError / OSError: a file is missing or unreadable (named in the message).
        """
        subject = normalise_subject(subject)
        if (subject, name) not in self.scans:
            raise KeyError(f"{self.root}: no scan {name!r} for subject {subject!r}")
        return open_scan_file(self.frames_path(subject, name), self.calibration, subject=subject)

    def sweeps(self, subjects: Iterable[str | int] | None = None) -> Iterator[Sweep]:
        """Iterate over sweeps (of ``subjects`` only, if given) in sorted order."""
        wanted = None if subjects is None else {normalise_subject(s) for s in subjects}
        for sid, name in self.scans:
            if wanted is None or sid in wanted:
                yield self.load(sid, name)

    def __iter__(self) -> Iterator[Sweep]:
        return self.sweeps()


# ----------------------------------------------------------------------------------------- writers


def _check_layout(root: Path, layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'train' or 'test', got {layout!r}")
    other = root / (FRAMES_DIR if layout == "train" else TRAIN_DIR)
    if other.is_dir():
        raise ValueError(
            f"{root}: already holds the other layout ({other.name}/); cannot write layout {layout!r}"
        )


def _validated_tforms(tforms, n: int, where: str) -> np.ndarray:
    arr = np.asarray(tforms)
    if arr.shape != (n, 4, 4):
        raise ValueError(f"{where}: tforms must have shape ({n}, 4, 4) to match {n} frames, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{where}: tforms must be numeric, got dtype {arr.dtype}")
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=(1, 2)))
    if bad.size:
        raise ValueError(f"{where}: tforms contain NaN/Inf at frames {bad[:10].tolist()}")
    nonrigid = np.flatnonzero(~geometry.is_rigid(arr.astype(np.float64)))
    if nonrigid.size:
        raise ValueError(
            f"{where}: tforms are not rigid (orthonormal R, det +1, last row 0 0 0 1) at frames "
            f"{nonrigid[:10].tolist()}{' ...' if nonrigid.size > 10 else ''}"
        )
    return arr.astype(np.float32)


def _write_h5(
    path: Path, frames=None, tforms: np.ndarray | None = None, compression: str | None = None
) -> None:
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        if frames is not None:
            n, h, w = frames.shape
            ds = f.create_dataset(
                "frames", shape=(n, h, w), dtype=np.uint8, chunks=(1, h, w), compression=compression
            )
            block = max(1, WRITE_BLOCK_BYTES // max(1, h * w))
            for a in range(0, n, block):
                ds[a : a + block] = np.asarray(frames[a : a + block])
        if tforms is not None:
            f.create_dataset("tforms", data=tforms, dtype=np.float32)


def write_scan(
    root: str | os.PathLike,
    subject: str | int,
    name: str,
    frames,
    tforms: np.ndarray | None,
    layout: str = "train",
    compression: str | None = None,
) -> list[Path]:
    """Write one scan in a TUS-REC layout (atomically, file by file).

    Args:
        root: dataset folder (created if needed).
        subject: subject id (``"000"`` or ``0``).
        name: scan name (TUS-REC names like ``"LH_Par_C_DtP"``, or your own, without ``__``).
        frames: ``(N, H, W)`` uint8 array-like (``np.ndarray``, ``h5py.Dataset``, :class:`LazyFrames`);
            copied in blocks, so it need not fit in memory.
        tforms: ``(N, 4, 4)`` rigid tool -> camera transforms (mm), stored as float32. Required for
            ``layout="train"``; may be ``None`` for ``"test"`` (no ``transfs/`` file is written).
        layout: ``"train"`` (``frames_transfs/<sid>/<name>.h5`` with both datasets) or ``"test"``
            (``frames/<sid>/<name>.h5`` and ``transfs/<sid>/<name>.h5``).
        compression: ``None`` (default: fastest reads) or ``"lzf"`` / ``"gzip"``.

    Returns:
        The files written.

    Raises:
        ValueError: bad shapes, dtype, non-finite or non-rigid transforms, bad names or layout.
    """
    root = Path(root)
    subject = normalise_subject(subject)
    name = _check_scan_name(name)
    _check_layout(root, layout)
    if compression not in (None, "lzf", "gzip"):
        raise ValueError(f"compression must be None, 'lzf' or 'gzip', got {compression!r}")
    where = f"scan {subject}/{name}"
    shape = tuple(getattr(frames, "shape", ()))
    if len(shape) != 3 or shape[0] < 1:
        raise ValueError(f"{where}: frames must be a non-empty (N, H, W) array, got shape {shape}")
    if np.dtype(frames.dtype) != np.uint8:
        raise ValueError(
            f"{where}: frames must be uint8 grey levels 0..255, got {frames.dtype} "
            "(convert floats in [0, 1] with (np.clip(x, 0, 1) * 255).round().astype(np.uint8))"
        )
    if tforms is None and layout == "train":
        raise ValueError(f"{where}: the train layout needs tforms (tracker transforms)")
    tf = None if tforms is None else _validated_tforms(tforms, shape[0], where)
    if layout == "train":
        path = root / TRAIN_DIR / subject / f"{name}.h5"
        _write_h5(path, frames=frames, tforms=tf, compression=compression)
        return [path]
    paths = [root / FRAMES_DIR / subject / f"{name}.h5"]
    _write_h5(paths[0], frames=frames, compression=compression)
    if tf is not None:
        paths.append(root / TRANSFS_DIR / subject / f"{name}.h5")
        _write_h5(paths[1], tforms=tf)
    return paths


def write_landmarks(
    root: str | os.PathLike,
    subject: str | int,
    mapping: Mapping[str, np.ndarray],
    layout: str = "train",
    folder: str | None = None,
) -> Path:
    """Write a subject's landmark file ``landmark_<sid>.h5`` (atomically, replacing it).

    Args:
        root: dataset folder.
        subject: subject id.
        mapping: ``{scan name: (K, 3) int (frame index 0-based, x 1-based column, y 1-based row)}``.
            Landmarks must not lie on frame 0 (the official metric uses frames 1..N-1).
        layout: ``"train"`` or ``"test"``.
        folder: landmark folder name; default: the folder that already holds this subject's
            file (it is replaced in place, so readers never see a stale second copy), else
            ``"landmarks"`` for the train layout and for TUS-REC 2025 rotation scans,
            ``"landmark"`` for other val/test data (the 2024 name).

    Returns:
        The file written.
    """
    root = Path(root)
    subject = normalise_subject(subject)
    _check_layout(root, layout)
    existing = find_landmark_file(root, subject)
    if folder is None and existing is not None:
        folder = existing.parent.name
    elif folder is None:
        rotation = all(n in SCAN_NAMES_2025 for n in mapping)
        folder = "landmarks" if layout == "train" or (mapping and rotation) else "landmark"
    if folder not in LANDMARK_DIRS:
        raise ValueError(f"landmark folder must be one of {LANDMARK_DIRS}, got {folder!r}")
    arrays = {}
    for name, value in mapping.items():
        _check_scan_name(name)
        arr = np.asarray(value)
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise ValueError(f"landmarks of {subject}/{name}: expected (K, 3), got {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            if not (np.isfinite(arr).all() and np.array_equal(arr, np.round(arr))):
                raise ValueError(f"landmarks of {subject}/{name}: values must be integers (frame, x, y)")
        arrays[name] = arr.astype(np.int64)
        if arr.size and (arrays[name][:, 0] < 1).any():
            raise ValueError(
                f"landmarks of {subject}/{name}: frame index must be >= 1 (frame 0 is the reference)"
            )
    path = root / folder / f"landmark_{subject}.h5"
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        for name, arr in sorted(arrays.items()):
            f.create_dataset(name, data=arr)
    return path


def write_dataset_keys(root: str | os.PathLike, keys: Iterable[str | tuple[str | int, str]]) -> Path:
    """Write ``<root>/dataset_keys.h5`` (atomically): one top-level entry per scan key.

    Args:
        root: dataset folder.
        keys: ``"sub050__LH_Par_C_DtP"`` strings or ``(subject, name)`` pairs.

    Returns:
        The file written. Each key holds a scalar placeholder; readers use only the key names.
    """
    normalised = set()
    for key in keys:
        if isinstance(key, str):
            sid, name = parse_dataset_key(key)
            normalised.add(format_dataset_key(sid, name))
        else:
            normalised.add(format_dataset_key(*key))
    path = Path(root) / DATASET_KEYS_FILENAME
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        for key in sorted(normalised):
            f.create_dataset(key, data=np.int8(0))
    return path


def find_calibration(scan_path: str | os.PathLike) -> Path | None:
    """``calib_matrix.csv`` next to the scan or up to three folders above it (the TUS-REC root)."""
    scan_path = Path(scan_path).resolve()
    for folder in list(scan_path.parents)[:4]:
        candidate = folder / CALIBRATION_FILENAME
        if candidate.is_file():
            return candidate
    return None


def _sibling_tforms(scan_path: Path) -> Path | None:
    """For the val/test layout ``<root>/frames/<sid>/<scan>.h5``, the ``transfs`` twin if present."""
    parts = scan_path.resolve().parts
    if len(parts) >= 3 and parts[-3] == FRAMES_DIR:
        twin = Path(*parts[:-3], TRANSFS_DIR, *parts[-2:])
        if twin.is_file():
            return twin
    return None


def open_scan_file(
    scan_path: str | os.PathLike, calibration: Calibration, subject: str | None = None
) -> Sweep:
    """Open one TUS-REC scan ``.h5`` (``frames`` and, if present, ``tforms``) as a lazy Sweep: the
    one scan opener, behind :meth:`TusRecDataset.load`, ``dualtrack predict`` and ``reconstruct``.

    ``tforms`` are read from the same file (train layout) or from the ``transfs/`` twin of a
    ``frames/<sid>/<scan>.h5`` file (val/test layout). Landmarks come from the dataset's
    ``landmarks/`` or ``landmark/`` folder (``landmark_<sid>.h5``, the scan's entry) when the file
    sits in a TUS-REC layout and has one.

    Raises:
        FileNotFoundError / OSError: missing or unreadable file.
        KeyError: no ``frames`` dataset.
    """
    path = Path(scan_path)
    with open_h5(path) as f:
        if "frames" not in f:
            raise KeyError(f"{path}: no 'frames' dataset (found {sorted(f.keys())}); is this a TUS-REC scan?")
        ds = f["frames"]
        frames = LazyFrames(path, "frames", shape=ds.shape, dtype=ds.dtype)
        tforms = read_tforms(f)
    if tforms is None:
        twin = _sibling_tforms(path)
        if twin is not None:
            with open_h5(twin) as f:
                tforms = read_tforms(f)
    if frames.ndim != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"{path}: 'frames' is {frames.dtype} {tuple(frames.shape)}; TUS-REC frames are uint8 (N, H, W) "
            "in 0..255 (convert float frames with np.round(255 * x).astype(np.uint8) for [0, 1] "
            "data; docs/data.md)"
        )
    if frames.shape[0] < 1:
        raise ValueError(f"{path}: the scan has no frames")
    if tforms is not None and tforms.shape != (frames.shape[0], 4, 4):
        raise ValueError(
            f"{path}: 'tforms' has shape {tforms.shape}, expected ({frames.shape[0]}, 4, 4) for "
            f"{frames.shape[0]} frames"
        )
    return Sweep(
        subject=subject or path.parent.name,
        name=path.stem,
        frames=frames,
        tforms=tforms,
        calibration=calibration,
        landmarks=_scan_landmarks(path),
    )


def _scan_landmarks(scan_path: Path) -> np.ndarray | None:
    """``(K, 3)`` landmarks of ``<root>/{frames_transfs|frames}/<sid>/<scan>.h5``, or ``None``."""
    if scan_path.parent.parent.name not in (TRAIN_DIR, FRAMES_DIR):
        return None
    path = find_landmark_file(scan_path.parent.parent.parent, scan_path.parent.name)
    if path is None:
        return None
    with open_h5(path) as f:
        return np.asarray(f[scan_path.stem][()], dtype=np.int64) if scan_path.stem in f else None
