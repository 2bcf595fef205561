"""The paper's Table 1 on simulated data, with one command (meant for a GPU machine).

Simulates a TUS-REC-2024-like dataset (``--subjects`` x 24 scans, a simulator preset), runs
``dualtrack benchmark`` with the full benchmark config (four baselines, DualTrack local -> global ->
fusion, the local-only / global-only / coupled ablations), and writes a ``docs/results.md``-style
page: provenance (GPU, versions, commit, command, wall time), the dataset, the training budget, the
table in the paper's form, paired Wilcoxon tests, the global-branch check and the box plots (copied
next to the page). Everything is resumable: run the same command again after an interruption.

    python benchmarks/run_paper_table.py --preset small --subjects 46 --epoch-scale 0.02 \
        --device cuda --out benchmark_output/paper_table_small --results-md docs/results.md

    # pipeline check on a CPU (tiny models and data, a few minutes):
    OMP_NUM_THREADS=2 python benchmarks/run_paper_table.py --config benchmark_tiny --preset tiny \
        --subjects 5 --num-frames 24 --device cpu --out benchmark_output/paper_table_tiny \
        --results-md benchmark_output/paper_table_tiny/results.md

The paper's epochs (``--epoch-scale 1``) take days per model on one GPU; ``--epoch-scale`` scales
every stage (at least one epoch each). With the full ``benchmark`` config the local crop follows the
preset's frame size (256 x 256 for ``tusrec``, the largest multiple of 16 up to 256 otherwise); other
configs keep their own crops (the tiny one crops 32 x 48 for every model).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from _common import cpu_name, write_json
from dualtrack import __version__
from dualtrack.evaluation.benchmark import load_benchmark_config, run_benchmark
from dualtrack.simulate import get_preset
from dualtrack.training.runs import git_commit
from dualtrack.utils import atomic_write

log = logging.getLogger("run_paper_table")

SCANS_PER_SUBJECT = 24


def local_crop(height: int, width: int) -> tuple[int, int]:
    """Largest centred crop of multiples of 16, at most 256 x 256, that fits a ``height x width`` frame."""
    return min(256, height - height % 16), min(256, width - width % 16)


def dataset_bytes(preset: str, subjects: int, num_frames: int | None) -> int:
    """Bytes of the simulated frames (uint8) plus the training frame cache (about the same again)."""
    pr = get_preset(preset)
    frames = num_frames or pr.num_frames
    return 2 * subjects * SCANS_PER_SUBJECT * frames * pr.height * pr.width


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({cpu_name()})"


def _section(summary: str, heading: str) -> str:
    """The text of one ``## heading`` section of summary.md (empty when absent)."""
    parts = summary.split("\n## ")
    for part in parts[1:]:
        if part.startswith(heading):
            return "## " + part.rstrip() + "\n"
    return ""


def results_markdown(args: argparse.Namespace, result, wall_s: float, figures: dict[str, str]) -> str:
    """The docs/results.md page (see the module docstring)."""
    summary = result.files["summary.md"].read_text(encoding="utf-8")
    jobs = "\n".join(
        f"| {j.key} | {j.action} | {_duration(j.seconds)} | `{j.run_dir}` |" for j in result.plan.jobs
    )
    pr = get_preset(args.preset)
    lines = [
        "# Results: the paper's Table 1 on simulated data",
        "",
        "Produced by `benchmarks/run_paper_table.py` (one command; see `docs/benchmark.md`). These are",
        "**our** numbers on **simulated** forearm sweeps with a **shortened** training schedule",
        f"(epoch scale {args.epoch_scale}); they are not the paper's TUS-REC numbers and are not",
        "comparable with them or with the TUS-REC leaderboards.",
        "",
        "## Provenance",
        "",
        f"* date: {time.strftime('%Y-%m-%d %H:%M %Z')}; wall time {wall_s / 3600:.2f} h",
        f"* device: {device_name(args.device)}; torch {torch.__version__}; "
        f"Python {platform.python_version()}",
        f"* dualtrack {__version__}, git {git_commit()}",
        f"* command: `{' '.join(sys.argv)}`",
        "",
        "## Dataset and training",
        "",
        f"* simulator preset `{args.preset}` ({pr.height} x {pr.width} pixels, "
        f"{args.num_frames or pr.num_frames} frames a scan), {args.subjects} subjects x {SCANS_PER_SUBJECT} "
        f"scans (TUS-REC 2024 protocol), seed {args.seed}; {args.val} validation and {args.test} test "
        "subjects, the rest for training",
        f"* benchmark config `{args.config}`, every stage's epochs x {args.epoch_scale}, local crop "
        + (f"{list(local_crop(pr.height, pr.width))}" if args.config == "benchmark" else "of the config"),
        "",
        "| Stage | This run | Training time | Run directory |",
        "|---|---|---|---|",
        jobs,
        "",
    ]
    for heading in ("Results", "Paired Wilcoxon", "Global-branch check"):
        lines.append(_section(summary, heading))
    if figures:
        lines += ["## Per-scan error distributions (the paper's Fig. 3a)", ""]
        lines += [f"![{name}]({path})" for name, path in figures.items()]
        lines.append("")
    lines += [
        "## Files",
        "",
        "Full output (per-scan CSVs, table.csv, wilcoxon.csv, global_check.csv, report.html): "
        f"`{result.out_dir}`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="benchmark", help="benchmark config (default: the full one)")
    p.add_argument("--preset", default="small", help="simulator preset: tiny, small, tusrec (default small)")
    p.add_argument(
        "--subjects", type=int, default=46, help="simulated subjects (>= 40 for the paper's split)"
    )
    p.add_argument("--num-frames", type=int, default=None, help="frames per scan (default: the preset's)")
    p.add_argument("--val", type=int, default=3, help="validation subjects")
    p.add_argument("--test", type=int, default=3, help="test subjects")
    p.add_argument("--seed", type=int, default=0, help="dataset seed")
    p.add_argument("--epoch-scale", type=float, default=0.02, help="multiplies every stage's epochs")
    p.add_argument("--device", default="cuda", help="training, simulation and evaluation device")
    p.add_argument("--workers", type=int, default=8, help="data loader workers per training stage")
    p.add_argument("--out", type=Path, default=Path("benchmark_output/paper_table"), help="output folder")
    p.add_argument("--results-md", type=Path, default=Path("docs/results.md"), help="results page to write")
    p.add_argument("--force-disk", action="store_true", help="skip the free-disk check")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is available (use --device cpu for a pipeline check)")
    pr = get_preset(args.preset)
    need = dataset_bytes(args.preset, args.subjects, args.num_frames)
    args.out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.out).free
    if need > free and not args.force_disk:
        p.error(
            f"the dataset and its frame cache need about {need / 1e9:.0f} GB but {args.out} has "
            f"{free / 1e9:.0f} GB free; use fewer --subjects, --num-frames or a smaller --preset "
            "(or --force-disk)"
        )
    crop = local_crop(pr.height, pr.width)
    simulate = {
        "preset": args.preset, "subjects": args.subjects, "protocol": "2024", "seed": args.seed,
        "device": args.device, "num_frames": args.num_frames,
    }  # fmt: skip
    overrides = [
        f"data.simulate={json.dumps(simulate)}",
        f"data.root={args.out / 'data'}",
        f"data.val={args.val}",
        f"data.test={args.test}",
        f"epoch_scale={args.epoch_scale}",
        f"evaluation.device={args.device}",
    ]
    cfg = load_benchmark_config(args.config, overrides)
    cfg.train_overrides += [f"runtime.device={args.device}", f"data.num_workers={args.workers}"]
    if args.config == "benchmark":  # its crops are for 480 x 640 frames; other configs set their own
        cfg.train_overrides.append(f"data.local_crop=[{crop[0]}, {crop[1]}]")
    start = time.perf_counter()
    result = run_benchmark(cfg, args.out, progress=sys.stderr.isatty(), argv=sys.argv)
    wall = time.perf_counter() - start

    fig_dir = args.results_md.parent / "results_figures"
    figures = {}
    for key, path in result.files.items():
        if key.startswith("boxplots_"):
            fig_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, fig_dir / path.name)
            figures[key[len("boxplots_") :]] = f"{fig_dir.name}/{path.name}"
    with atomic_write(args.results_md) as tmp:
        tmp.write_text(results_markdown(args, result, wall, figures), encoding="utf-8")
    payload = {
        "rows": result.rows, "wilcoxon": result.wilcoxon, "global_check": result.global_check,
        "wall_s": wall, "device": device_name(args.device), "torch": torch.__version__,
        "git": git_commit(), "nvidia_smi": _nvidia_smi(),
    }  # fmt: skip
    write_json(args.out / "paper_table.json", payload)
    print(result.files["table.md"].read_text(encoding="utf-8"))
    print(
        f"results page: {args.results_md}\nbenchmark output: {result.out_dir}\nwall time: {wall / 60:.1f} min"
    )
    return 0


def _nvidia_smi() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return ""
    return out.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
