"""``dualtrack simulate OUT``: write a simulated freehand-sweep dataset in the TUS-REC layout."""

from __future__ import annotations

import argparse
import time

from dualtrack.cli._common import add_device_argument
from dualtrack.simulate import list_presets, simulate_dataset
from dualtrack.simulate.presets import get_preset
from dualtrack.utils import UsageError, resolve_device

DESCRIPTION = """\
Simulate B-mode freehand sweeps of procedural forearms with exact ground-truth poses and write
them exactly like the TUS-REC data: frames_transfs/<sid>/<scan>.h5 (frames uint8 N x H x W,
tforms float32 N x 4 x 4 tool -> tracker), landmarks/landmark_<sid>.h5, calib_matrix.csv; with
--layout test the val/test layout (frames/, transfs/, landmark(s)/, dataset_keys.h5).

Each scan is a pure function of (seed, subject, scan name, preset). Scans already on disk are
skipped, and every file is written atomically, so re-running an interrupted command resumes it.

Presets (frame size, probe, frames of a 2024 / 2025 scan; --frames overrides):
{presets}
Protocols: 2024 (24 scans a subject: {LH|RH}_{Per|Par}_{L|C|S}_{DtP|PtD}),
2025 (rotation scans {LH|RH}_rotation), both.
"""


def _preset_lines() -> str:
    """One line per preset, generated from :data:`dualtrack.simulate.presets.PRESETS`."""
    lines = []
    for name in list_presets():
        pr = get_preset(name)
        lines.append(
            f"  {name:<7} {pr.height}x{pr.width} px at {pr.spacing[0]:.3g} x {pr.spacing[1]:.3g} mm, "
            f"{pr.probe.kind} probe, {pr.num_frames} / {pr.rotation_frames} frames"
        )
    return "\n".join(lines)


def register(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="write a simulated dataset (TUS-REC layout, exact ground truth)",
        description=DESCRIPTION.replace("{presets}", _preset_lines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", metavar="OUT", help="dataset folder to write (created; existing scans are kept)")
    p.add_argument("--subjects", type=int, default=2, metavar="N", help="number of subjects (default 2)")
    p.add_argument(
        "--first-subject", type=int, default=0, metavar="K", help="first subject id (default 0: 000..N-1)"
    )
    p.add_argument("--preset", default="small", choices=list_presets(), help="size preset (default small)")
    p.add_argument("--protocol", default="2024", choices=["2024", "2025", "both"],
                   help="scan protocol (default 2024)")
    p.add_argument("--layout", default="train", choices=["train", "test"],
                   help="TUS-REC layout: train (frames_transfs/, default) or test (frames/ + transfs/)")
    p.add_argument("--scans", nargs="+", metavar="NAME", help="only these scan names (default: all)")
    p.add_argument("--frames", type=int, metavar="N", help="frames per scan (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    add_device_argument(p, "renders the B-mode frames")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.subjects < 1:
        raise UsageError(f"--subjects must be >= 1, got {args.subjects}")
    if args.first_subject < 0:
        raise UsageError(f"--first-subject must be >= 0, got {args.first_subject}")
    if args.frames is not None and args.frames < 2:
        raise UsageError(f"--frames must be >= 2, got {args.frames}")
    device = resolve_device(args.device)
    preset = get_preset(args.preset)
    subjects = range(args.first_subject, args.first_subject + args.subjects)
    t0 = time.perf_counter()
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
        progress=not args.no_progress,
    )
    print(
        f"Simulated dataset ({preset.name}, protocol {args.protocol}, {args.layout} layout) in {root} "
        f"({time.perf_counter() - t0:.1f} s). Check it with: dualtrack verify-data {root}"
    )
    return 0
