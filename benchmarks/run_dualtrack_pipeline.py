"""DualTrack's stages and ablations: training throughput, full-sweep inference, test errors; one command.

For a GPU machine with a per-command time limit. One invocation:

1. simulates the dataset (``--preset``, ``--subjects`` x 24 scans; or reuses ``--data``), subject by
   subject, and fixes the subject split (``<out>/splits.json``);
2. trains, through :mod:`dualtrack.evaluation.benchmark` (the same plan, run folders, resume and reuse
   rules as ``dualtrack benchmark``), DualTrack's stages local -> global -> fusion and the ``coupled``
   ablation; ``local_only`` and ``global_only`` are DualTrack's own local and global stages, as in the
   paper. The models are those of ``--config`` (default: the full ``benchmark`` config), restricted to
   these four;
3. reads each stage's training throughput from its run's ``metrics.csv`` (clips/s for the local stage
   and ``coupled``'s clips, subsets/s for the global stage, sweeps/s for fusion; median over the logged
   steps, per phase);
4. evaluates the four models on the held-out test subjects (GPE, LPE, FDR, max drift, Wilcoxon tests,
   the global-branch check) with :func:`dualtrack.evaluation.benchmark.run_benchmark`, which reuses
   the finished runs;
5. times full-sweep inference (``benchmarks/bench_inference.py``: ``Predictor.predict`` of the
   full-size ``dualtrack`` architecture on a 546-frame 480 x 640 sweep, peak GPU memory); the time does
   not depend on the weights, so random weights of the same architecture are used;
6. writes ``<out>/pipeline.json`` and ``<out>/pipeline.md``.

**Budget and resuming.** ``--budget-minutes`` bounds one invocation: simulation and training stop
cleanly at ``budget - reserve`` minutes (training saves ``last.pt`` and returns), the pages are written
with ``status: incomplete`` and the exit code is 3. Running the same command again continues where it
stopped (finished scans and stages are reused, an interrupted stage resumes exactly); the per-stage
training times add up over invocations. Evaluation and the inference timing run once training is
complete and are kept in ``pipeline.json`` (``--redo-eval`` repeats them).

**The whole Table 1 under the budget.** ``--all-models`` trains every model of ``--config`` (the four
baselines too) the same way. Once it exits with 0, ``benchmarks/run_paper_table.py`` with the same
``--config``, ``--preset``, ``--subjects``, ``--num-frames``, ``--seed``, ``--val``, ``--test``,
``--epoch-scale``, ``--workers`` and ``--out`` reuses every run and only evaluates and writes the results
page (the split is the same: both use ``make_splits`` with seed 0).

    # GPU machine, 10-minute commands: repeat until it exits with 0
    python benchmarks/run_dualtrack_pipeline.py --device cuda --preset small --subjects 16 \
        --epoch-scale 0.01 --budget-minutes 9 --out benchmark_output/pipeline_small

    # pipeline check on a CPU (tiny models and data, about 2 minutes)
    OMP_NUM_THREADS=2 python benchmarks/run_dualtrack_pipeline.py --device cpu --config benchmark_tiny \
        --preset tiny --subjects 4 --val 1 --test 1 --scans LH_Par_L_DtP RH_Per_C_PtD --num-frames 24 \
        --infer-frames 64 --infer-size 96 128 --infer-crop 32 48 --infer-model dualtrack_tiny \
        --out benchmark_output/pipeline_tiny

Exit codes: 0 complete, 3 stopped by the budget (run again), 2 bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_inference  # noqa: E402
from _common import write_json  # noqa: E402
from dualtrack import __version__  # noqa: E402
from dualtrack.data import TusRecDataset  # noqa: E402
from dualtrack.data.splits import load_splits, make_splits, save_splits  # noqa: E402
from dualtrack.evaluation.benchmark import (  # noqa: E402
    BenchmarkConfig,
    load_benchmark_config,
    plan_benchmark,
    run_benchmark,
)
from dualtrack.simulate import get_preset, simulate_dataset  # noqa: E402
from dualtrack.training.config import ConfigError  # noqa: E402
from dualtrack.training.pipeline import PipelinePlan, run_pipeline  # noqa: E402
from dualtrack.training.runs import git_commit  # noqa: E402
from dualtrack.utils import atomic_write  # noqa: E402
from run_paper_table import dataset_bytes, device_name, local_crop  # noqa: E402

log = logging.getLogger("run_dualtrack_pipeline")

MODELS = ("local_only", "global_only", "coupled", "dualtrack")
"""The models of this pipeline (names in the benchmark configs)."""
UNITS = {"clip": "clips/s", "subset": "subsets/s", "sweep": "sweeps/s"}
METRICS = ("GPE", "LPE", "FDR", "max_drift")
STATS = ("mean", "std")
EXIT_INCOMPLETE = 3


class Deadline:
    """Wall-clock deadline of one invocation (``time.monotonic`` seconds)."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left (negative once past)."""
        return self.end - time.monotonic()


# ------------------------------------------------------------------------------------------ data


def simulate_until(root: Path, args: argparse.Namespace, deadline: Deadline) -> tuple[bool, float]:
    """Simulate ``args.subjects`` subjects into ``root`` one subject at a time (finished scans are skipped).

    Returns:
        ``(complete, seconds)``: whether every subject is on disk, and the time spent.
    """
    start = time.perf_counter()
    for n in range(1, args.subjects + 1):
        if deadline.left() <= 0:
            return False, time.perf_counter() - start
        simulate_dataset(
            root, n, args.preset, protocol="2024", seed=args.seed, device=args.device, scans=args.scans,
            num_frames=args.num_frames, progress=False,
        )  # fmt: skip
    return True, time.perf_counter() - start


def benchmark_config(args: argparse.Namespace, data_root: Path, splits_path: Path) -> BenchmarkConfig:
    """``--config`` (only :data:`MODELS` unless ``--all-models``) on ``data_root`` and the pinned split.

    The training overrides are those of ``benchmarks/run_paper_table.py`` for the same arguments, so the
    runs made here are reused by it (and the other way round).

    Raises:
        ConfigError: the config lacks one of the models, or a bad config.
    """
    cfg = load_benchmark_config(
        args.config,
        [
            f"epoch_scale={args.epoch_scale}",
            f"evaluation.device={args.device}",
            "evaluation.reference=dualtrack",
        ],
    )
    missing = [m for m in MODELS if m not in [x.name for x in cfg.models]]
    if missing:
        raise ConfigError(f"benchmark config {args.config!r} lacks {missing}; it needs {list(MODELS)}")
    pr = get_preset(args.preset)
    crop = local_crop(pr.height, pr.width)
    data = dataclasses.replace(cfg.data, root=str(data_root), simulate=None, splits=str(splits_path))
    overrides = [*cfg.train_overrides, f"runtime.device={args.device}", f"data.num_workers={args.workers}"]
    if args.config == "benchmark":
        overrides.append(f"data.local_crop=[{crop[0]}, {crop[1]}]")
    return dataclasses.replace(
        cfg, models=[m for m in cfg.models if args.all_models or m.name in MODELS], data=data,
        train_overrides=overrides,
        output=str(args.out.resolve()), runs_dir=None,
    )  # fmt: skip


def pinned_splits(args: argparse.Namespace, root: Path) -> Path:
    """``<out>/splits.json``: the subject split, made once from the dataset's subjects and then kept.

    Raises:
        ConfigError: an existing split file that names subjects the dataset lacks.
    """
    path = args.out / "splits.json"
    subjects = TusRecDataset(root).subjects
    if path.is_file():
        splits = load_splits(path)
        unknown = sorted(set(splits.all) - set(subjects))
        if unknown:
            raise ConfigError(f"{path} names subjects {unknown} that {root} lacks; use another --out")
        return path
    try:
        splits = make_splits(subjects, val=args.val, test=args.test, seed=args.split_seed)
    except ValueError as exc:
        raise ConfigError(f"cannot split the {len(subjects)} subjects of {root}: {exc}") from None
    if not splits.train:
        raise ConfigError(f"--val {args.val} --test {args.test} leave no training subject of {len(subjects)}")
    save_splits(path, splits)
    return path


# -------------------------------------------------------------------------------------- training


def stage_throughput(run_dir: Path, warmup: int) -> dict[str, Any]:
    """Median training throughput per phase from a run's ``metrics.csv`` (items/s over logged steps).

    ``warmup`` logged rows of each phase are skipped (first batches, cache building), unless that leaves
    none. Returns ``{"phases": {phase: {"items_per_s": ..., "logged_steps": n}}, "steps": last step}``.
    """
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return {"phases": {}, "steps": 0}
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("items_per_s")]
    phases: dict[str, list[float]] = {}
    for r in rows:
        phases.setdefault(r["phase"], []).append(float(r["items_per_s"]))
    out = {}
    for name, rates in phases.items():
        kept = rates[warmup:] or rates
        out[name] = {"items_per_s": statistics.median(kept), "logged_steps": len(kept)}
    return {"phases": out, "steps": int(rows[-1]["step"]) if rows else 0}


def stage_report(plan: PipelinePlan, this_run: dict, previous: dict, warmup: int) -> list[dict]:
    """One entry per stage: config, unit, batch, steps, per-phase throughput, training seconds so far."""
    old = {s["key"]: s for s in previous.get("stages", [])}
    report = []
    for job in plan.jobs:
        cfg = job.config
        now = this_run.get(job.key, {"action": "pending", "seconds": 0.0, "finished": False})
        tp = stage_throughput(job.run_dir, warmup)
        report.append({
            "key": job.key,
            "model": cfg.model.name,
            "mode": cfg.sampling.mode,
            "unit": UNITS[cfg.sampling.mode],
            "batch_size": cfg.sampling.batch_size,
            "run_dir": str(job.run_dir),
            "finished": now["finished"],
            "last_action": now["action"],
            "steps": tp["steps"],
            "phases": tp["phases"],
            "train_seconds": old.get(job.key, {}).get("train_seconds", 0.0) + now["seconds"],
        })  # fmt: skip
    return report


# ---------------------------------------------------------------------------------- evaluation


def evaluate(cfg: BenchmarkConfig, args: argparse.Namespace) -> dict:
    """Held-out test errors of the four models, Wilcoxon p-values and the global check (all runs reused)."""
    result = run_benchmark(cfg, args.out, progress=False, argv=sys.argv)
    keep = ("model", "label", "n_scans", "parameters")
    rows = [
        {**{k: r[k] for k in keep}, **{f"{m}_{s}": r.get(f"{m}_{s}") for m in METRICS for s in STATS}}
        for r in result.rows
    ]
    return {
        "split": cfg.evaluation.split,
        "rows": rows,
        "wilcoxon_gpe": {w["model"]: w["p_value"] for w in result.wilcoxon if w["metric"] == "GPE"},
        "global_check": [
            {k: g.get(k) for k in ("model", "mode", "GPE", "delta_GPE", "p_value_GPE", "prediction_change")}
            for g in result.global_check
        ],
        "table_md": result.files["table.md"].read_text(encoding="utf-8"),
        "files": str(args.out),
    }


def measure_inference(args: argparse.Namespace) -> dict:
    """``bench_inference.run`` for the ``--infer-*`` sweep (random weights of ``--infer-model``)."""
    return bench_inference.run(
        args.infer_model, args.device, args.infer_frames, args.infer_size[0], args.infer_size[1],
        tuple(args.infer_crop), args.infer_chunk, args.infer_precision, args.infer_repeats,
    )  # fmt: skip


def _inference_key(args: argparse.Namespace) -> dict:
    return {
        "model": args.infer_model, "frames": args.infer_frames, "size": list(args.infer_size),
        "crop": list(args.infer_crop), "chunk": args.infer_chunk, "precision": args.infer_precision,
        "device": args.device,
    }  # fmt: skip


# -------------------------------------------------------------------------------------- reports


def _fmt(x: Any, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def pipeline_markdown(report: dict) -> str:
    """``pipeline.md``: status, dataset, per-stage throughput, inference, the test table."""
    d = report["dataset"]
    lines = [
        "# DualTrack pipeline on simulated data",
        "",
        f"**Status: {report['status']}**"
        + ("" if report["status"] == "complete" else " (run the same command again)"),
        "",
        f"* device: {report['device_name']}; torch {report['torch']}; dualtrack {report['dualtrack']}, "
        f"git {report['git']}",
        f"* command: `{report['command']}`",
        f"* invocations: {len(report['invocations'])}, total wall time "
        f"{sum(i['wall_s'] for i in report['invocations']) / 60:.1f} min",
        f"* dataset: preset `{d['preset']}` ({d['height']} x {d['width']} px), {d['subjects']} subjects x "
        f"{d['scans_per_subject']} scans, {d['frames'] or 'preset default'} frames a scan, seed {d['seed']}; "
        f"split train/val/test = {d['split']}; simulation {d['simulation_s'] / 60:.1f} min",
        f"* benchmark config `{report['config']}`, epoch scale {report['epoch_scale']}",
        "",
        "## Training throughput per stage",
        "",
        "| Stage | Model | Phase | Throughput | Batch | Steps | Training time | State |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in report["stages"]:
        phases = s["phases"] or {"–": {"items_per_s": None}}
        for name, p in phases.items():
            lines.append(
                f"| {s['key']} | {s['model']} | {name} | {_fmt(p['items_per_s'], 1)} {s['unit']} | "
                f"{s['batch_size']} | {s['steps']} | {s['train_seconds'] / 60:.1f} min | "
                f"{'finished' if s['finished'] else s['last_action']} |"
            )
    inf = report.get("inference")
    lines += ["", "## Full-sweep inference", ""]
    if inf:
        lines += [
            f"`Predictor.predict` of `{inf['model']}` ({inf['parameters'] / 1e6:.1f} M parameters, random "
            f"weights), {inf['frames']} frames of {inf['shape'][0]} x {inf['shape'][1]}, local crop "
            f"{inf['crop']}, chunks of {inf['chunk_size'] or 'automatic'} frames, "
            f"precision {inf['precision']}, "
            f"on {inf['device_name']}:",
            "",
            f"* time: **{inf['seconds_median']:.3f} s** (median of {len(inf['seconds_all'])}; "
            f"{inf['ms_per_frame']:.2f} ms a frame)",
            f"* peak memory: **{inf['peak_memory_mb'] / 1024:.2f} GiB** ({inf['memory_method']})",
            "* paper (RTX Quadro 6000): 546 frames of 480 x 640 in 0.73 s, < 7 GB",
        ]
    else:
        lines.append("Not measured yet (runs once training is complete).")
    ev = report.get("evaluation")
    lines += ["", "## Held-out test errors", ""]
    if ev:
        lines += [
            "| Model | Scans | GPE (mm) | LPE (mm) | FDR (%) | Max drift (mm) | Wilcoxon p (GPE) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in ev["rows"]:
            cells = " | ".join(f"{_fmt(r[f'{m}_mean'], 3)} ± {_fmt(r[f'{m}_std'], 3)}" for m in METRICS)
            p = ev["wilcoxon_gpe"].get(r["model"])
            lines.append(f"| {r['label']} | {r['n_scans']} | {cells} | {'–' if p is None else f'{p:.2g}'} |")
        lines += ["", "Global-branch check (GPE with the global input replaced, mm):", ""]
        lines += [
            "| Model | Global input | GPE | ΔGPE | p | Prediction change |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {g['model']} | {g['mode']} | {_fmt(g['GPE'], 3)} | {_fmt(g['delta_GPE'], 3)} | "
            f"{_fmt(g['p_value_GPE'], 3)} | {_fmt(g['prediction_change'], 3)} |"
            for g in ev["global_check"]
        ]
        lines += ["", f"Full benchmark output (per-scan CSVs, box plots, summary.md): `{ev['files']}`"]
    else:
        lines.append("Not evaluated yet (runs once training is complete).")
    return "\n".join(lines) + "\n"


def write_reports(out: Path, report: dict) -> None:
    """``pipeline.json`` and ``pipeline.md`` (atomic)."""
    write_json(out / "pipeline.json", report)
    with atomic_write(out / "pipeline.md") as tmp:
        tmp.write_text(pipeline_markdown(report), encoding="utf-8")


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="torch device (default cuda)")
    p.add_argument("--preset", default="small", help="simulator preset: tiny, small, tusrec (default small)")
    p.add_argument("--subjects", type=int, default=16, help="simulated subjects (default 16)")
    p.add_argument("--scans", nargs="+", default=None, help="only these scans (default all 24)")
    p.add_argument("--num-frames", type=int, default=None, help="frames per scan (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed")
    p.add_argument("--data", type=Path, default=None, help="use this dataset folder instead of simulating")
    p.add_argument("--val", type=int, default=2, help="validation subjects (default 2)")
    p.add_argument("--test", type=int, default=3, help="held-out test subjects (default 3)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the subject split")
    p.add_argument("--config", default="benchmark", help="benchmark config (default benchmark)")
    p.add_argument("--epoch-scale", type=float, default=0.01, help="scales every stage's epochs")
    p.add_argument("--workers", type=int, default=8, help="data loader workers per stage (default 8)")
    p.add_argument("--budget-minutes", type=float, default=9.0, help="wall-clock budget of this invocation")
    p.add_argument(
        "--reserve-minutes", type=float, default=1.5,
        help="part of the budget kept for evaluation, inference timing and reports (default 1.5)",
    )  # fmt: skip
    p.add_argument("--throughput-warmup", type=int, default=3, help="logged steps of a phase left out")
    p.add_argument("--infer-model", default="dualtrack", help="architecture timed (default dualtrack)")
    p.add_argument("--infer-frames", type=int, default=546, help="frames of the timed sweep (default 546)")
    p.add_argument("--infer-size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    p.add_argument("--infer-crop", type=int, nargs=2, default=[256, 256], metavar=("H", "W"))
    p.add_argument("--infer-chunk", type=int, default=None,
                   help="frames per local CNN chunk (default: the automatic plan)")
    p.add_argument("--infer-repeats", type=int, default=3, help="timed calls (default 3)")
    p.add_argument("--infer-precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="inference precision (default auto)")
    p.add_argument(
        "--all-models", action="store_true",
        help="train and evaluate every model of --config (the paper's whole Table 1) under the budget",
    )  # fmt: skip
    p.add_argument("--skip-inference", action="store_true", help="do not time inference")
    p.add_argument("--redo-eval", action="store_true", help="evaluate and time inference again")
    p.add_argument("--out", type=Path, default=Path("benchmark_output/pipeline"), help="output folder")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is available (use --device cpu for a pipeline check)")
    if args.subjects < 2 or args.budget_minutes <= 0:
        p.error("--subjects must be >= 2 and --budget-minutes > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    wall_start = time.perf_counter()
    budget = Deadline(60 * args.budget_minutes)
    work = Deadline(60 * (args.budget_minutes - args.reserve_minutes))
    args.out.mkdir(parents=True, exist_ok=True)
    previous = {}
    if (args.out / "pipeline.json").is_file():
        previous = json.loads((args.out / "pipeline.json").read_text(encoding="utf-8"))
    pr = get_preset(args.preset)
    try:
        if args.data is None:
            root = args.out / "data"
            need = dataset_bytes(args.preset, args.subjects, args.num_frames)
            log.info("dataset: %d subjects, preset %s, about %.1f GB with the frame cache",
                     args.subjects, args.preset, need / 1e9)  # fmt: skip
            sim_done, sim_s = simulate_until(root, args, work)
        else:
            root, sim_done, sim_s = args.data, True, 0.0
        sim_total = previous.get("dataset", {}).get("simulation_s", 0.0) + sim_s
        stages: list[dict] = previous.get("stages", [])
        evaluation, inference, status = previous.get("evaluation"), previous.get("inference"), "incomplete"
        split = None
        if sim_done:
            splits_path = pinned_splits(args, root)
            s = load_splits(splits_path)
            split = f"{len(s.train)}/{len(s.val)}/{len(s.test)}"
            cfg = benchmark_config(args, root, splits_path)
            plan = plan_benchmark(cfg, root, splits_path, s)
            jobs = run_pipeline(plan, s, sys.argv, deadline=work.end)
            this_run = {j.key: {"action": j.action, "seconds": j.seconds, "finished": j.finished}
                        for j in jobs}
            stages = stage_report(plan, this_run, previous, args.throughput_warmup)
            trained = any(v["action"] in ("train", "resume") for v in this_run.values())
            if all(v["finished"] for v in this_run.values()):
                if evaluation is None or trained or args.redo_eval:
                    evaluation = evaluate(cfg, args) if budget.left() > 0 else None
                key = _inference_key(args)
                stale = inference is None or inference.get("key") != key or args.redo_eval
                if not args.skip_inference and stale and budget.left() > 0:
                    inference = {"key": key, **measure_inference(args)}
                done_inference = args.skip_inference or inference is not None
                status = "complete" if evaluation is not None and done_inference else "incomplete"
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = {
        "status": status,
        "command": " ".join(sys.argv),
        "device_name": device_name(args.device),
        "torch": torch.__version__,
        "dualtrack": __version__,
        "git": git_commit(),
        "config": args.config,
        "epoch_scale": args.epoch_scale,
        "dataset": {
            "root": str(root),
            "preset": args.preset,
            "height": pr.height,
            "width": pr.width,
            "subjects": args.subjects,
            "scans_per_subject": len(args.scans) if args.scans else 24,
            "frames": args.num_frames,
            "seed": args.seed,
            "split": split,
            "simulation_s": sim_total,
        },  # fmt: skip
        "stages": stages,
        "inference": inference,
        "evaluation": evaluation,
        "invocations": [
            *previous.get("invocations", []),
            {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_s": time.perf_counter() - wall_start},
        ],
    }
    write_reports(args.out, report)
    print(pipeline_markdown(report))
    return 0 if status == "complete" else EXIT_INCOMPLETE


if __name__ == "__main__":
    sys.exit(main())
