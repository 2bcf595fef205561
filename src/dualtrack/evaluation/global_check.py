"""Does a trained DualTrack use its global branch? Evaluate it with the global input replaced.

Users of the authors' code reported that replacing the global encoder's input of a released
checkpoint by noise, zeros or shuffled frames left its outputs unchanged, i.e. the trained model
ignored its global branch. :func:`global_branch_check` measures this for our models: each test sweep
is predicted once unmodified and once per *mode*, where the global branch sees

* ``zeros``: black frames;
* ``noise``: i.i.d. Gaussian noise with the mean and standard deviation of the true global frames,
  clipped to ``[0, 1]`` (seeded per sweep, reproducible);
* ``other_sweep``: the frames of another test sweep (preferably of another subject), sub-sampled
  at the same stride and picked evenly to the same count ``Tg``, at the true frame indices;
* ``shuffle``: the true global frames in a random temporal order (indices unchanged).

The local branch always sees the true frames. The replacement happens inside
:meth:`dualtrack.inference.Predictor.predict` (its ``replace_global`` hook rewrites the global
frames before the model's ``decode``), so the inference path (chunking, crop, pose conversion) is
the one used for the unmodified result.

Reported per mode (means over sweeps): the paper metrics (5-point GPE / LPE in mm, FDR in %, max
drift in mm), their change against the unmodified prediction, the paired Wilcoxon p-value of the
per-sweep GPE against the unmodified GPE, and ``prediction_change`` = the 5-point GPE (mm) between
the unmodified and the modified *predicted* trajectories: 0 means the global input had no effect at
all, whatever the ground truth.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from dualtrack.data.sweep import Sweep
from dualtrack.inference import Predictor, TrajectoryPrediction
from dualtrack.metrics import UndefinedMetricWarning, paper_metrics, wilcoxon_table

__all__ = [
    "GLOBAL_MODES",
    "CHECK_METRICS",
    "replace_global_frames",
    "predict_with_global_input",
    "GlobalCheckResult",
    "global_branch_check",
]

log = logging.getLogger(__name__)

GLOBAL_MODES = ("zeros", "noise", "other_sweep", "shuffle")
"""Replacements of the global input, in report order."""

CHECK_METRICS = ("GPE", "LPE", "FDR", "max_drift")
"""Paper metrics reported per mode."""

def _pick_even(count: int, total: int) -> np.ndarray:
    """``count`` indices spread evenly over ``0..total-1`` (repeats when ``total < count``)."""
    return np.round(np.linspace(0, total - 1, count)).astype(np.int64)


def replace_global_frames(
    mode: str,
    global_frames: torch.Tensor,
    *,
    other_frames: np.ndarray | None = None,
    stride: int = 1,
    seed: int = 0,
) -> torch.Tensor:
    """The replacement of one sweep's global input for ``mode`` (see the module docstring).

    Args:
        mode: one of :data:`GLOBAL_MODES`.
        global_frames: ``(B, Tg, H, W)`` float in ``[0, 1]``, the true global input.
        other_frames: ``(M, H', W')`` uint8 frames of another sweep (``other_sweep`` only); frames
            ``0, stride, 2 stride, ...`` are taken, ``Tg`` of them evenly, and resized to ``(H, W)``
            when the frame size differs.
        stride: the model's global stride.
        seed: seed of ``noise`` and ``shuffle``.

    Returns:
        ``(B, Tg, H, W)`` float on the device of ``global_frames``.
    """
    gen = torch.Generator().manual_seed(int(seed))
    b, tg, h, w = global_frames.shape
    if mode == "zeros":
        return torch.zeros_like(global_frames)
    if mode == "noise":
        mean = global_frames.float().mean().item()
        std = global_frames.float().std().item() if global_frames.numel() > 1 else 0.0
        noise = torch.randn((b, tg, h, w), generator=gen).mul_(max(std, 1e-3)).add_(mean).clamp_(0.0, 1.0)
        return noise.to(global_frames)
    if mode == "shuffle":
        perm = torch.randperm(tg, generator=gen).to(global_frames.device)
        return global_frames[:, perm]
    if mode == "other_sweep":
        if other_frames is None:
            raise ValueError("replace_global_frames: mode 'other_sweep' needs other_frames")
        sub = np.asarray(other_frames[::stride])
        picked = torch.from_numpy(np.ascontiguousarray(sub[_pick_even(tg, len(sub))])).float().div_(255.0)
        if picked.shape[-2:] != (h, w):
            picked = nn.functional.interpolate(
                picked[None], size=(h, w), mode="bilinear", align_corners=False
            )[0]
        return picked[None].expand(b, -1, -1, -1).to(global_frames)
    raise ValueError(f"unknown global-check mode {mode!r}; valid: {', '.join(GLOBAL_MODES)}")


def predict_with_global_input(
    predictor: Predictor,
    sweep: Sweep,
    mode: str | None,
    *,
    other: Sweep | None = None,
    seed: int = 0,
) -> TrajectoryPrediction:
    """``predictor.predict(sweep)`` with the global input replaced by ``mode`` (``None`` =
    unmodified). ``other`` is the donor sweep of ``other_sweep``."""
    if mode is None:
        return predictor.predict(sweep)
    if mode == "other_sweep" and other is None:
        raise ValueError("predict_with_global_input: mode 'other_sweep' needs another sweep")
    if mode not in GLOBAL_MODES:
        raise ValueError(f"unknown global-check mode {mode!r}; valid: {', '.join(GLOBAL_MODES)}")
    other_frames = other.frames if other is not None and mode == "other_sweep" else None
    stride = predictor.spec.global_stride or 1

    def replace(frames: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return replace_global_frames(mode, frames, other_frames=other_frames, stride=stride, seed=seed)

    return predictor.predict(sweep, replace_global=replace)


@dataclass
class GlobalCheckResult:
    """Outcome of :func:`global_branch_check` for one model.

    Attributes:
        model: label of the checked model.
        rows: one dict per mode, ``"none"`` (unmodified) first: ``model``, ``mode``, ``n_scans``,
            the means of :data:`CHECK_METRICS`, ``delta_<metric>`` (mean of modified minus
            unmodified), ``GPE_change_pct`` (relative change of the mean GPE, %), ``p_value_GPE``
            (paired Wilcoxon, per-sweep GPE against the unmodified one) and ``prediction_change``
            (mean 5-point GPE between unmodified and modified predictions, mm).
        per_scan: ``{mode: {scan_key: {metric: value, "prediction_change": mm}}}``.
        donors: ``{scan_key: donor scan_key}`` used by ``other_sweep``.
    """

    model: str
    rows: list[dict[str, float | int | str]] = field(default_factory=list)
    per_scan: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    donors: dict[str, str] = field(default_factory=dict)

    def row(self, mode: str) -> dict[str, float | int | str]:
        """The summary row of ``mode``."""
        for r in self.rows:
            if r["mode"] == mode:
                return r
        raise KeyError(f"global check of {self.model!r} has no mode {mode!r}")


def _donors(sweeps: Sequence[Sweep]) -> list[int]:
    """For each sweep, the index of a donor sweep: the next one of another subject, else the next."""
    n = len(sweeps)
    out = []
    for i, s in enumerate(sweeps):
        order = [(i + k) % n for k in range(1, n)]
        other_subject = [j for j in order if sweeps[j].subject != s.subject]
        out.append((other_subject or order)[0])
    return out


def _finite_mean(values: Sequence[float]) -> float:
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    return float(arr.mean()) if arr.size else math.nan


def _metrics(sweep: Sweep, g_pred: np.ndarray) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # FDR of a closed sweep is NaN
        m = paper_metrics(sweep.global_transforms(), g_pred, sweep.shape, sweep.calibration.scale)
    return {k: m[k] for k in CHECK_METRICS}


def _change(g_ref: np.ndarray, g_mod: np.ndarray, sweep: Sweep) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return paper_metrics(g_ref, g_mod, sweep.shape, sweep.calibration.scale)["GPE"]


def global_branch_check(
    predictor: Predictor,
    sweeps: Sequence[Sweep],
    *,
    modes: Sequence[str] = GLOBAL_MODES,
    label: str | None = None,
    seed: int = 0,
    baseline: dict[str, np.ndarray] | None = None,
) -> GlobalCheckResult:
    """Evaluate ``predictor``'s model on ``sweeps`` with its global input replaced (see the module
    docstring).

    Args:
        predictor: a :class:`~dualtrack.inference.Predictor` of a model with a separate global
            branch (``input_spec.has_global_branch``).
        sweeps: test sweeps with ground truth; ``other_sweep`` needs at least two.
        modes: replacements to run, among :data:`GLOBAL_MODES`.
        label: model label in the result (default: the model's registry name).
        seed: base seed of ``noise`` / ``shuffle`` (sweep ``k`` uses ``seed + k``).
        baseline: optional ``{scan_key: (N, 4, 4)}`` unmodified global predictions (e.g. from the
            benchmark's main evaluation), to avoid predicting them again.

    Returns:
        :class:`GlobalCheckResult` with one row per mode, ``"none"`` first.

    Raises:
        ValueError: a model without a global branch, unknown modes, no sweeps, or ``other_sweep``
            with a single sweep.
    """
    label = label or predictor.model.model_name
    if not predictor.spec.has_global_branch:
        raise ValueError(f"global check: model {label!r} has no separate global branch")
    unknown = [m for m in modes if m not in GLOBAL_MODES]
    if unknown:
        raise ValueError(f"global check: unknown modes {unknown}; valid: {', '.join(GLOBAL_MODES)}")
    if not sweeps:
        raise ValueError("global check: no sweeps to evaluate")
    if "other_sweep" in modes and len(sweeps) < 2:
        raise ValueError("global check: mode 'other_sweep' needs at least two test sweeps")
    donors = _donors(sweeps) if len(sweeps) > 1 else [0]
    result = GlobalCheckResult(model=label)
    result.per_scan = {m: {} for m in ("none", *modes)}
    for k, sweep in enumerate(sweeps):
        key = sweep.key
        if baseline is not None and key in baseline:
            g_ref = np.asarray(baseline[key], dtype=np.float64)
        else:
            g_ref = predictor.predict(sweep).global_
        result.per_scan["none"][key] = {**_metrics(sweep, g_ref), "prediction_change": 0.0}
        donor = sweeps[donors[k]]
        result.donors[key] = donor.key
        for mode in modes:
            pred = predict_with_global_input(predictor, sweep, mode, other=donor, seed=seed + k)
            result.per_scan[mode][key] = {
                **_metrics(sweep, pred.global_),
                "prediction_change": _change(g_ref, pred.global_, sweep),
            }
        log.info("global check %s: %s done (%d/%d)", label, key, k + 1, len(sweeps))
    result.rows = [_summary(label, mode, result.per_scan) for mode in ("none", *modes)]
    return result


def _summary(label: str, mode: str, per_scan: dict[str, dict[str, dict[str, float]]]) -> dict:
    ref, cur = per_scan["none"], per_scan[mode]
    keys = sorted(cur)
    row: dict[str, float | int | str] = {"model": label, "mode": mode, "n_scans": len(keys)}
    for m in CHECK_METRICS:
        row[m] = _finite_mean([cur[k][m] for k in keys])
    for m in CHECK_METRICS:
        row[f"delta_{m}"] = _finite_mean([cur[k][m] - ref[k][m] for k in keys])
    base_gpe = _finite_mean([ref[k]["GPE"] for k in keys])
    row["GPE_change_pct"] = 100.0 * (float(row["GPE"]) - base_gpe) / base_gpe if base_gpe > 0 else math.nan
    if mode == "none":
        row["p_value_GPE"] = 1.0
    elif len(keys) < 2:
        row["p_value_GPE"] = math.nan
    else:
        row["p_value_GPE"] = float(wilcoxon_table(cur, ref, ["GPE"])["GPE"]["p_value"])
    row["prediction_change"] = _finite_mean([cur[k]["prediction_change"] for k in keys])
    return row
