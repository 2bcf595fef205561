"""Benchmark: simulator throughput (frames/s) and peak memory per preset and device.

For each preset, simulates one TUS-REC 2024 scan (``RH_Per_C_DtP``) end to end with
:func:`dualtrack.simulate.simulate_sweep` (phantom bricks generated on demand, trajectory,
rendering, landmarks) and reports

* ``end_to_end_fps``: frames / wall time of the whole call (a fresh phantom: every brick is
  generated during the call);
* ``render_fps``: frames / wall time of rendering the same poses again with the bricks cached
  (the steady state of a dataset run, where the 12 scans of an arm share one phantom);
* peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on the CPU the rise of the process's
  peak resident set size (``VmHWM``, reset through ``/proc/self/clear_refs`` where allowed).

Targets: >= 20 frames/s for ``small`` on a 2-core CPU; >= 300 frames/s for ``tusrec`` on a GPU::

    OMP_NUM_THREADS=2 python benchmarks/bench_simulator.py --presets tiny small --device cpu
    python benchmarks/bench_simulator.py --presets small tusrec --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from _common import cpu_name, proc_status_kb, reset_peak_rss, sync, write_json
from dualtrack.simulate import BModeRenderer, get_preset, make_phantom, simulate_sweep
from dualtrack.simulate.rng import numpy_rng, stable_seed

SCAN = "RH_Per_C_DtP"


def bench_preset(name: str, device: torch.device, frames: int | None) -> dict:
    pr = get_preset(name)
    n = frames or pr.num_frames
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    reset_peak_rss()
    rss0 = proc_status_kb("VmRSS")
    phantom = make_phantom(0, 0, "RH", pr, device)
    sync(device)
    t0 = time.perf_counter()
    sweep = simulate_sweep(0, 0, SCAN, pr, device=device, num_frames=n, phantom=phantom)
    sync(device)
    t_e2e = time.perf_counter() - t0
    imaging = pr.scan_imaging(numpy_rng(0, "000", SCAN, "imaging"))
    renderer = BModeRenderer(pr, imaging, device=device)
    points = []
    sync(device)
    t0 = time.perf_counter()
    for a in range(0, n, pr.batch_size):
        b = min(n, a + pr.batch_size)
        keys = [stable_seed(0, "000", SCAN, "noise", i) for i in range(a, b)]
        out = renderer.render(phantom, sweep.poses[a:b], noise_keys=keys)
        points.extend(out.points)
    sync(device)
    t_render = time.perf_counter() - t0
    res = {
        "preset": name,
        "frames": n,
        "frame_shape": [pr.height, pr.width],
        "end_to_end_s": t_e2e,
        "end_to_end_fps": n / t_e2e,
        "render_s": t_render,
        "render_fps": n / t_render,
        "scatterers_per_frame_mean": float(np.mean(points)),
        "cached_scatterers": phantom.cached_points,
        "iq_grid": [renderer.geom.nr, renderer.geom.nl],
        "batch_size": pr.batch_size,
    }
    if device.type == "cuda":
        res["peak_gpu_mem_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    hwm = proc_status_kb("VmHWM")
    if hwm is not None and rss0 is not None:
        res["peak_rss_rise_mb"] = (hwm - rss0) / 1024
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--frames", type=int, help="frames per scan (default: the preset's)")
    ap.add_argument("--out", type=Path, default=Path("benchmark_output/bench_simulator.json"))
    args = ap.parse_args()
    device = torch.device(args.device)
    results = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_start": os.getloadavg(),
        "presets": [],
    }
    for name in args.presets:
        res = bench_preset(name, device, args.frames)
        results["presets"].append(res)
        print(json.dumps(res))
    results["load_average_end"] = os.getloadavg()
    write_json(args.out, results)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
