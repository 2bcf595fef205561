"""Benchmark: full-sweep inference, the shipped default against our own fp32 unchunked reference.

For each sweep length ``N`` (``--frames``, default 64 256 546) of ``H x W`` (default 480 x 640) a
random uint8 sweep held on the CPU goes through :class:`dualtrack.inference.Predictor` of a
registered model with random weights (default ``dualtrack``, paper size; ``--model-config`` gives
its sizes as JSON, e.g. ``'{"local_encoder": {"small_window": false}}'`` for the authors' ±17-frame
3D CNN; ``--model dualtrack_tusrec2024`` is the authors' released architecture, ``--weights DIR``
times real weights such as an imported authors' checkpoint), as a user calls it, twice:

* **reference**: ``precision="fp32"``, ``chunk_size=N`` (the whole sweep in one pass, no halo);
* **default**: the shipped defaults (``precision="auto"``: bf16 autocast on CPUs with AMX /
  AVX-512 BF16 and on GPUs; the automatic chunk plan; channels-last 3D CNN with folded BatchNorm,
  which the reference gets too: they are part of the model).

Printed and saved per length (JSON, ``--out``): ``frames``, ``reference_s``, ``default_s``,
``speedup`` (reference / default), ``peak_rss_mb`` (rise of the process's peak resident memory
during the default call; ``reference_peak_rss_mb`` likewise), on CUDA ``peak_gpu_mb``, and
``max_traj_diff_mm``: the largest distance between the two predicted global trajectories over every
frame and the image's 4 corners and centre, in mm. Times are the median of ``--repeats`` calls
after one untimed call on a short sweep (kernel set-up). Run one benchmark at a time on a quiet
machine; 546 frames take minutes in fp32 on two CPU cores::

    OMP_NUM_THREADS=2 python benchmarks/bench_inference.py --out benchmark_output/infer_cpu.json
    python benchmarks/bench_inference.py --device cuda --frames 546 1500 --repeats 3 \\
        --out benchmark_output/infer_gpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import PeakMemory, device_name, sync, write_json
from dualtrack.geometry import image_points, transform_points
from dualtrack.inference import Predictor, default_chunk_size, plan_chunks
from dualtrack.inference import recompute_share as share
from dualtrack.models import create_model
from dualtrack.models.weights import load_bundle
from dualtrack.utils import cpu_supports_bf16, resolve_precision

SPACING = (0.229389190673828, 0.220979690551758)


def measure(model, sweep: np.ndarray, dev: torch.device, repeats: int, **options) -> dict:
    """Median seconds of ``Predictor.from_model(model, **options).predict(sweep)``, its peak memory
    rise and the last prediction."""
    predictor = Predictor.from_model(model, device=dev, **options)
    host = PeakMemory(torch.device("cpu"))
    gpu = PeakMemory(dev) if dev.type == "cuda" else None
    times = []
    for _ in range(max(1, repeats)):
        sync(dev)
        start = time.perf_counter()
        pred = predictor.predict(sweep, spacing=SPACING)
        sync(dev)
        times.append(time.perf_counter() - start)
    out = {"seconds": statistics.median(times), "seconds_all": times,
           "peak_rss_mb": host.peak_bytes() / 2**20, "pred": pred}
    if gpu is not None:
        out["peak_gpu_mb"] = gpu.peak_bytes() / 2**20
    return out


def max_trajectory_difference_mm(g_a: np.ndarray, g_b: np.ndarray, shape: tuple[int, int]) -> float:
    """Largest distance (mm) between the two trajectories' images of the 4 corners and the centre."""
    pts = image_points(shape, np.diag([*SPACING, 1.0, 1.0]), "five")
    return float(np.linalg.norm(transform_points(g_a, pts) - transform_points(g_b, pts), axis=-1).max())


def _model(model_name: str, model_config: dict, dev: torch.device, crop: tuple[int, int] | None,
           weights: Path | None = None):
    """The registered model with random weights, or the model of ``weights`` (an export folder,
    run or checkpoint: e.g. an imported authors' checkpoint) with its own local crop."""
    if weights is not None:
        return load_bundle(weights).model.to(dev).eval()
    torch.manual_seed(0)
    model = create_model(model_name, **model_config).to(dev).eval()
    model.configure_input(local_crop=crop)
    return model


def compare(model_name: str, device: str, lengths: list[int], height: int, width: int,
            crop: tuple[int, int] | None, repeats: int, model_config: dict | None = None,
            weights: Path | None = None) -> dict:
    """Reference vs default for every sweep length (see the module docstring)."""
    dev = torch.device(device)
    model = _model(model_name, model_config or {}, dev, crop, weights)
    crop = model.input_spec.local_crop
    rng = np.random.default_rng(0)
    warm = rng.integers(0, 256, (min(40, min(lengths)), height, width), dtype=np.uint8)
    for precision in ("fp32", "auto"):
        Predictor.from_model(model, device=dev, precision=precision).predict(warm, spacing=SPACING)
    dtype = resolve_precision("auto", dev)
    rows = []
    for n in lengths:
        sweep = rng.integers(0, 256, (n, height, width), dtype=np.uint8)
        ref = measure(model, sweep, dev, repeats, precision="fp32", chunk_size=n)
        new = measure(model, sweep, dev, repeats, precision="auto")
        h, w = crop or (height, width)
        size = default_chunk_size(model, n, (h, w), dev, dtype)
        plan = plan_chunks(n, model.input_spec.halo, size, balance=True)
        row = {
            "frames": n,
            "reference_s": ref["seconds"],
            "default_s": new["seconds"],
            "speedup": ref["seconds"] / new["seconds"],
            "peak_rss_mb": new["peak_rss_mb"],
            "reference_peak_rss_mb": ref["peak_rss_mb"],
            "max_traj_diff_mm": max_trajectory_difference_mm(ref["pred"].global_, new["pred"].global_,
                                                             (height, width)),
            "default_chunks": len(plan),
            "default_recompute_share": share(plan),
            "reference_s_all": ref["seconds_all"],
            "default_s_all": new["seconds_all"],
        }
        if dev.type == "cuda":
            row["peak_gpu_mb"] = new["peak_gpu_mb"]
            row["reference_peak_gpu_mb"] = ref["peak_gpu_mb"]
        rows.append(row)
        print(f"{n:5d} frames: reference {row['reference_s']:8.2f} s, default {row['default_s']:7.2f} s, "
              f"speedup {row['speedup']:.2f}x, peak RSS {row['peak_rss_mb']:.0f} MB (reference "
              f"{row['reference_peak_rss_mb']:.0f} MB), max trajectory difference "
              f"{row['max_traj_diff_mm']:.3g} mm, {row['default_chunks']} chunk(s)", flush=True)
    return {
        "benchmark": "Predictor.predict: shipped default vs fp32 unchunked reference",
        "model": model.model_name,
        "weights": str(weights) if weights else None,
        "model_config": model_config or {},
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(dev),
        "device_name": device_name(dev),
        "cpu_bf16": cpu_supports_bf16(),
        "default_precision": str(dtype).replace("torch.", "") if dtype is not None else "fp32",
        "shape": [height, width],
        "crop": list(crop) if crop else None,
        "halo": model.input_spec.halo,
        "repeats": repeats,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "results": rows,
    }


def run(model_name: str, device: str, frames: int, height: int, width: int, crop: tuple[int, int] | None,
        chunk_size: int | None, precision: str, repeats: int) -> dict:
    """One timed configuration (used by ``run_dualtrack_pipeline.py``): median seconds, peak memory."""
    dev = torch.device(device)
    model = _model(model_name, {}, dev, crop)
    sweep = np.random.default_rng(0).integers(0, 256, (frames, height, width), dtype=np.uint8)
    warm = Predictor.from_model(model, device=dev, precision=precision)
    warm.predict(sweep[: min(40, frames)], spacing=SPACING)
    m = measure(model, sweep, dev, repeats, chunk_size=chunk_size, precision=precision)
    return {
        "model": model_name, "parameters": sum(p.numel() for p in model.parameters()),
        "device_name": device_name(dev), "frames": frames, "shape": [height, width],
        "crop": list(crop) if crop else None, "chunk_size": chunk_size, "precision": precision,
        "seconds_median": m["seconds"], "seconds_all": m["seconds_all"],
        "ms_per_frame": 1000 * m["seconds"] / frames,
        "peak_memory_mb": m.get("peak_gpu_mb", m["peak_rss_mb"]),
        "memory_method": "torch.cuda.max_memory_allocated rise" if dev.type == "cuda" else "peak RSS rise",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="dualtrack", help="registered model name (default dualtrack)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--frames", type=int, nargs="+", default=[64, 256, 546],
                        help="sweep lengths (default 64 256 546)")
    parser.add_argument("--height", type=int, default=480, help="frame height in pixels (default 480)")
    parser.add_argument("--width", type=int, default=640, help="frame width in pixels (default 640)")
    parser.add_argument("--crop", type=int, nargs=2, default=[256, 256], metavar=("H", "W"),
                        help="centre crop of the local input (default 256 256, the paper's)")
    parser.add_argument("--model-config", type=json.loads, default={}, metavar="JSON",
                        help="model sizes as JSON, e.g. '{\"local_encoder\": {\"small_window\": false}}'")
    parser.add_argument("--weights", type=Path, metavar="DIR",
                        help="time these weights (export folder, run or checkpoint, e.g. the output of "
                             "`dualtrack import-weights`) instead of --model with random weights")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per setting (default 1)")
    parser.add_argument("--out", type=Path, default=Path("benchmark_output/inference.json"), help="JSON file")
    args = parser.parse_args(argv)
    if min(args.frames) < 2:
        parser.error("--frames must be at least 2")
    result = compare(args.model, args.device, args.frames, args.height, args.width, tuple(args.crop),
                     args.repeats, args.model_config, args.weights)
    write_json(args.out, result)
    print(f"{result['model']} on {result['device_name']} ({result['torch_threads']} threads, "
          f"default precision {result['default_precision']}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
