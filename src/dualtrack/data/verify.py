"""Check a TUS-REC dataset folder against the data contract (``dualtrack verify-data``).

Every problem becomes an :class:`Issue` naming the file and what was expected versus found; a
broken file never stops the run. Errors break the contract (training or the official evaluation
would fail or be wrong); warnings are deviations worth knowing (e.g. a subject with fewer scans
than the challenge ships).

Cost: each scan file is opened, its ``tforms`` read in full and its first and last frame read;
``full=True`` also reads every frame (the whole dataset: slow on the 226 GB release).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np

from dualtrack import geometry
from dualtrack.data.calibration import CALIBRATION_FILENAME, Calibration, read_calibration
from dualtrack.data.tusrec import (
    DATASET_KEYS_FILENAME,
    FRAMES_DIR,
    LANDMARK_DIRS,
    SCAN_NAMES_2024,
    SCAN_NAMES_2025,
    TRAIN_DIR,
    TRANSFS_DIR,
    detect_layout,
    parse_dataset_key,
)
from dualtrack.utils import progress_bar

log = logging.getLogger(__name__)

__all__ = ["Issue", "VerifyReport", "verify_dataset", "preflight"]

_MAX_LISTED = 10
_RIGID_ATOL = 1e-3


@dataclass(frozen=True)
class Issue:
    """One finding.

    Attributes:
        severity: ``"error"`` or ``"warning"``.
        file: the file or folder concerned, relative to the dataset root when inside it.
        message: what was expected and what was found.
    """

    severity: str
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class VerifyReport:
    """Result of :func:`verify_dataset`.

    Attributes:
        root: the data folder checked.
        layout: ``"train"``, ``"test"`` or ``None`` when no layout was recognised.
        num_subjects, num_scans: subjects and scans found.
        num_frames: total frames of the scans whose frames could be read.
        num_landmark_scans: scans with a landmark dataset.
        frame_shapes: ``{"HxW": number of scans}``.
        spacing: ``(sx, sy)`` mm per pixel from the calibration, ``None`` if unreadable.
        issues: every finding, in discovery order.
    """

    root: str
    layout: str | None = None
    num_subjects: int = 0
    num_scans: int = 0
    num_frames: int = 0
    num_landmark_scans: int = 0
    frame_shapes: dict[str, int] = field(default_factory=dict)
    spacing: tuple[float, float] | None = None
    issues: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        """``True`` when there is no error (warnings allowed)."""
        return not self.errors

    def to_dict(self) -> dict:
        """JSON-serialisable form (counts, then the issues)."""
        out = asdict(self)
        out["num_errors"] = len(self.errors)
        out["num_warnings"] = len(self.warnings)
        out["ok"] = self.ok
        return out

    def format(self, max_issues: int | None = None) -> str:
        """Human-readable report: counts, then errors and warnings (each capped at ``max_issues``)."""
        lines = [f"Dataset: {self.root}"]
        layout = {"train": f"train ({TRAIN_DIR}/)", "test": f"val/test ({FRAMES_DIR}/ + {TRANSFS_DIR}/)"}
        lines.append(f"Layout: {layout.get(self.layout, 'not recognised')}")
        if self.spacing is not None:
            lines.append(
                f"Pixel spacing: sx={self.spacing[0]:.6g} mm (columns), sy={self.spacing[1]:.6g} mm (rows)"
            )
        shapes = ", ".join(f"{k} ({v} scans)" for k, v in sorted(self.frame_shapes.items())) or "-"
        lines.append(
            f"Subjects: {self.num_subjects}   Scans: {self.num_scans}   Frames: {self.num_frames:,}   "
            f"Scans with landmarks: {self.num_landmark_scans}"
        )
        lines.append(f"Frame size (HxW): {shapes}")
        for title, items in (("ERRORS", self.errors), ("WARNINGS", self.warnings)):
            if not items:
                continue
            lines.append("")
            lines.append(f"{title} ({len(items)}):")
            shown = items if max_issues is None else items[:max_issues]
            lines += [f"  {issue}" for issue in shown]
            if len(shown) < len(items):
                lines.append(f"  ... and {len(items) - len(shown)} more (use --json for the full list)")
        lines.append("")
        n_err, n_warn = len(self.errors), len(self.warnings)
        verdict = "OK" if self.ok else "FAILED"
        lines.append(
            f"Result: {verdict}: {n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)}"
        )
        return "\n".join(lines)


def _listed(indices: Iterable[int]) -> str:
    idx = list(indices)
    text = ", ".join(str(i) for i in idx[:_MAX_LISTED])
    return f"[{text}{', ...' if len(idx) > _MAX_LISTED else ''}] ({len(idx)} in total)"


def _listed_names(names: list[str]) -> str:
    return ", ".join(names[:_MAX_LISTED]) + (", ..." if len(names) > _MAX_LISTED else "")


class _Checker:
    def __init__(self, root: Path, report: VerifyReport, full: bool) -> None:
        self.root = root
        self.report = report
        self.full = full
        self.broken: set[Path] = set()

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def error(self, path: Path, message: str) -> None:
        self.report.issues.append(Issue("error", self.rel(path), message))

    def warning(self, path: Path, message: str) -> None:
        self.report.issues.append(Issue("warning", self.rel(path), message))

    # ------------------------------------------------------------------ calibration

    def calibration(self) -> None:
        path = self.root / CALIBRATION_FILENAME
        if not path.is_file():
            self.error(
                path, "missing: every dataset needs its calibration file (header, 4 rows S, header, 4 rows C)"
            )
            return
        try:
            calib = read_calibration(path)
        except (ValueError, OSError) as exc:
            self.error(path, str(exc).replace(f"{path}: ", ""))
            return
        self._check_calibration(path, calib)

    def _check_calibration(self, path: Path, calib: Calibration) -> None:
        s, c = calib.scale, calib.image_to_tool
        off = s - np.diag(np.diag(s))
        if np.abs(off).max() > 1e-9:
            self.error(
                path, f"S (lines 2-5) must be diagonal (pixel -> mm scaling, no offset), found {s.tolist()}"
            )
        if not (s[0, 0] > 0 and s[1, 1] > 0):
            self.error(path, f"S spacings must be positive, found sx={s[0, 0]:g}, sy={s[1, 1]:g}")
        if abs(s[2, 2] - 1) > 1e-6 or abs(s[3, 3] - 1) > 1e-6:
            self.error(path, f"S[2,2] and S[3,3] must be 1, found {s[2, 2]:g} and {s[3, 3]:g}")
        if not bool(geometry.is_rigid(c, atol=_RIGID_ATOL)):
            r = c[:3, :3]
            self.error(
                path,
                "C (lines 7-10) must be rigid (orthonormal R with det +1, last row 0 0 0 1), found "
                f"|R^T R - I|max={np.abs(r.T @ r - np.eye(3)).max():.3g}, det R={np.linalg.det(r):.4g}, "
                f"last row {c[3].tolist()}",
            )
        if s[0, 0] > 0 and s[1, 1] > 0:
            self.report.spacing = calib.spacing

    # ------------------------------------------------------------------ scan files

    def frames_file(self, path: Path) -> tuple[int, int, int] | None:
        """Check the ``frames`` dataset of a file; returns ``(N, H, W)`` when usable."""
        with h5py.File(path, "r") as f:
            if "frames" not in f:
                self.error(
                    path, f"missing dataset 'frames': expected (N, H, W) uint8, found keys {sorted(f.keys())}"
                )
                return None
            ds = f["frames"]
            if not isinstance(ds, h5py.Dataset) or ds.ndim != 3:
                shape = getattr(ds, "shape", "a group")
                self.error(path, f"'frames': expected shape (N, H, W), found {shape}")
                return None
            n, h, w = (int(x) for x in ds.shape)
            if ds.dtype != np.uint8:
                self.error(path, f"'frames': expected dtype uint8, found {ds.dtype}")
            if n < 2:
                self.error(
                    path, f"'frames': expected at least 2 frames (poses are relative to frame 0), found {n}"
                )
            if n == 0:
                return None
            if ds.compression is None and ds.id.get_storage_size() < ds.size * ds.dtype.itemsize:
                self.error(
                    path,
                    f"'frames': expected {ds.size * ds.dtype.itemsize:,} bytes of pixel data, found only "
                    f"{ds.id.get_storage_size():,} stored (incompletely written file?)",
                )
            block = max(1, (32 << 20) // max(1, h * w))
            ranges = (
                [range(a, min(n, a + block)) for a in range(0, n, block)] if self.full else [[0], [n - 1]]
            )
            for rng in ranges:
                try:
                    ds[rng[0] : rng[-1] + 1]
                except OSError as exc:
                    self.error(
                        path, f"'frames': frames {rng[0]}..{rng[-1]} unreadable (corrupt data?): {exc}"
                    )
                    break
            return n, h, w

    def tforms_file(self, path: Path, n_frames: int | None) -> None:
        with h5py.File(path, "r") as f:
            if "tforms" not in f:
                self.error(
                    path,
                    f"missing dataset 'tforms': expected (N, 4, 4) float32, found keys {sorted(f.keys())}",
                )
                return
            ds = f["tforms"]
            if not isinstance(ds, h5py.Dataset) or ds.ndim != 3 or ds.shape[1:] != (4, 4):
                self.error(
                    path, f"'tforms': expected shape (N, 4, 4), found {getattr(ds, 'shape', 'a group')}"
                )
                return
            if not np.issubdtype(ds.dtype, np.floating):
                self.error(path, f"'tforms': expected dtype float32, found {ds.dtype}")
                return
            if ds.dtype != np.float32:
                self.warning(
                    path,
                    f"'tforms': expected dtype float32 (the organisers' code needs it), found {ds.dtype}",
                )
            tf = ds[()].astype(np.float64)
        if n_frames is not None and len(tf) != n_frames:
            self.error(path, f"'tforms': expected {n_frames} transforms (one per frame), found {len(tf)}")
        finite = np.isfinite(tf).all(axis=(1, 2))
        if not finite.all():
            self.error(
                path,
                f"'tforms': expected finite values, found NaN/Inf at frames "
                f"{_listed(np.flatnonzero(~finite))}",
            )
        rigid = np.asarray(geometry.is_rigid(np.where(np.isfinite(tf), tf, 0.0), atol=_RIGID_ATOL))
        bad = np.flatnonzero(finite & ~rigid)
        if bad.size:
            self.error(
                path,
                "'tforms': expected rigid transforms (orthonormal R, det +1, last row 0 0 0 1), found "
                f"non-rigid or singular matrices at frames {_listed(bad)}",
            )

    def guarded(self, path: Path, check, *args):
        """Run one per-file check; any failure becomes an error naming the file."""
        if path in self.broken:
            return None
        if not path.is_file():
            self.error(path, "missing file")
            return None
        try:
            return check(path, *args)
        except OSError as exc:
            self.broken.add(path)
            self.error(path, f"cannot read as HDF5 (truncated or corrupt file?): {exc}")
        except Exception as exc:  # noqa: BLE001 - one broken file must never stop the run
            self.error(path, f"unreadable: {type(exc).__name__}: {exc}")
        return None

    # ------------------------------------------------------------------ landmarks

    def landmarks(self, scans: dict[str, dict[str, tuple[int, int, int] | None]], layout: str) -> None:
        folders = [d for d in LANDMARK_DIRS if (self.root / d).is_dir()]
        expected = "landmarks/" if layout == "train" else "landmark/ (2024) or landmarks/ (2025)"
        if not folders:
            self.warning(
                self.root,
                f"no landmark folder: expected {expected}; landmark errors (GLE/LLE) cannot be computed",
            )
            return
        for sid, names in scans.items():
            paths = [self.root / d / f"landmark_{sid}.h5" for d in folders]
            path = next((p for p in paths if p.is_file()), None)
            if path is None:
                self.warning(paths[0], f"missing landmark file for subject {sid}")
                continue
            self.guarded(path, self._landmark_file, sid, names)

    def _landmark_file(self, path: Path, sid: str, names: dict[str, tuple[int, int, int] | None]) -> None:
        with h5py.File(path, "r") as f:
            keys = set(f.keys())
            for extra in sorted(keys - set(names)):
                self.warning(path, f"dataset {extra!r} matches no scan of subject {sid}")
            for name, dims in names.items():
                if name not in keys:
                    self.warning(path, f"no landmarks for scan {name!r}")
                    continue
                self.report.num_landmark_scans += 1
                ds = f[name]
                if not isinstance(ds, h5py.Dataset) or ds.ndim != 2 or ds.shape[1] != 3:
                    self.error(
                        path, f"{name!r}: expected shape (K, 3), found {getattr(ds, 'shape', 'a group')}"
                    )
                    continue
                if not np.issubdtype(ds.dtype, np.integer):
                    self.error(
                        path, f"{name!r}: expected integer (frame, x, y) values, found dtype {ds.dtype}"
                    )
                    continue
                if dims is not None:
                    self._landmark_ranges(path, name, ds[()], dims)

    def _landmark_ranges(self, path: Path, name: str, lm: np.ndarray, dims: tuple[int, int, int]) -> None:
        n, h, w = dims
        checks = (
            (0, 1, n - 1, f"frame index in 1..{n - 1} (0-based; frame 0 is the reference and has no label)"),
            (1, 1, w, f"x (1-based column) in 1..{w}"),
            (2, 1, h, f"y (1-based row) in 1..{h}"),
        )
        for col, lo, hi, what in checks:
            bad = np.flatnonzero((lm[:, col] < lo) | (lm[:, col] > hi))
            if bad.size:
                found = ", ".join(f"row {r}: {lm[r].tolist()}" for r in bad[:_MAX_LISTED])
                more = f" (+{bad.size - _MAX_LISTED} more)" if bad.size > _MAX_LISTED else ""
                self.error(path, f"{name!r}: expected {what}, found {found}{more}")

    # ------------------------------------------------------------------ scan counts

    def scan_counts(self, scans: dict[str, dict]) -> None:
        for sid, names in scans.items():
            present = set(names)
            for year, expected in ((2024, SCAN_NAMES_2024), (2025, SCAN_NAMES_2025)):
                have = present & set(expected)
                if have and have != set(expected):
                    missing = sorted(set(expected) - have)
                    self.warning(
                        self.root / (TRAIN_DIR if self.report.layout == "train" else FRAMES_DIR) / sid,
                        f"subject {sid}: expected the {len(expected)} TUS-REC {year} scans, found "
                        f"{len(have)} (missing {_listed_names(missing)})",
                    )


def _subject_listing(checker: _Checker, top: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in sorted(top.iterdir()):
        if not p.is_dir():
            continue
        if not p.name.isdigit():
            checker.warning(p, "ignored: subject folders must be named by digits (e.g. 000)")
            continue
        for tmp in sorted(p.glob(".*.tmp-*")):
            checker.warning(tmp, "leftover temporary file of an interrupted write (safe to delete)")
        out[p.name] = sorted(f.stem for f in p.glob("*.h5") if not f.name.startswith("."))
        if not out[p.name]:
            checker.warning(p, "subject folder holds no .h5 scan")
    return out


def _test_keys(checker: _Checker, listing: dict[str, list[str]]) -> dict[str, list[str]]:
    """Scans of the val/test layout: from dataset_keys.h5, cross-checked with frames/."""
    root = checker.root
    keys_path = root / DATASET_KEYS_FILENAME
    on_disk = {(sid, n) for sid, names in listing.items() for n in names}
    if not keys_path.is_file():
        checker.error(
            keys_path, "missing: the val/test layout lists its scans in dataset_keys.h5 (sub<sid>__<scan>)"
        )
        return listing
    try:
        with h5py.File(keys_path, "r") as f:
            raw = list(f.keys())
    except OSError as exc:
        checker.error(keys_path, f"cannot read as HDF5 (truncated or corrupt file?): {exc}")
        return listing
    listed: dict[str, list[str]] = {}
    for key in raw:
        try:
            sid, name = parse_dataset_key(key)
        except ValueError as exc:
            checker.error(keys_path, str(exc))
            continue
        if (sid, name) not in on_disk:
            checker.error(keys_path, f"key {key!r} points to {FRAMES_DIR}/{sid}/{name}.h5, which is missing")
        listed.setdefault(sid, []).append(name)
    listed_set = {(sid, n) for sid, names in listed.items() for n in names}
    for sid, name in sorted(on_disk - listed_set):
        checker.warning(
            root / FRAMES_DIR / sid / f"{name}.h5",
            f"not listed in {DATASET_KEYS_FILENAME} (ignored by test.py)",
        )
    return {sid: sorted(names) for sid, names in sorted(listed.items())}


def verify_dataset(root: str | os.PathLike, full: bool = False, progress: bool = False) -> VerifyReport:
    """Check a TUS-REC dataset folder (train or val/test layout) against the data contract.

    Args:
        root: the dataset folder (or the folder holding ``data/``).
        full: also read every frame (finds corrupt chunks anywhere; reads the whole dataset).
        progress: show a progress bar on stderr.

    Returns:
        The :class:`VerifyReport`; it never raises for problems in the data.
    """
    root = Path(root)
    report = VerifyReport(root=str(root))
    try:
        data_root, layout = detect_layout(root)
    except (FileNotFoundError, ValueError) as exc:
        report.issues.append(Issue("error", str(root), str(exc).replace(f"{root}: ", "")))
        return report
    report.root, report.layout = str(data_root), layout
    checker = _Checker(data_root, report, full)
    checker.calibration()

    top = data_root / (TRAIN_DIR if layout == "train" else FRAMES_DIR)
    scans = _subject_listing(checker, top)
    if layout == "test":
        scans = _test_keys(checker, scans)
        have_transfs = (data_root / TRANSFS_DIR).is_dir()
        if not have_transfs:
            checker.warning(
                data_root / TRANSFS_DIR,
                "missing folder: no ground-truth transforms (fine for prediction only; "
                "needed for training and evaluation)",
            )
    report.num_subjects = sum(1 for names in scans.values() if names)
    report.num_scans = sum(len(names) for names in scans.values())

    dims: dict[str, dict[str, tuple[int, int, int] | None]] = {sid: {} for sid in scans}
    shapes: Counter = Counter()
    items = [(sid, name) for sid, names in scans.items() for name in names]
    for sid, name in progress_bar(items, desc="verify-data", unit="scan", enabled=progress):
        path = top / sid / f"{name}.h5"
        if not path.is_file():
            why = "a symbolic link to nowhere or in a loop" if path.is_symlink() else "not a regular file"
            checker.error(path, f"scan is {why}; replace it with the scan file")
        d = checker.guarded(path, checker.frames_file) if path.is_file() else None
        dims[sid][name] = d
        if d is not None:
            report.num_frames += d[0]
            shapes[f"{d[1]}x{d[2]}"] += 1
        if layout == "train":
            if path.is_file():
                checker.guarded(path, checker.tforms_file, None if d is None else d[0])
        elif have_transfs:
            checker.guarded(
                data_root / TRANSFS_DIR / sid / f"{name}.h5", checker.tforms_file, None if d is None else d[0]
            )
    report.frame_shapes = dict(shapes)
    checker.scan_counts(dims)
    checker.landmarks(dims, layout)
    if report.num_scans == 0:
        checker.error(top, "no scans found")
    log.debug("verified %s: %d errors, %d warnings", data_root, len(report.errors), len(report.warnings))
    return report


def preflight(root: str | os.PathLike, shown: int = 5) -> VerifyReport:
    """The cheap checks of :func:`verify_dataset` (first and last frame of each scan), run by every
    command before it reads a dataset, so that a broken file stops it at once with a message naming
    the file instead of failing mid-run.

    Raises:
        ValueError: the dataset has errors; the message lists the first ``shown`` of them and points
            to ``dualtrack verify-data`` for the full report.
    """
    report = verify_dataset(root)
    if not report.ok:
        errors = report.errors
        listed = "\n".join(f"  {issue}" for issue in errors[:shown])
        more = f"\n  ... and {len(errors) - shown} more" if len(errors) > shown else ""
        raise ValueError(
            f"{report.root}: the dataset fails {len(errors)} check(s) of the data contract "
            f"(`dualtrack verify-data {report.root}` lists them all):\n{listed}{more}"
        )
    return report
