"""Benchmark: official all-pixel GPE + LPE of one synthetic TUS-REC-sized scan.

Measures the wall time of :func:`dualtrack.metrics.tusrec_metrics` (GPE and LPE over
all pixels, chunked) and its peak extra memory: on CUDA ``torch.cuda.max_memory_allocated`` above
the memory held before the call; on the CPU the rise of the process's peak resident set size
(``VmHWM``, reset through ``/proc/self/clear_refs`` where allowed, else ``ru_maxrss``).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_metrics.py --device cpu --frames 1500 \
        --out benchmark_output/metrics_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from _common import PeakMemory, device_name, sync, write_json
from dualtrack.metrics import DEFAULT_MAX_BYTES, tusrec_metrics

SCALE = np.diag([0.229389190673828, 0.220979690551758, 1.0, 1.0])


def synthetic_scan(frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random GT trajectory (~0.3 mm/frame) and a prediction with accumulated noise."""
    rng = np.random.default_rng(seed)

    def chain(steps: np.ndarray, rotvecs: np.ndarray) -> np.ndarray:
        local = np.tile(np.eye(4), (frames - 1, 1, 1))
        local[:, :3, :3] = Rotation.from_rotvec(rotvecs).as_matrix()
        local[:, :3, 3] = steps
        out = [np.eye(4)]
        for m in local:
            out.append(out[-1] @ m)
        return np.stack(out)

    steps = np.array([0.0, 0.0, 0.3]) + rng.normal(0, 0.05, (frames - 1, 3))
    rot = rng.normal(0, 0.002, (frames - 1, 3))
    g_gt = chain(steps, rot)
    g_pred = chain(steps + rng.normal(0, 0.02, steps.shape), rot + rng.normal(0, 0.0005, rot.shape))
    return g_gt, g_pred


def run(device: str, frames: int, height: int, width: int, max_bytes: int) -> dict:
    """Time one all-pixel GPE+LPE evaluation and measure its peak extra memory."""
    dev = torch.device(device)
    g_gt, g_pred = synthetic_scan(frames)
    shape = (height, width)
    # warm-up on a few frames (CUDA context, kernels, allocator)
    tusrec_metrics(g_gt[:4], g_pred[:4], shape, SCALE, device=dev, max_bytes=max_bytes)
    memory = PeakMemory(dev)
    start = time.perf_counter()
    res = tusrec_metrics(g_gt, g_pred, shape, SCALE, device=dev, max_bytes=max_bytes)
    sync(dev)
    seconds = time.perf_counter() - start
    peak_bytes = memory.peak_bytes()
    return {
        "benchmark": "tusrec_metrics all-pixel GPE+LPE",
        "device": str(dev),
        "device_name": device_name(dev),
        "frames": frames,
        "shape": [height, width],
        "max_bytes": max_bytes,
        "seconds": seconds,
        "ms_per_frame": 1000.0 * seconds / frames,
        "peak_extra_mb": peak_bytes / 2**20,
        "memory_method": memory.method,
        "GPE": res["GPE"],
        "LPE": res["LPE"],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument(
        "--frames", type=int, default=1500, help="frames of the synthetic scan (default 1500)"
    )
    parser.add_argument("--height", type=int, default=480, help="frame height in pixels (default 480)")
    parser.add_argument("--width", type=int, default=640, help="frame width in pixels (default 640)")
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        help="chunk memory target in bytes (default 256 MiB)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmark_output/metrics.json"), help="JSON output file"
    )
    args = parser.parse_args(argv)
    if args.frames < 5:
        parser.error("--frames must be at least 5")
    result = run(args.device, args.frames, args.height, args.width, args.max_bytes)
    write_json(args.out, result)
    print(
        f"all-pixel GPE+LPE, {result['frames']} frames of {args.height}x{args.width} on {result['device']}: "
        f"{result['seconds']:.2f} s ({result['ms_per_frame']:.2f} ms/frame), "
        f"peak extra memory {result['peak_extra_mb']:.0f} MB ({result['memory_method']}); "
        f"GPE {result['GPE']:.3f} mm, LPE {result['LPE']:.4f} mm -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
