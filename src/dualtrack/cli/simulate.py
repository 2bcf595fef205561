"""``dualtrack simulate OUT``: write a simulated freehand-sweep dataset in the TUS-REC layout."""

from __future__ import annotations

import argparse
import sys
import time

import torch

from dualtrack.simulate import list_presets, simulate_dataset
from dualtrack.simulate.presets import get_preset

DESCRIPTION = """\
Simulate B-mode freehand sweeps of procedural forearms with exact ground-truth poses and write
them exactly like the TUS-REC data: frames_transfs/<sid>/<scan>.h5 (frames uint8 N x H x W,
tforms float32 N x 4 x 4 tool -> tracker), landmarks/landmark_<sid>.h5, calib_matrix.csv; with
--layout test the val/test layout (frames/, transfs/, landmark(s)/, dataset_keys.h5).

Each scan is a pure function of (seed, subject, scan name, preset). Scans already on disk are
skipped, and every file is written atomically, so re-running an interrupted command resumes it.

Presets: tiny (48x64, ~32 frames, for tests), small (128x160, ~200 frames, CPU demo),
tusrec (480x640, TUS-REC spacing and convex fan, ~500 frames; use --device cuda).
Protocols: 2024 (24 scans a subject: {LH|RH}_{Per|Par}_{L|C|S}_{DtP|PtD}),
2025 (rotation scans {LH|RH}_rotation), both.
"""


def register(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="write a simulated dataset (TUS-REC layout, exact ground truth)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", metavar="OUT", help="dataset folder to write (created; existing scans are kept)")
    p.add_argument("--subjects", type=int, default=2, metavar="N", help="number of subjects (default 2)")
    p.add_argument(
        "--first-subject", type=int, default=0, metavar="K", help="first subject id (default 0: 000..N-1)"
    )
    p.add_argument("--preset", default="small", choices=list_presets(), help="size preset (default small)")
    p.add_argument("--protocol", default="2024", choices=["2024", "2025", "both"], help="scan protocol")
    p.add_argument("--layout", default="train", choices=["train", "test"], help="TUS-REC layout")
    p.add_argument("--scans", nargs="+", metavar="NAME", help="only these scan names (default: all)")
    p.add_argument("--frames", type=int, metavar="N", help="frames per scan (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--device", default="cpu", help="torch device for rendering, e.g. cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.subjects < 1 or args.first_subject < 0:
        print("error: --subjects must be >= 1 and --first-subject >= 0", file=sys.stderr)
        return 2
    if args.frames is not None and args.frames < 2:
        print("error: --frames must be >= 2", file=sys.stderr)
        return 2
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        print(f"error: bad --device {args.device!r}: {exc}", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda requested but no CUDA GPU is available", file=sys.stderr)
        return 2
    preset = get_preset(args.preset)
    subjects = range(args.first_subject, args.first_subject + args.subjects)
    t0 = time.perf_counter()
    try:
        root = simulate_dataset(
            args.out,
            subjects,
            preset=preset,
            protocol=args.protocol,
            layout=args.layout,
            seed=args.seed,
            device=device,
            scans=args.scans,
            num_frames=args.frames,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"Simulated dataset ({preset.name}, protocol {args.protocol}, {args.layout} layout) in {root} "
        f"({time.perf_counter() - t0:.1f} s). Check it with: dualtrack verify-data {root}"
    )
    return 0
