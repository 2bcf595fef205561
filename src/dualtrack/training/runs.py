"""Run directories: what a training run writes, and how a run is found again.

A run directory holds::

    config.yaml      the resolved config (every default filled in; reload with load_config)
    command.txt      the command line that started (or resumed) the run
    git.txt          the git commit of the source tree ("unknown" outside a git checkout)
    versions.json    Python, dualtrack, torch, numpy, h5py versions
    splits.json      the subject-level split (dualtrack.data.splits format)
    target_stats.json  per-component mean / std of the training targets
    metrics.csv      one row per logging interval and per validation
    last.pt          resumable checkpoint (model, optimiser, scheduler, counters, RNG, config)
    best.pt          the checkpoint with the lowest validation GPE
    tensorboard/     TensorBoard event files (when tensorboard is installed)

Earlier stages are referenced by their run directory (``init_from: runs/local``); see
:func:`dualtrack.models.weights.find_checkpoint`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from dualtrack.training.config import TrainConfig, dump_config
from dualtrack.utils import atomic_write

__all__ = [
    "METRIC_FIELDS",
    "default_run_dir",
    "git_commit",
    "package_versions",
    "write_run_files",
    "MetricsLog",
    "command_line",
]

log = logging.getLogger(__name__)

METRIC_FIELDS = (
    "step",
    "epoch",
    "phase",
    "lr",
    "train_loss",
    "items_per_s",
    "val_GPE",
    "val_LPE",
    "val_FDR",
    "val_max_drift",
)
"""Columns of ``metrics.csv`` (empty cells where a row has no value)."""


def default_run_dir(cfg: TrainConfig, root: str | os.PathLike = "runs") -> Path:
    """``runs/<stage>-<model>-<YYYYmmdd-HHMMSS>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{cfg.stage.name}-{cfg.model.name}-{stamp}"


def git_commit(path: str | os.PathLike | None = None) -> str:
    """Commit hash of the git checkout containing ``path`` (default: this package), else ``unknown``."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{out}{' (modified)' if dirty else ''}" if out else "unknown"


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages a run depends on."""
    out = {"python": platform.python_version()}
    for name in ("dualtrack", "torch", "numpy", "h5py", "scipy", "safetensors", "tensorboard"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_run_files(run_dir: Path, cfg: TrainConfig, argv: Sequence[str], resumed: bool = False) -> None:
    """Write ``config.yaml``, ``command.txt``, ``git.txt`` and ``versions.json`` (rank 0 only).

    On resume the command line is appended to ``command.txt`` and the rest is left unchanged.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    command = " ".join(shlex.quote(a) for a in argv)
    if resumed:
        with open(run_dir / "command.txt", "a", encoding="utf-8") as fh:
            fh.write(f"# resumed {time.strftime('%Y-%m-%d %H:%M:%S')}\n{command}\n")
        return
    _write_text(run_dir / "config.yaml", dump_config(cfg))
    _write_text(run_dir / "command.txt", command + "\n")
    _write_text(run_dir / "git.txt", git_commit() + "\n")
    _write_text(run_dir / "versions.json", json.dumps(package_versions(), indent=2) + "\n")


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _read_metrics_rows(path: Path, resume_step: int) -> list[dict[str, str]]:
    """Rows of a ``metrics.csv`` up to ``resume_step``; a garbled file is a ``ValueError`` naming it."""
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "step" not in reader.fieldnames:
            raise ValueError(f"{path}: not a metrics log (no 'step' column); restore or delete it to resume")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                step = int(row["step"])
            except (TypeError, ValueError):
                raise ValueError(
                    f"{path}: line {line} is garbled (step {row.get('step')!r}); restore the file or delete "
                    "that line to resume (the checkpoint is intact)"
                ) from None
            if step <= resume_step:
                rows.append({k: v for k, v in row.items() if k in METRIC_FIELDS})
    return rows


class MetricsLog:
    """``metrics.csv`` writer (rank 0) with optional TensorBoard mirroring.

    Args:
        path: the CSV file.
        resume_step: on resume, rows logged after this step (written after the last checkpoint)
            are dropped so the continued run does not duplicate them.
        tensorboard_dir: folder for TensorBoard events, or ``None``.
    """

    def __init__(self, path: Path, resume_step: int | None = None, tensorboard_dir: Path | None = None):
        self.path = Path(path)
        if resume_step is not None and self.path.is_file():
            rows = _read_metrics_rows(self.path, resume_step)
            with atomic_write(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, METRIC_FIELDS)
                writer.writeheader()
                writer.writerows(rows)
        else:
            with atomic_write(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
                csv.DictWriter(fh, METRIC_FIELDS).writeheader()
        self._tb = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.info("tensorboard is not installed; logging to %s only", self.path)
            else:
                self._tb = SummaryWriter(str(tensorboard_dir))

    def write(self, **values: Any) -> None:
        """Append one row (keys among :data:`METRIC_FIELDS`; ``step`` required)."""
        unknown = set(values) - set(METRIC_FIELDS)
        if unknown:
            raise KeyError(f"unknown metrics.csv columns {sorted(unknown)}")
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, METRIC_FIELDS).writerow({k: _fmt(values.get(k)) for k in METRIC_FIELDS})
        if self._tb is not None:
            for key, value in values.items():
                if key not in ("step", "epoch", "phase") and isinstance(value, (int, float)):
                    self._tb.add_scalar(key.replace("_", "/", 1), value, values["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def command_line() -> list[str]:
    """The current process's command line (``sys.argv`` with the program name)."""
    return [Path(sys.argv[0]).name, *sys.argv[1:]]
