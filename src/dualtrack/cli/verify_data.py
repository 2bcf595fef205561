"""``dualtrack verify-data DIR``: check a TUS-REC dataset folder against the data contract."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dualtrack.data.verify import verify_dataset
from dualtrack.utils import atomic_write

DESCRIPTION = """\
Check a dataset folder in either TUS-REC layout (train: frames_transfs/; val/test: frames/ +
transfs/ + dataset_keys.h5) before training or evaluating on it: missing files or keys, frame
and transform shapes and dtypes, frame/transform count mismatches, NaN/Inf or non-rigid
transforms, the calibration file, landmarks out of range, truncated or corrupt HDF5 files.

Prints the counts (subjects, scans, frames), then every error and warning with the file it
concerns. Exit code 1 if there is any error, 0 otherwise (warnings allowed).
"""


def register(sub) -> None:
    p = sub.add_parser(
        "verify-data",
        help="check a TUS-REC dataset folder (real, simulated or converted) against the data contract",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("root", metavar="DIR", help="dataset folder (or the folder that holds data/)")
    p.add_argument("--json", metavar="OUT", type=Path, help="also write the full report as JSON to OUT")
    p.add_argument(
        "--full",
        action="store_true",
        help="read every frame of every scan (finds corrupt data anywhere, but reads the whole "
        "dataset: hours for the 226 GB release); default reads the first and last frame of each scan",
    )
    p.add_argument(
        "--max-issues",
        type=int,
        default=100,
        metavar="N",
        help="print at most N errors and N warnings (default 100; the JSON always has all)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = verify_dataset(args.root, full=args.full, progress=True)
    print(report.format(max_issues=args.max_issues))
    if args.json is not None:
        with atomic_write(args.json) as tmp:
            tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        print(f"Report written to {args.json}")
    return 0 if report.ok else 1
