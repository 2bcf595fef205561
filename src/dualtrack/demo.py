"""``dualtrack demo``: the whole pipeline end to end on a freshly simulated dataset, in minutes.

:func:`run_demo` calls the library functions in order (no sub-processes):

1. :func:`dualtrack.simulate.dataset.simulate_dataset` writes a small TUS-REC-layout dataset of
   simulated forearm sweeps (``data/``);
2. :func:`dualtrack.data.make_splits` splits it by subject into train / validation / test
   (``splits.json``);
3. :func:`dualtrack.training.loop.train` trains DualTrack through its stages, each its own run
   directory: ``runs/local`` (``local_only``: CNN phase then pooling phase), ``runs/global``
   (``global_only``) and ``runs/fusion`` (``dualtrack``, both encoders loaded from the earlier runs
   and frozen). The stage-1 model doubles as the local-only model for contrast;
4. both models predict every held-out test sweep (:func:`dualtrack.inference.predict_trajectory`)
   and are scored with the paper's metrics and the official all-pixel / landmark TUS-REC metrics
   (``evaluation/``), next to the trivial "no motion" (identity) prediction;
5. :func:`dualtrack.predict.predict_file` predicts one test sweep into ``prediction/`` and
   :func:`dualtrack.reconstruction.reconstruct_volume` compounds it with the predicted and with
   the true trajectory (``volumes/*.nrrd`` plus a Slicer sequence ``volumes/sweep.seq.mha``);
6. :mod:`dualtrack.reconstruction.report` draws the trajectory, drift curves, orthogonal slices
   and per-scan box plots and writes ``report/report.html`` (self-contained) with the PNGs.

The models are far smaller and trained for minutes instead of days: the numbers are those of
a short demo run on simulated data, **not** the paper's. Sizes come from :data:`PLANS`
(``cpu``: ~10 minutes on 2 CPU cores; ``cuda``: a larger preset and longer training;
``quick``: a seconds-long smoke run used by the tests).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dualtrack.data import TusRecDataset, make_splits, parse_dataset_key, save_splits
from dualtrack.evaluation.evaluate import evaluate_model, select_scans, summarise, write_results
from dualtrack.evaluation.metrics import drift_curve, identity_errors, paper_metrics
from dualtrack.inference import predict_trajectory
from dualtrack.predict import predict_file
from dualtrack.reconstruction import Volume, reconstruct_volume, write_nrrd, write_sequence_metafile
from dualtrack.simulate.presets import get_preset
from dualtrack.training.config import config_from_dict, config_to_dict, load_config
from dualtrack.training.distributed import resolve_device
from dualtrack.training.export import load_bundle
from dualtrack.utils import atomic_write

__all__ = ["DemoPlan", "PLANS", "DemoResult", "run_demo", "format_summary", "OUTPUT_ENTRIES"]

log = logging.getLogger(__name__)

OUTPUT_ENTRIES = (
    "data", "splits.json", "runs", "evaluation", "prediction", "volumes", "report", "summary.json",
)
"""What :func:`run_demo` writes inside its output folder (removed first with ``overwrite``)."""

DEMO_LABEL = (
    "Short demo run: small models trained for a few minutes on a small simulated dataset. "
    "These numbers show that the pipeline works end to end; they are not the paper's results "
    "and say little about what DualTrack reaches with full training on real data."
)


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo variant.

    Attributes:
        name: ``quick``, ``cpu`` or ``cuda``.
        preset: simulator preset (``tiny``, ``small``, ``tusrec``).
        subjects, val_subjects, test_subjects: simulated subjects and how many are held out.
        scans: scan names simulated for every subject.
        num_frames: frames per scan (``None`` = the preset's).
        local_crop: ``(h, w)`` centre crop of the local input (random in training).
        local_model, global_model, fusion_model: keyword arguments of the registered models;
            ``dualtrack`` gets all three, so its encoders match the stage-1/2 runs.
        global_stride: the fused model's global-branch stride.
        clip_length, clips_per_scan, local_batch: stage-1 clip sampling.
        local_epochs: epochs of the ``cnn`` and ``pooling`` phases of stage 1.
        global_subset, global_batch, global_epochs: stage-2 subset sampling.
        fusion_max_length, fusion_epochs: stage-3 window length and epochs.
        lr: peak learning rate of every stage.
        recon_spacing_mm: voxel size of the reconstructed volumes.
    """

    name: str
    preset: str
    subjects: int
    val_subjects: int
    test_subjects: int
    scans: tuple[str, ...]
    num_frames: int | None
    local_crop: tuple[int, int]
    local_model: Mapping[str, Any]
    global_model: Mapping[str, Any]
    fusion_model: Mapping[str, Any]
    global_stride: int
    clip_length: int
    clips_per_scan: int
    local_batch: int
    local_epochs: tuple[int, int]
    global_subset: int
    global_batch: int
    global_epochs: int
    fusion_max_length: int
    fusion_epochs: int
    lr: float
    recon_spacing_mm: float


_TINY_LOCAL = dict(cnn_width=4, cnn_layers=[1, 1, 1, 1], local_dim=16, local_heads=2, local_ffn=16,
                   pool_layers=1, local_layers=1, pool_patch=1)
_TINY_GLOBAL = dict(backbone_width=4, backbone_layers=[1, 1, 1, 1], global_size=32, global_dim=16,
                    global_layers=1, global_heads=2, global_ffn=16)
_SMALL_LOCAL = dict(cnn_width=8, cnn_layers=[1, 1, 1, 1], local_dim=32, local_heads=2, local_ffn=64,
                    pool_layers=1, local_layers=2, pool_patch=2)
_SMALL_GLOBAL = dict(backbone_width=8, backbone_layers=[1, 1, 1, 1], global_size=64, global_dim=64,
                     global_layers=2, global_heads=4, global_ffn=128)
_MEDIUM_LOCAL = dict(cnn_width=32, cnn_layers=[1, 1, 1, 1], local_dim=64, local_heads=4, local_ffn=128,
                     pool_layers=2, local_layers=2, pool_patch=2)
_MEDIUM_GLOBAL = dict(backbone_width=32, backbone_layers=[2, 2, 2, 2], global_size=160, global_dim=256,
                      global_layers=4, global_heads=8, global_ffn=512)

PLANS: dict[str, DemoPlan] = {
    "quick": DemoPlan(
        name="quick", preset="tiny", subjects=3, val_subjects=1, test_subjects=1,
        scans=("LH_Per_L_DtP",), num_frames=24, local_crop=(32, 48),
        local_model=_TINY_LOCAL, global_model=_TINY_GLOBAL,
        fusion_model=dict(fusion_dim=16, fusion_layers=1, fusion_heads=2, fusion_ffn=16), global_stride=4,
        clip_length=8, clips_per_scan=2, local_batch=2, local_epochs=(1, 1),
        global_subset=8, global_batch=2, global_epochs=1, fusion_max_length=24, fusion_epochs=1,
        lr=1e-3, recon_spacing_mm=0.5,
    ),
    "cpu": DemoPlan(
        name="cpu", preset="small", subjects=16, val_subjects=1, test_subjects=2,
        scans=("LH_Per_L_DtP", "LH_Par_C_PtD"), num_frames=96, local_crop=(96, 128),
        local_model=_SMALL_LOCAL, global_model=_SMALL_GLOBAL,
        fusion_model=dict(fusion_dim=64, fusion_layers=2, fusion_heads=4, fusion_ffn=128), global_stride=4,
        clip_length=16, clips_per_scan=8, local_batch=4, local_epochs=(16, 4),
        global_subset=24, global_batch=4, global_epochs=20, fusion_max_length=64, fusion_epochs=10,
        lr=5e-4, recon_spacing_mm=0.25,
    ),
    "cuda": DemoPlan(
        name="cuda", preset="tusrec", subjects=12, val_subjects=1, test_subjects=2,
        scans=("LH_Per_L_DtP", "LH_Par_C_PtD", "LH_Per_S_DtP", "RH_Per_C_PtD", "RH_Par_L_DtP",
               "RH_Per_S_PtD"),
        num_frames=300, local_crop=(256, 256),
        local_model=_MEDIUM_LOCAL, global_model=_MEDIUM_GLOBAL,
        fusion_model=dict(fusion_dim=256, fusion_layers=4, fusion_heads=8, fusion_ffn=512), global_stride=8,
        clip_length=16, clips_per_scan=16, local_batch=16, local_epochs=(30, 10),
        global_subset=64, global_batch=8, global_epochs=40, fusion_max_length=300, fusion_epochs=15,
        lr=3e-4, recon_spacing_mm=0.5,
    ),
}
"""Demo variants: ``quick`` (tests), ``cpu`` (default), ``cuda`` (``--device cuda``)."""

METHODS = {"dualtrack": "DualTrack (demo)", "local": "local-only (stage 1)"}


@dataclass
class DemoResult:
    """Where the demo put everything, and what it measured.

    Attributes:
        out_dir: the output folder.
        plan: the :class:`DemoPlan` that ran.
        device: the torch device used.
        dataset: the simulated dataset folder.
        splits: ``{"train", "val", "test"}`` subject ids.
        runs: ``{"local", "global", "fusion"}`` run directories.
        table: metrics table rows (means over the test scans), one per method plus identity.
        per_scan: ``{method: {scan key: {metric: value}}}`` on the test scans.
        test_scan: the sweep predicted and reconstructed (``sub<id>__<name>``).
        prediction: the :func:`~dualtrack.predict.predict_file` output folder.
        volumes: ``{"predicted", "true"}`` NRRD paths. sequence: the Slicer sequence file.
        report: the HTML report. figures: ``{name: png path}``.
        timings: wall seconds per step and ``total``.
    """

    out_dir: Path
    plan: DemoPlan
    device: str
    dataset: Path
    splits: dict[str, list[str]]
    runs: dict[str, Path]
    table: list[dict[str, Any]]
    per_scan: dict[str, dict[str, dict[str, float]]]
    test_scan: str
    prediction: Path
    volumes: dict[str, Path]
    sequence: Path
    report: Path
    figures: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ helpers


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"demo output {out} is an existing file")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"demo output folder {out} exists and is not empty; use --overwrite or another -o"
            )
        for name in OUTPUT_ENTRIES:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _stage_config(base: str, plan: DemoPlan, *, root: Path, splits: Path, device: str, seed: int,
                  model: dict[str, Any], updates: dict[str, dict[str, Any]]) -> Any:
    """A shipped stage config (``local``, ``global``, ``fusion``) resized for the demo."""
    data = config_to_dict(load_config(base))
    data["model"] = model
    data["data"].update(root=str(root), splits=str(splits), local_crop=list(plan.local_crop), num_workers=0,
                        cache_dir=str(root / ".dualtrack_cache"))
    data["optim"].update(lr=plan.lr, warmup_epochs=0)
    # No flip / reverse / random-crop augmentation: a reversed sweep has the same speckle
    # decorrelation but the opposite elevational motion, and in a few minutes of training the
    # small models then learn nothing but the mean motion.
    data["sampling"].update(flip=0.0, reverse=0.0, random_crop=False)
    data["runtime"].update(seed=seed, device=device, val_every=1, val_max_sweeps=4, log_every=5,
                           tensorboard=False, progress=plan.name != "quick")
    for section, values in updates.items():
        data[section].update(values)
    return config_from_dict(data)


def _train_stages(
    plan: DemoPlan, root: Path, splits: Path, runs: Path, device: str, seed: int
) -> dict[str, Path]:
    from dualtrack.training.loop import train

    common = dict(root=root, splits=splits, device=device, seed=seed)
    dirs = {k: runs / k for k in ("local", "global", "fusion")}
    cnn, pooling = plan.local_epochs
    stages = [
        ("local", _stage_config(
            "local", plan, model={"name": "local_only", **plan.local_model}, **common,
            updates={
                "sampling": dict(clip_length=plan.clip_length, clips_per_scan=plan.clips_per_scan,
                                 batch_size=plan.local_batch, stats_items=64),
                "stage": dict(phases=[
                    dict(name="cnn", epochs=cnn, lr=plan.lr, weight_decay=1e-3),
                    dict(name="pooling", epochs=pooling, lr=plan.lr, weight_decay=0.0, freeze=["local_cnn"]),
                ]),
            })),
        ("global", _stage_config(
            "global", plan, model={"name": "global_only", **plan.global_model}, **common,
            updates={
                "sampling": dict(subset_size=plan.global_subset, batch_size=plan.global_batch,
                                 clips_per_scan=max(1, plan.clips_per_scan // 4), stats_items=64),
                "optim": dict(epochs=plan.global_epochs),
            })),
        ("fusion", _stage_config(
            "fusion", plan, **common,
            model={"name": "dualtrack", **plan.local_model, **plan.global_model, **plan.fusion_model,
                   "global_stride": plan.global_stride},
            updates={
                "sampling": dict(max_length=plan.fusion_max_length, batch_size=1, stats_items=64),
                "optim": dict(epochs=plan.fusion_epochs),
                "stage": dict(local_from=str(dirs["local"]), global_from=str(dirs["global"]), finetune=False),
            })),
    ]
    for k, (stage, cfg) in enumerate(stages, start=1):
        log.info("[train %d/3] stage %s: %s", k, stage, cfg.model.name)
        result = train(cfg, dirs[stage], argv=["dualtrack", "demo"])
        log.info("stage %s: %d steps, best validation GPE %.3g mm", stage, result.state.step, result.best_gpe)
    return dirs


def _identity_table(dataset: TusRecDataset, scans: list[tuple[str, str]]) -> dict[str, dict[str, float]]:
    """Errors of the trivial "no motion" prediction (``G_pred[i] = I``), keyed like the evaluation tables."""
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


def _evaluate(runs: dict[str, Path], dataset: TusRecDataset, splits: Path, device: str, out: Path
              ) -> dict[str, dict[str, dict[str, float]]]:
    """Per-scan errors ``{method: {scan: {metric: value}}}`` on the test split (files in ``out``)."""
    scans = select_scans(dataset, "test", splits)
    tables = {}
    for method, run in (("dualtrack", runs["fusion"]), ("local", runs["local"])):
        bundle = load_bundle(run, device)
        ev = evaluate_model(bundle.model, dataset, scans, crop=bundle.crop, device=device, tusrec=True)
        ev.info.update(model=bundle.name, weights=str(bundle.source), split="test", note=DEMO_LABEL)
        write_results(ev, out / method)
        tables[method] = ev.table
        log.info("%s: mean GPE %.3g mm over %d test scans", METHODS[method], ev.summary["GPE"]["mean"],
                 len(ev.table))
    tables["identity"] = _identity_table(dataset, scans)
    return tables


TABLE_COLUMNS = (
    ("GPE", "GPE (mm)"), ("LPE", "LPE (mm)"), ("FDR", "FDR (%)"), ("max_drift", "max drift (mm)"),
    ("tusrec_GPE", "GPE all-pixel (mm)"), ("tusrec_LPE", "LPE all-pixel (mm)"), ("tusrec_GLE", "GLE (mm)"),
    ("tusrec_LLE", "LLE (mm)"), ("final_score", "TUS-REC score"),
)


def _table(tables: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[dict[str, Any]]:
    """One row per method: means over the test scans (NaNs ignored) of :data:`TABLE_COLUMNS`."""
    labels = {**METHODS, "identity": "identity (no motion)"}
    rows = []
    for method, table in tables.items():
        summary = summarise(table)
        row: dict[str, Any] = {"method": labels[method], "test scans": len(table)}
        row.update({label: summary[key]["mean"] for key, label in TABLE_COLUMNS if key in summary})
        rows.append(row)
    return rows


def _pick_test_scan(tables: Mapping[str, Any]) -> str:
    """A typical test sweep for the figures: among the perpendicular sweeps (their frames are
    cross-sections of the arm; all sweeps if there are none), the one with the median DualTrack
    GPE (the lower middle one for an even count)."""
    table = tables["dualtrack"]
    keys = [k for k in sorted(table) if "_Per_" in k] or sorted(table)
    ranked = sorted(keys, key=lambda k: table[k]["GPE"])
    return ranked[(len(ranked) - 1) // 2]


def _figures(report_dir: Path, sweep: Any, poses: Mapping[str, np.ndarray], vols: dict[str, Volume],
             tables: Mapping[str, Any]) -> dict[str, Path]:
    """The report's PNGs for one test sweep: ``poses`` holds ``(N, 4, 4)`` global poses of
    ``"true"`` and of every method in :data:`METHODS`."""
    from dualtrack.reconstruction import report

    key = sweep.key
    s_mat = sweep.calibration.scale
    g_gt = poses["true"]
    figs = {
        "trajectory": report.plot_trajectory_3d(
            g_gt, poses["dualtrack"], sweep.shape, s_mat, report_dir / "trajectory_dualtrack.png",
            title=f"{key}: true vs DualTrack (demo) trajectory"),
        "trajectory_local": report.plot_trajectory_3d(
            g_gt, poses["local"], sweep.shape, s_mat, report_dir / "trajectory_local_only.png",
            title=f"{key}: true vs local-only trajectory"),
        "drift": report.plot_drift(
            {METHODS[m]: drift_curve(g_gt, poses[m], sweep.shape, s_mat) for m in METHODS},
            report_dir / "drift.png", title=f"{key}: drift of the image centre", frame_rate_hz=20.0),
    }
    figs["slices"] = report.plot_orthogonal_slices(
        vols["predicted"], vols["true"], report_dir / "slices.png",
        labels=("predicted trajectory", "true trajectory"),
        title=f"{key}: volume compounded with the predicted vs the true trajectory")
    figs["boxplot"] = report.plot_boxplots(
        {METHODS[m]: tables[m] for m in METHODS} | {"identity": tables["identity"]}, "GPE",
        report_dir / "gpe_boxplot.png", title="GPE per test scan (5-point, paper definition)")
    return figs


# ------------------------------------------------------------------------------------ main


def run_demo(
    out: str | os.PathLike = "demo_output",
    device: str = "cpu",
    preset: str | None = None,
    overwrite: bool = False,
    seed: int = 0,
    quick: bool = False,
) -> DemoResult:
    """Simulate, train, evaluate, predict, reconstruct and report (see the module docstring).

    Args:
        out: output folder (new or empty, unless ``overwrite``).
        device: ``"cpu"`` (plan ``cpu``) or ``"cuda"``/``"cuda:N"`` (plan ``cuda``).
        preset: override the plan's simulator preset (``tiny``, ``small``, ``tusrec``); the model
            crop must fit the preset's frames.
        overwrite: remove the demo's earlier outputs in ``out`` (only :data:`OUTPUT_ENTRIES`).
        seed: seed of the simulation, the split and the training.
        quick: the seconds-long variant (tiny preset, one epoch per stage) used by the tests.

    Returns:
        :class:`DemoResult`.

    Raises:
        FileExistsError: ``out`` is not empty and ``overwrite`` is False.
        ValueError: CUDA requested but not available, an unknown preset, or a preset whose frames
            are smaller than the plan's model input crop.
    """
    t_start = time.perf_counter()
    dev = resolve_device(device)
    plan = PLANS["quick" if quick else ("cuda" if dev.type == "cuda" else "cpu")]
    if preset is not None:
        plan = dataclasses.replace(plan, preset=preset)
    frame = get_preset(plan.preset)
    if plan.local_crop[0] > frame.height or plan.local_crop[1] > frame.width:
        raise ValueError(
            f"the {plan.preset!r} preset's {frame.height}x{frame.width} frames are smaller than the "
            f"{plan.name!r} plan's {plan.local_crop[0]}x{plan.local_crop[1]} model input crop"
        )
    out = Path(out)
    _prepare_out(out, overwrite)
    timings: dict[str, float] = {}
    log.info("dualtrack demo (%s plan on %s) -> %s", plan.name, dev, out)

    from dualtrack.simulate.dataset import simulate_dataset

    t = time.perf_counter()
    log.info("[1/6] simulating %d subjects x %d scans (%s preset)",
             plan.subjects, len(plan.scans), plan.preset)
    root = simulate_dataset(out / "data", plan.subjects, plan.preset, seed=seed, device=str(dev),
                            scans=plan.scans, num_frames=plan.num_frames, progress=plan.name != "quick")
    dataset = TusRecDataset(root)
    timings["simulate"] = time.perf_counter() - t

    log.info("[2/6] subject-level split")
    splits = make_splits(dataset.subjects, val=plan.val_subjects, test=plan.test_subjects, seed=seed)
    splits_path = save_splits(out / "splits.json", splits)
    log.info("train %s, validation %s, test %s", splits.train, splits.val, splits.test)

    t = time.perf_counter()
    log.info("[3/6] training DualTrack stages local -> global -> fusion")
    runs = _train_stages(plan, root, splits_path, out / "runs", str(dev), seed)
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    log.info("[4/6] evaluating on the held-out test subjects %s", splits.test)
    tables = _evaluate(runs, dataset, splits_path, str(dev), out / "evaluation")
    table = _table(tables)
    with atomic_write(out / "evaluation" / "table.json") as tmp:
        tmp.write_text(json.dumps({"note": DEMO_LABEL, "table": table}, indent=2) + "\n", encoding="utf-8")
    timings["evaluate"] = time.perf_counter() - t

    t = time.perf_counter()
    key = _pick_test_scan(tables)
    subject, name = parse_dataset_key(key)
    log.info("[5/6] predicting and reconstructing %s", key)
    pred = predict_file(dataset.frames_path(subject, name), runs["fusion"], out / "prediction",
                        device=str(dev), tusrec_metrics=True, overwrite=True)
    sweep = dataset.load(subject, name)
    s_mat = sweep.calibration.scale
    vol_dir = out / "volumes"
    vols: dict[str, Volume] = {}
    paths: dict[str, Path] = {}
    for which, g in (("predicted", pred.global_), ("true", sweep.global_transforms())):
        vols[which] = reconstruct_volume(sweep.frames, g, s_mat, spacing_mm=plan.recon_spacing_mm,
                                         device=str(dev))
        paths[which] = write_nrrd(vol_dir / f"{which}.nrrd", vols[which], custom_fields={
            "dualtrack_scan": key, "dualtrack_poses": "DualTrack (demo) prediction" if which == "predicted"
            else "tracker ground truth"})
    sequence = write_sequence_metafile(vol_dir / "sweep.seq.mha", sweep.frames, pred.global_, s_mat,
                                       extra_poses={"TrueImage": sweep.global_transforms()})
    local = load_bundle(runs["local"], dev)
    poses = {"true": sweep.global_transforms(), "dualtrack": pred.global_,
             "local": predict_trajectory(local.model, np.asarray(sweep.frames), spacing=sweep.spacing,
                                         device=dev, crop=local.crop).global_}
    timings["predict_reconstruct"] = time.perf_counter() - t

    t = time.perf_counter()
    log.info("[6/6] writing the report")
    from dualtrack.reconstruction.report import write_html_report

    report_dir = out / "report"
    figs = _figures(report_dir, sweep, poses, vols, tables)
    timings["report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    notes = [
        DEMO_LABEL,
        f"Plan '{plan.name}' on {dev}: {plan.subjects} simulated subjects ({plan.preset} preset, "
        f"{len(plan.scans)} scans each, {plan.num_frames or 'preset'} frames per scan); train subjects "
        f"{', '.join(splits.train)}, validation {', '.join(splits.val)}, test {', '.join(splits.test)}. "
        f"Wall time {timings['total'] / 60:.1f} min (training {timings['train'] / 60:.1f} min).",
        "Metrics are means over the test scans. GPE/LPE: 5-point global/local pose errors (paper "
        "definition); FDR: final drift over the straight-line distance; all-pixel GPE/LPE and landmark "
        "GLE/LLE: the official TUS-REC errors; TUS-REC score: mean of 1 - error / identity error "
        "(1 = perfect, 0 = no better than predicting no motion). The identity row is the trivial "
        "'no motion' prediction.",
        f"Figures show test sweep {key} (of the perpendicular test sweeps, the one with the median "
        f"DualTrack GPE). Volumes (3D Slicer): {paths['predicted'].name}, "
        f"{paths['true'].name} and the tracked sweep {sequence.name} in {vol_dir}.",
    ]
    images = [
        ("Probe trajectory of the test sweep: true vs DualTrack (demo); frame outlines every few frames.",
         figs["trajectory"]),
        ("The same sweep: true vs local-only model.", figs["trajectory_local"]),
        ("Drift of the image centre along the sweep (distance between predicted and true position).",
         figs["drift"]),
        ("Central orthogonal slices of the volume compounded with the predicted (top) and with the true "
         "(bottom) trajectory, each on its own grid in frame-0 axes (same grey window, same voxel size).",
         figs["slices"]),
        ("GPE per test scan for each method (points = scans).", figs["boxplot"]),
    ]
    report_path = write_html_report(report_dir / "report.html", "dualtrack demo: short run on simulated data",
                                    table, images, notes)
    result = DemoResult(
        out_dir=out, plan=plan, device=str(dev), dataset=Path(root), splits=splits.to_dict(), runs=runs,
        table=table, per_scan=tables, test_scan=key, prediction=pred.out_dir, volumes=paths,
        sequence=sequence, report=report_path, figures=figs, timings=timings,
    )
    with atomic_write(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(_result_json(result), indent=2) + "\n", encoding="utf-8")
    log.info("demo finished in %.1f min: %s", timings["total"] / 60, report_path)
    return result


def _result_json(res: DemoResult) -> dict[str, Any]:
    return {
        "note": DEMO_LABEL,
        "plan": dataclasses.asdict(res.plan),
        "device": res.device,
        "splits": res.splits,
        "table": res.table,
        "test_scan": res.test_scan,
        "paths": {
            "dataset": str(res.dataset), "runs": {k: str(v) for k, v in res.runs.items()},
            "prediction": str(res.prediction), "volumes": {k: str(v) for k, v in res.volumes.items()},
            "sequence": str(res.sequence), "report": str(res.report),
        },
        "timings_s": res.timings,
    }


def format_summary(res: DemoResult) -> str:
    """A short plain-text summary: metrics table, timings and where the outputs are."""
    cols = ["GPE (mm)", "LPE (mm)", "FDR (%)", "max drift (mm)", "GPE all-pixel (mm)", "TUS-REC score"]
    width = max(len(r["method"]) for r in res.table) + 2
    lines = [
        "dualtrack demo: SHORT DEMO RUN on simulated data (small models, minutes of training);",
        "not the paper's numbers.",
        "",
        f"test scans: {res.table[0]['test scans']} (subjects {', '.join(res.splits['test'])}); means:",
        "".ljust(width) + "".join(c.rjust(20) for c in cols),
    ]
    for row in res.table:
        lines.append(row["method"].ljust(width) + "".join(
            (f"{row[c]:.3g}" if c in row and math.isfinite(row[c]) else "n/a").rjust(20) for c in cols))
    t = res.timings
    lines += [
        "",
        f"wall time {t['total'] / 60:.1f} min: simulate {t['simulate']:.0f} s, train {t['train']:.0f} s, "
        f"evaluate {t['evaluate']:.0f} s, predict+reconstruct {t['predict_reconstruct']:.0f} s, "
        f"report {t['report']:.0f} s ({res.device}, plan {res.plan.name})",
        "",
        f"report:      {res.report}",
        f"volumes:     {res.volumes['predicted']} (predicted), {res.volumes['true']} (true)",
        f"sequence:    {res.sequence} (open in 3D Slicer)",
        f"trajectory:  {res.prediction / 'trajectory.h5'} (+ .csv, metrics.json)",
        f"runs:        {', '.join(str(p) for p in res.runs.values())}",
        f"dataset:     {res.dataset}",
    ]
    return "\n".join(lines)
