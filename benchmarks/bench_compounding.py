"""Benchmark: compounding a tracked sweep into a 0.5 mm voxel grid (frames/s and peak memory).

Runs :func:`dualtrack.reconstruction.compounding.reconstruct_volume` on a random uint8 sweep of
``N`` frames of ``H x W`` (TUS-REC pixel size 0.229 x 0.221 mm) held on the CPU, moved along a
TUS-REC-like path: 0.1 mm per frame in elevation, a slow lateral wobble of a few mm and 2-4 degree
rocking/tilting. Reports the wall time of the call (frames copied to the device chunk by chunk,
splatting, normalisation, hole filling, result back as numpy) and, separately, the time without
hole filling; median over ``--repeats`` calls after ``--warmup`` calls.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the memory held before the call; on
the CPU the rise of the process's peak resident set size (``VmHWM`` reset through
``/proc/self/clear_refs`` where allowed, else ``ru_maxrss``).

Targets: 1500 frames 480 x 640 in < 60 s on a 2-core CPU and < 1 s on a GPU::

    OMP_NUM_THREADS=2 python benchmarks/bench_compounding.py --device cpu \
        --out benchmark_output/compound_cpu.json
    python benchmarks/bench_compounding.py --device cuda --out benchmark_output/compound_gpu.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import PeakMemory, device_name, sync, timed, write_json
from dualtrack.geometry import params_to_matrix
from dualtrack.reconstruction.compounding import plan_grid, reconstruct_volume

SPACING = (0.229389190673828, 0.220979690551758)


def synthetic_sweep(n: int, h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 frames ``(N, H, W)`` and global poses ``(N, 4, 4)`` of a TUS-REC-like path."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
    t = np.arange(n, dtype=np.float64)
    params = np.stack(
        [
            3.0 * np.sin(t / 400.0),  # lateral wobble (mm)
            1.0 * np.sin(t / 250.0),  # depth (mm)
            0.1 * t,  # elevation (mm)
            4.0 * np.sin(t / 150.0),  # tilt (deg)
            2.0 * np.sin(t / 300.0),  # rocking (deg)
            2.0 * np.sin(t / 500.0),  # in-plane (deg)
        ],
        1,
    )
    g = params_to_matrix(params)
    return frames, np.linalg.inv(g[0])[None] @ g


def run(
    device: str, frames: int, height: int, width: int, spacing_mm: float, method: str,
    repeats: int, warmup: int,
) -> dict:
    """Time ``reconstruct_volume`` with and without hole filling; measure its peak memory."""
    dev = torch.device(device)
    x, g = synthetic_sweep(frames, height, width)
    grid = plan_grid(g, (height, width), SPACING, spacing_mm)
    kw = dict(spacing_mm=spacing_mm, method=method, device=dev, memory_limit_gb=None)
    for _ in range(warmup):
        reconstruct_volume(x, g, SPACING, **kw)
    memory = PeakMemory(dev)
    sync(dev)
    start = time.perf_counter()
    vol = reconstruct_volume(x, g, SPACING, **kw)
    sync(dev)
    times = [time.perf_counter() - start]
    peak = memory.peak_bytes()
    covered = float((vol.weight > 0).mean())
    nonzero = float((vol.data > 0).mean())
    del vol
    times += [timed(lambda: reconstruct_volume(x, g, SPACING, **kw), dev) for _ in range(repeats - 1)]
    no_fill = [timed(lambda: reconstruct_volume(x, g, SPACING, fill_holes=False, **kw), dev)
               for _ in range(repeats)]
    seconds = statistics.median(times)
    return {
        "benchmark": "reconstruct_volume (pixel-based compounding + hole filling)",
        "device": str(dev),
        "device_name": device_name(dev),
        "frames": frames,
        "shape": [height, width],
        "pixel_spacing_mm": list(SPACING),
        "voxel_spacing_mm": spacing_mm,
        "method": method,
        "compound": "mean",
        "grid_size_ijk": list(grid.size),
        "grid_mvox": grid.num_voxels / 1e6,
        "seconds": seconds,
        "seconds_all": times,
        "frames_per_s": frames / seconds,
        "seconds_without_fill": statistics.median(no_fill),
        "frames_per_s_without_fill": frames / statistics.median(no_fill),
        "fraction_voxels_hit": covered,
        "fraction_voxels_nonzero_after_fill": nonzero,
        "peak_extra_mb": peak / 2**20,
        "memory_method": memory.method,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--frames", type=int, default=1500, help="frames in the sweep (default 1500)")
    parser.add_argument("--height", type=int, default=480, help="frame height in pixels (default 480)")
    parser.add_argument("--width", type=int, default=640, help="frame width in pixels (default 640)")
    parser.add_argument("--spacing", type=float, default=0.5, help="voxel size in mm (default 0.5)")
    parser.add_argument("--method", choices=("nearest", "trilinear"), default="nearest")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls (median reported; default 1)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed calls first (default: 1 on GPU, 0 on CPU)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmark_output/compounding.json"), help="JSON output file"
    )
    args = parser.parse_args(argv)
    if args.frames < 2 or args.repeats < 1:
        parser.error("--frames must be >= 2 and --repeats >= 1")
    warmup = args.warmup if args.warmup is not None else (1 if args.device.startswith("cuda") else 0)
    res = run(
        args.device, args.frames, args.height, args.width, args.spacing, args.method, args.repeats, warmup
    )
    write_json(args.out, res)
    print(
        f"compounding {res['frames']} frames {args.height}x{args.width} ({args.method}) into "
        f"{'x'.join(map(str, res['grid_size_ijk']))} = {res['grid_mvox']:.1f} Mvox at {args.spacing} mm on "
        f"{res['device']} ({res['device_name']}, {res['torch_threads']} threads): {res['seconds']:.2f} s = "
        f"{res['frames_per_s']:.0f} frames/s ({res['seconds_without_fill']:.2f} s without hole filling); "
        f"{100 * res['fraction_voxels_hit']:.0f}% voxels hit; peak extra memory "
        f"{res['peak_extra_mb']:.0f} MB ({res['memory_method']}) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
