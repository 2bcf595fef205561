"""Benchmark: full-sweep inference time and peak memory of a registered model (random weights).

Runs :func:`dualtrack.inference.predict_trajectory` on a random uint8 sweep of ``N`` frames of
``H x W`` held on the CPU, as a user would call it (the uint8 frames are copied to the device, the
local CNN runs in halo chunks, the poses come back as numpy). Reports the median wall time over
``--repeats`` calls after ``--warmup`` calls, and for models of the DualTrack family a split into
the chunked per-frame encoder (3D CNN + pooling) and the rest (transformers, global branch, fusion).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` during one call; on the CPU the rise of the
process's peak resident set size (``VmHWM`` reset through ``/proc/self/clear_refs`` where allowed).

Target (paper, RTX Quadro 6000): 546 frames of 480 x 640 in 0.73 s, < 7 GB::

    python benchmarks/bench_inference.py --model dualtrack --device cuda --frames 546 \
        --height 480 --width 640 --crop 256 256 --amp --chunk-size 256 --out benchmark_output/infer_gpu.json

Scaled down on a CPU::

    OMP_NUM_THREADS=1 python benchmarks/bench_inference.py --model dualtrack --device cpu \
        --frames 64 --height 128 --width 128 --repeats 1 --warmup 0
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import PeakMemory, device_name, sync, write_json
from dualtrack.inference import centre_crop_box, encode_chunked, predict_trajectory
from dualtrack.models import create_model

SPACING = (0.229389190673828, 0.220979690551758)


def _split_timing(model, frames: np.ndarray, dev: torch.device, chunk: int, crop, amp: bool) -> dict:
    """Seconds of the chunked per-frame encoder and of the sequence part, frames already on device."""
    y0, x0, h, w = centre_crop_box(frames.shape[1:], crop)
    raw = torch.from_numpy(frames).to(dev)
    index = torch.arange(len(frames), device=dev)[None]
    dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16
    with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype, enabled=amp):
        sync(dev)
        t0 = time.perf_counter()
        feats = encode_chunked(model, raw[:, y0 : y0 + h, x0 : x0 + w], chunk)
        sync(dev)
        t1 = time.perf_counter()
        extra = {}
        stride = getattr(model, "global_stride", None)
        if stride:
            extra = {
                "global_frames": raw[::stride].float().div(255)[None],
                "global_index": index[:, ::stride],
            }
        model.forward_encoded(feats, index=index, **extra)
        sync(dev)
        t2 = time.perf_counter()
    return {"encoder_s": t1 - t0, "sequence_s": t2 - t1}


def run(
    model_name: str,
    device: str,
    frames: int,
    height: int,
    width: int,
    crop: tuple[int, int] | None,
    chunk_size: int,
    amp: bool,
    repeats: int,
    warmup: int,
) -> dict:
    """Time ``predict_trajectory`` on a random sweep and measure its peak memory."""
    dev = torch.device(device)
    torch.manual_seed(0)
    model = create_model(model_name).to(dev).eval()
    sweep = np.random.default_rng(0).integers(0, 256, (frames, height, width), dtype=np.uint8)
    call = lambda: predict_trajectory(  # noqa: E731
        model, sweep, spacing=SPACING, device=dev, chunk_size=chunk_size, crop=crop, amp=amp
    )
    for _ in range(warmup):
        call()
    memory = PeakMemory(dev)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        pred = call()
        times.append(time.perf_counter() - start)
    peak_bytes = memory.peak_bytes()
    result = {
        "benchmark": "predict_trajectory full sweep",
        "model": model_name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(dev),
        "device_name": device_name(dev),
        "frames": frames,
        "shape": [height, width],
        "crop": list(crop) if crop else None,
        "chunk_size": chunk_size,
        "halo": getattr(model, "temporal_receptive_field", None),
        "amp": amp,
        "seconds_median": statistics.median(times),
        "seconds_all": times,
        "ms_per_frame": 1000.0 * statistics.median(times) / frames,
        "peak_memory_mb": peak_bytes / 2**20,
        "memory_method": memory.method,
        "finite_output": bool(np.isfinite(pred.global_).all()),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if hasattr(model, "encode_frames"):
        result["split"] = _split_timing(model, sweep, dev, chunk_size, crop, amp)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="dualtrack", help="registered model name (default dualtrack)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--frames", type=int, default=546, help="frames of the sweep (default 546)")
    parser.add_argument("--height", type=int, default=480, help="frame height in pixels (default 480)")
    parser.add_argument("--width", type=int, default=640, help="frame width in pixels (default 640)")
    parser.add_argument(
        "--crop", type=int, nargs=2, metavar=("H", "W"), help="centre crop of the local input"
    )
    parser.add_argument("--chunk-size", type=int, default=64, help="frames per local CNN chunk (default 64)")
    parser.add_argument("--amp", action="store_true", help="autocast (fp16 on CUDA, bf16 on CPU)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first (default 1)")
    parser.add_argument("--out", type=Path, default=Path("benchmark_output/inference.json"), help="JSON file")
    args = parser.parse_args(argv)
    if args.frames < 2:
        parser.error("--frames must be at least 2")
    result = run(
        args.model,
        args.device,
        args.frames,
        args.height,
        args.width,
        tuple(args.crop) if args.crop else None,
        args.chunk_size,
        args.amp,
        args.repeats,
        args.warmup,
    )
    write_json(args.out, result)
    split = result.get("split")
    extra = f" (encoder {split['encoder_s']:.3f} s, rest {split['sequence_s']:.3f} s)" if split else ""
    print(
        f"{args.model}: {args.frames} frames {args.height}x{args.width} on {result['device_name']}: "
        f"{result['seconds_median']:.3f} s{extra}, peak memory {result['peak_memory_mb']:.0f} MB "
        f"({result['memory_method']}) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
