"""Evaluate trained models on whole sweeps: per-scan metrics tables, summaries, paired tests.

:func:`evaluate_model` predicts every sweep of a split with a
:class:`dualtrack.inference.Predictor` and scores it with the paper's metrics
(:func:`~dualtrack.metrics.paper_metrics`: 5-point GPE / LPE in mm, FDR in %, maximum
drift in mm) and, on request, the official TUS-REC all-pixel / landmark errors with the TUS-REC
2025 normalised score (:func:`~dualtrack.metrics.tusrec_metrics`,
:func:`~dualtrack.metrics.normalised_score`). :func:`write_results` saves a per-scan
CSV and a JSON summary; :func:`compare` puts several such tables side by side with paired
Wilcoxon signed-rank p-values (:func:`~dualtrack.metrics.wilcoxon_table`).

Tables are ``{scan_key: {metric: value}}`` with TUS-REC keys ``sub<subject>__<scan>``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dualtrack.data import TusRecDataset
from dualtrack.data.splits import load_splits
from dualtrack.inference import Predictor
from dualtrack.metrics import (
    UndefinedMetricWarning,
    identity_errors,
    normalised_score,
    paper_metrics,
    tusrec_metrics,
    wilcoxon_table,
)
from dualtrack.utils import atomic_dir, atomic_write, progress_bar

__all__ = [
    "PAPER_METRICS",
    "Evaluation",
    "select_scans",
    "evaluate_model",
    "identity_table",
    "summarise",
    "write_table",
    "write_results",
    "read_table",
    "compare",
    "format_comparison",
]

log = logging.getLogger(__name__)

PAPER_METRICS = ("GPE", "LPE", "FDR", "max_drift")
"""The paper's Table 1 columns (mm, mm, %, mm)."""

SPLITS = ("test", "val", "train", "all")


@dataclass
class Evaluation:
    """Per-scan metrics of one model on one split, with where they came from.

    Attributes:
        table: ``{scan_key: {metric: value}}`` (paper metrics, ``frames``, ``seconds`` and, with
            TUS-REC metrics, ``tusrec_GPE`` ... ``final_score``).
        info: model name, weights, data folder, split and device.
        poses: ``{scan_key: (N, 4, 4)}`` predicted global poses (corner-origin image mm), kept only
            when :func:`evaluate_model` is asked to (``keep_poses``).
    """

    table: dict[str, dict[str, float]]
    info: dict[str, Any] = field(default_factory=dict)
    poses: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, dict[str, float]]:
        """Mean / median / std / min / max of every metric over scans (:func:`summarise`)."""
        return summarise(self.table)


def select_scans(
    dataset: TusRecDataset, split: str, splits_file: str | os.PathLike | None
) -> list[tuple[str, str]]:
    """Scans of ``split`` (``test``, ``val``, ``train`` or ``all``) of ``dataset``.

    Raises:
        ValueError: unknown split, a split other than ``all`` without a splits file, or no scans.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "all":
        scans = list(dataset.scans)
    else:
        if splits_file is None:
            raise ValueError(f"split {split!r} needs a splits file (--splits), or use --split all")
        subjects = set(getattr(load_splits(splits_file), split))
        scans = [s for s in dataset.scans if s[0] in subjects]
    if not scans:
        raise ValueError(
            f"{dataset.root}: no scans in split {split!r} (splits file: {splits_file}); choose another "
            "--split, or evaluate every scan of a held-out dataset with --data DIR --split all"
        )
    return scans


def evaluate_model(
    predictor: Predictor,
    dataset: TusRecDataset,
    scans: Sequence[tuple[str, str]],
    *,
    tusrec: bool = False,
    progress: bool = False,
    keep_poses: bool = False,
) -> Evaluation:
    """Predict and score every scan.

    Args:
        predictor: the model and how to run it (device, precision, chunks); the model's input spec
            decides the crop and the global input.
        dataset: the data; scans without tracking (no ground truth) are skipped with a warning.
        scans: ``(subject, name)`` pairs to evaluate.
        tusrec: also compute the official all-pixel / landmark errors and the normalised score.
        progress: show a progress bar.
        keep_poses: keep every scan's predicted global poses in :attr:`Evaluation.poses`.

    Returns:
        :class:`Evaluation` (``seconds`` is the prediction time of each scan, without loading).
    """
    dev = predictor.device
    table: dict[str, dict[str, float]] = {}
    poses: dict[str, np.ndarray] = {}
    for subject, name in progress_bar(scans, desc="evaluating", unit="scan", enabled=progress):
        sweep = dataset.load(subject, name)
        if not sweep.has_tforms:
            log.warning("skipping %s: no tracking (ground truth) to compare with", sweep.key)
            continue
        frames = np.asarray(sweep.frames)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        pred = predictor.predict(frames, spacing=sweep.spacing)
        seconds = time.perf_counter() - start
        gt = sweep.global_transforms()
        scale = sweep.calibration.scale
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)  # FDR of a closed loop is NaN
            row: dict[str, float] = dict(paper_metrics(gt, pred.global_, sweep.shape, scale))
        row.update(frames=float(sweep.num_frames), seconds=seconds)
        if tusrec:
            errors = tusrec_metrics(gt, pred.global_, sweep.shape, scale, sweep.landmarks, device=dev)
            ident = identity_errors(gt, sweep.shape, scale, sweep.landmarks, device=dev)
            row.update({f"tusrec_{k}": v for k, v in errors.items()})
            row.update(normalised_score(errors, ident))
        table[sweep.key] = row
        if keep_poses:
            poses[sweep.key] = pred.global_
    if not table:
        raise ValueError(f"{dataset.root}: none of the {len(scans)} scans has ground truth to evaluate")
    return Evaluation(
        table=table,
        info={"data": str(dataset.root), "device": str(dev), "crop": predictor.spec.local_crop},
        poses=poses,
    )


def identity_table(dataset: TusRecDataset, scans: Sequence[tuple[str, str]]) -> dict[str, dict[str, float]]:
    """Errors of the trivial "no motion" prediction (every frame at the first frame's pose,
    ``G_pred[i] = I``) on ``scans`` ``[(subject, scan), ...]``, keyed like :func:`evaluate_model`'s
    table: the reference of the normalised scores (``1 - error / identity error``)."""
    table = {}
    for subject, name in scans:
        sweep = dataset.load(subject, name)
        g_gt = sweep.global_transforms()
        s_mat = sweep.calibration.scale
        row = dict(paper_metrics(g_gt, np.tile(np.eye(4), (len(g_gt), 1, 1)), sweep.shape, s_mat))
        ident = identity_errors(g_gt, sweep.shape, s_mat, sweep.landmarks)
        row.update({f"tusrec_{k}": v for k, v in ident.items()})
        row["final_score"] = 0.0  # 1 - X / X_identity with X = X_identity
        table[sweep.key] = row
    return table


def summarise(table: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """``{metric: {"mean", "median", "std", "min", "max", "n"}}`` over scans (NaNs ignored)."""
    metrics = sorted({m for row in table.values() for m in row})
    out = {}
    for m in metrics:
        vals = np.array([row[m] for row in table.values() if m in row], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        if len(vals) == 0:
            out[m] = {
                "mean": math.nan,
                "median": math.nan,
                "std": math.nan,
                "min": math.nan,
                "max": math.nan,
                "n": 0.0,
            }
            continue
        out[m] = {
            "mean": float(vals.mean()),
            "median": float(np.median(vals)),
            "std": float(vals.std()),
            "min": float(vals.min()),
            "max": float(vals.max()),
            "n": float(len(vals)),
        }
    return out


def write_table(path: str | os.PathLike, table: Mapping[str, Mapping[str, float]]) -> Path:
    """Write a per-scan table as CSV (atomically): a ``scan`` column, then one column per metric
    (empty where a scan lacks it), rows sorted by scan key; readable by :func:`read_table`.

    Returns:
        ``path``.
    """
    path = Path(path)
    metrics = list(dict.fromkeys(m for row in table.values() for m in row))
    with atomic_write(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["scan", *metrics])
        for key, row in sorted(table.items()):
            writer.writerow([key, *(repr(float(row[m])) if m in row else "" for m in metrics)])
    return path


def write_results(
    evaluation: Evaluation, out_dir: str | os.PathLike, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write ``metrics.csv`` (one row per scan) and ``summary.json`` as the folder ``out_dir``.

    The folder is written beside and renamed into place when complete
    (:func:`dualtrack.utils.atomic_dir`); an existing non-empty ``out_dir`` is replaced only with
    ``overwrite``.

    Returns:
        ``(csv_path, json_path)``.

    Raises:
        FileExistsError: ``out_dir`` holds earlier results and ``overwrite`` is False.
    """
    out = Path(out_dir)
    payload = {**evaluation.info, "num_scans": len(evaluation.table), "metrics": evaluation.summary}
    with atomic_dir(out, overwrite) as tmp:
        write_table(tmp / "metrics.csv", evaluation.table)
        (tmp / "summary.json").write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return out / "metrics.csv", out / "summary.json"


def read_table(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Read a per-scan ``metrics.csv`` written by :func:`write_results` (or a folder holding one).

    Raises:
        FileNotFoundError / ValueError: missing file or not a metrics table (the message names it).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"metrics table not found: {path}")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "scan" not in rows[0]:
        raise ValueError(f"{path}: not a per-scan metrics table (first column must be 'scan')")
    table = {}
    for row in rows:
        key = row.pop("scan")
        table[key] = {k: float(v) for k, v in row.items() if v not in ("", None)}
    return table


def compare(
    tables: Mapping[str, Mapping[str, Mapping[str, float]]],
    metrics: Sequence[str] = PAPER_METRICS,
    reference: str | None = None,
) -> dict[str, Any]:
    """Summary table of several methods and paired Wilcoxon signed-rank tests.

    Args:
        tables: ``{method: {scan_key: {metric: value}}}``; scans are paired by key, and only scans
            present in every table (with finite values) are compared.
        metrics: metrics to report.
        reference: method the others are tested against (default: every pair).

    Returns:
        ``{"scans": n, "summary": {method: {metric: {"mean", "std", "median"}}},
        "tests": {"A vs B": {metric: wilcoxon row}}}`` (rows from
        :func:`~dualtrack.metrics.wilcoxon_table`).

    Raises:
        ValueError: fewer than two tables, an unknown reference, or no common scans.
    """
    names = list(tables)
    if len(names) < 2:
        raise ValueError("compare needs at least two tables")
    if reference is not None and reference not in tables:
        raise ValueError(f"reference {reference!r} is not one of {names}")
    common = set.intersection(*(set(t) for t in tables.values()))
    common = {
        k
        for k in common
        if all(math.isfinite(float(tables[n][k].get(m, math.nan))) for n in names for m in metrics)
    }
    if not common:
        raise ValueError("the tables have no scan in common with finite values of every metric")
    dropped = max(len(t) for t in tables.values()) - len(common)
    if dropped:
        log.warning(
            "compare: %d scans are missing or non-finite in some table; comparing %d", dropped, len(common)
        )
    sub = {n: {k: dict(tables[n][k]) for k in sorted(common)} for n in names}
    summary = {
        n: {
            m: {"mean": float(np.mean(v)), "std": float(np.std(v)), "median": float(np.median(v))}
            for m in metrics
            for v in [[sub[n][k][m] for k in sub[n]]]
        }
        for n in names
    }
    pairs = (
        [(reference, n) for n in names if n != reference]
        if reference is not None
        else [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    )
    tests = {f"{a} vs {b}": wilcoxon_table(sub[a], sub[b], list(metrics)) for a, b in pairs}
    return {"scans": len(common), "summary": summary, "tests": tests}


def format_comparison(result: Mapping[str, Any]) -> str:
    """Plain-text rendering of :func:`compare`'s result (mean ± std per method, p-values)."""
    summary = result["summary"]
    metrics = list(next(iter(summary.values())))
    width = max(10, *(len(n) for n in summary))
    lines = [f"{result['scans']} scans", f"{'method':<{width}}  " + "  ".join(f"{m:>17}" for m in metrics)]
    for name, row in summary.items():
        cells = "  ".join(f"{row[m]['mean']:>9.3f} ± {row[m]['std']:<6.3f}" for m in metrics)
        lines.append(f"{name:<{width}}  {cells}")
    lines.append("")
    lines.append("paired Wilcoxon signed-rank p-values (two-sided)")
    for pair, rows in result["tests"].items():
        lines.append(f"{pair:<{width}}  " + "  ".join(f"{rows[m]['p_value']:>17.3g}" for m in metrics))
    return "\n".join(lines)
