"""Benchmark: does the simulated anatomy tell *where along the arm* a frame was taken?

DualTrack's global encoder can only correct drift if a frame's appearance situates the probe. This
probe measures that directly, without any trajectory model: a small 2D ResNet (the global
encoder's backbone, frames resized to ``--size``) regresses the normalised arm position
``s = X / arm length`` of each frame's image centre (``X`` = world coordinate along the arm, elbow
0 -> wrist 1, from the simulator's rendering poses) from that single frame. It is trained on the
frames of ``--train`` subjects and scored on the held-out subjects' frames as the mean absolute
error in ``s`` and in mm, against chance (always predicting the training mean) and against the
position-only baseline "the scan's mean position" (what a model could know without anatomy).
A ratio ``MAE / MAE_chance`` well below 1 means the global cue exists in the data::

    OMP_NUM_THREADS=2 python benchmarks/probe_global_cue.py --out benchmark_output/global_cue.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from _common import cpu_name, write_json
from dualtrack.models.resnet import ResNet2d
from dualtrack.simulate.dataset import make_phantom, simulate_sweep
from dualtrack.simulate.trajectory import parse_scan

SCANS = ("LH_Per_L_DtP", "LH_Par_C_PtD", "LH_Per_S_DtP", "LH_Par_L_DtP")


def arm_positions(sweep, phantom) -> np.ndarray:
    """``s`` of every frame's image centre: world ``X`` of the centre over the arm length."""
    h, w = sweep.frames.shape[1:]
    sx, sy = sweep.calibration.spacing
    centre = np.array([(w + 1) / 2 * sx, (h + 1) / 2 * sy, 0.0, 1.0])
    world = sweep.poses @ centre
    return world[:, 0] / phantom.length


def collect(subjects: range, args) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    frames, s, scan_id = [], [], []
    lengths = []
    for sid in subjects:
        phantoms = {}
        for k, name in enumerate(SCANS):
            arm = parse_scan(name).arm
            phantoms.setdefault(arm, make_phantom(args.seed, sid, arm, args.preset))
            sweep = simulate_sweep(
                args.seed, sid, name, args.preset, num_frames=args.frames, phantom=phantoms[arm]
            )
            frames.append(sweep.frames)
            s.append(arm_positions(sweep, phantoms[arm]))
            scan_id.append(np.full(len(sweep.frames), sid * len(SCANS) + k))
            lengths.append(phantoms[arm].length)
    return np.concatenate(frames), np.concatenate(s), np.concatenate(scan_id), float(np.mean(lengths))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--train", type=int, default=6, help="training subjects (default 6)")
    ap.add_argument("--test", type=int, default=2, help="held-out subjects (default 2)")
    ap.add_argument("--frames", type=int, default=96, help="frames per scan (default 96)")
    ap.add_argument("--size", type=int, default=64, help="frames resized to size x size (default 64)")
    ap.add_argument("--width", type=int, default=8, help="ResNet width (default 8)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmark_output/global_cue.json"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    x_tr, s_tr, _, _ = collect(range(args.train), args)
    x_te, s_te, scan_te, length = collect(range(args.train, args.train + args.test), args)
    sim_s = time.perf_counter() - t0

    def prep(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x).float()[:, None] / 255.0
        return F.interpolate(
            t, size=(args.size, args.size), mode="bilinear", antialias=True, align_corners=False
        )

    xt, xe = prep(x_tr), prep(x_te)
    mean, std = float(s_tr.mean()), float(s_tr.std() + 1e-9)
    yt = torch.from_numpy((s_tr - mean) / std).float()
    torch.manual_seed(args.seed)
    net = ResNet2d(in_channels=1, width=args.width, layers=(1, 1, 1, 1))
    head = torch.nn.Linear(net.num_features, 1)
    params = [*net.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(args.seed)
    t1 = time.perf_counter()
    for _ in range(args.epochs):
        net.train()
        for idx in torch.randperm(len(xt), generator=gen).split(32):
            loss = F.smooth_l1_loss(head(net(xt[idx]))[:, 0], yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    train_s = time.perf_counter() - t1
    net.eval()
    with torch.inference_mode():
        pred = torch.cat([head(net(b))[:, 0] for b in xe.split(256)]).numpy() * std + mean
    mae = float(np.abs(pred - s_te).mean())
    chance = float(np.abs(mean - s_te).mean())
    scan_mean = np.array([s_te[scan_te == k].mean() for k in scan_te])
    within = float(np.abs(scan_mean - s_te).mean())
    result = {
        "benchmark": "global cue: arm position regressed from single frames",
        "preset": args.preset,
        "train_subjects": args.train,
        "test_subjects": args.test,
        "scans": list(SCANS),
        "frames_per_scan": args.frames,
        "size": args.size,
        "width": args.width,
        "epochs": args.epochs,
        "test_frames": int(len(s_te)),
        "mean_arm_length_mm": length,
        "mae_s": mae,
        "mae_mm": mae * length,
        "chance_mae_s": chance,
        "chance_mae_mm": chance * length,
        "ratio_to_chance": mae / chance,
        "scan_mean_mae_mm": within * length,
        "simulation_s": sim_s,
        "training_s": train_s,
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
    }
    write_json(args.out, result)
    print(
        f"arm position from one frame, {result['test_frames']} held-out frames: "
        f"MAE {result['mae_mm']:.1f} mm vs chance {result['chance_mae_mm']:.1f} mm "
        f"(ratio {result['ratio_to_chance']:.2f}); knowing each scan's mean position would give "
        f"{result['scan_mean_mae_mm']:.1f} mm. Simulation {sim_s:.0f} s, training "
        f"{train_s:.0f} s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
