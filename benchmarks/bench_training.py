"""Benchmark: training throughput of each stage (clips/s, subsets/s, sweeps/s) on simulated data.

Simulates a dataset with :func:`dualtrack.simulate.simulate_dataset` (reused when the folder
already holds it), then trains each stage for ``--steps`` optimiser steps with the shipped configs
(``--size tiny``: ``tiny_local``, ``tiny_global``, ``tiny_fusion``, ``tiny_coupled``; ``--size
full``: ``local``, ``global``, ``fusion``, ``coupled`` at paper size, for a GPU), through the real
loop: DataLoader workers reading the memory-mapped frame cache, AdamW, bf16 autocast on GPUs and
on CPUs with native bf16 (``runtime.amp``; ``--set runtime.amp=false`` for plain fp32).
Reported per stage: items per second (median over the logged steps after ``--warmup`` steps),
seconds per step, the unit (clips / subsets / sweeps) and the batch size, plus the wall time of
the whole stage including setup and building the frame cache. Validation is off::

    OMP_NUM_THREADS=2 python benchmarks/bench_training.py --preset tiny --size tiny --device cpu \
        --out benchmark_output/train_tiny_cpu.json
    python benchmarks/bench_training.py --preset tusrec --size full --device cuda --workers 8 \
        --out benchmark_output/train_full_gpu.json
    # the paper-size local stage on small frames, fp32 vs bf16 (CPU)
    OMP_NUM_THREADS=2 python benchmarks/bench_training.py --preset small --size full --stages local \
        --steps 8 --set "data.local_crop=[96, 128]" sampling.batch_size=2 runtime.amp=false
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _common import device_name, write_json
from dualtrack.data import TusRecDataset
from dualtrack.simulate import simulate_dataset
from dualtrack.training.loop import prepare_run, train

UNITS = {"clip": "clips/s", "subset": "subsets/s", "sweep": "sweeps/s"}


def _rates(run_dir: Path, warmup: int) -> list[float]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["items_per_s"]]
    return [float(r["items_per_s"]) for r in rows if int(r["step"]) > warmup]


def bench_stage(name: str, config: str, overrides: list[str], run_dir: Path, warmup: int) -> dict:
    cfg, _ = prepare_run(config, overrides)
    start = time.perf_counter()
    result = train(cfg, run_dir)
    total = time.perf_counter() - start
    rates = _rates(run_dir, warmup)
    rate = statistics.median(rates) if rates else float("nan")
    mode = cfg.sampling.mode
    return {
        "stage": name,
        "config": config,
        "model": cfg.model.name,
        "mode": mode,
        "unit": UNITS[mode],
        "batch_size": cfg.sampling.batch_size,
        "steps": result.state.step,
        "items_per_s": rate,
        "seconds_per_step": cfg.sampling.batch_size / rate if rates else float("nan"),
        "wall_s_including_setup": total,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", help="simulator preset (tiny, small, tusrec)")
    ap.add_argument("--size", choices=("tiny", "full"), default="tiny", help="model/config size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--subjects", type=int, default=3)
    ap.add_argument("--frames", type=int, default=None, help="frames per scan (default: the preset's)")
    ap.add_argument("--scans", nargs="+", default=["LH_Par_C_DtP", "RH_Per_S_PtD", "LH_Per_L_PtD"])
    ap.add_argument("--steps", type=int, default=12, help="optimiser steps per stage")
    ap.add_argument("--warmup", type=int, default=2, help="steps excluded from the median")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    ap.add_argument("--data", type=Path, default=None, help="dataset folder (simulated there if missing)")
    ap.add_argument("--stages", nargs="+", default=["local", "global", "fusion", "coupled"])
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="training overrides for every stage, e.g. runtime.amp=false")
    ap.add_argument("--out", type=Path, default=None, help="JSON output file")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp) / "data"
        t0 = time.perf_counter()
        simulate_dataset(
            data,
            args.subjects,
            preset=args.preset,
            scans=args.scans,
            num_frames=args.frames,
            device=args.device,
            progress=False,
        )
        sim_s = time.perf_counter() - t0
        n_scans = len(TusRecDataset(data))
        prefix = "tiny_" if args.size == "tiny" else ""
        runs = Path(tmp) / "runs"
        common = [
            f"data.root={data}",
            f"runtime.device={args.device}",
            f"data.num_workers={args.workers}",
            "data.val_fraction=0.0",
            "runtime.val_every=0",
            "runtime.log_every=1",
            "runtime.tensorboard=false",
            "runtime.progress=false",
            f"runtime.stop_after_steps={args.steps}",
            "optim.epochs=100000",
            *args.set,
        ]
        results = []
        for stage in args.stages:
            over = list(common)
            if stage == "local":
                over += ["stage.phases.0.epochs=100000"]
            if stage in ("fusion", "coupled"):
                over += [f"stage.local_from={runs / 'local'}"]
            if stage == "fusion":
                over += [f"stage.global_from={runs / 'global'}"]
            results.append(bench_stage(stage, prefix + stage, over, runs / stage, args.warmup))
            r = results[-1]
            print(
                f"{stage:8s} {r['model']:18s} {r['items_per_s']:9.2f} {r['unit']:10s} "
                f"({r['seconds_per_step'] * 1000:.1f} ms/step, batch {r['batch_size']})"
            )

    report = {
        "benchmark": "training throughput per stage",
        "preset": args.preset,
        "size": args.size,
        "device": args.device,
        "device_name": device_name(torch.device(args.device)),
        "torch_threads": torch.get_num_threads(),
        "workers": args.workers,
        "scans": n_scans,
        "frames_per_scan": args.frames,
        "simulation_s": sim_s,
        "steps": args.steps,
        "overrides": args.set,
        "stages": results,
    }
    print(json.dumps(report, indent=2))
    if args.out is not None:
        write_json(args.out, report)


if __name__ == "__main__":
    main()
