"""``dualtrack export RUN [-o DIR]``: released weights as ``model.safetensors`` + ``config.json``."""

from __future__ import annotations

import argparse
from pathlib import Path

from dualtrack.models.weights import export_model

DESCRIPTION = """\
Export the weights of a run directory (best.pt, else last.pt) or of a checkpoint file as
model.safetensors + config.json (model name and configuration, target statistics, the local
input crop). Load them back with dualtrack.training.load_model(DIR), or pass DIR to
`dualtrack evaluate` / `dualtrack predict`.
"""


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a run's weights as model.safetensors + config.json",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", metavar="RUN", help="run directory or checkpoint (.pt)")
    p.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="output folder (default RUN/export, or export/ beside a checkpoint file)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing export in DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    src = Path(args.run)
    out = Path(args.output) if args.output else (src if src.is_dir() else src.parent) / "export"
    folder = export_model(src, out, overwrite=args.overwrite)
    print(f"exported {src} -> {folder / 'model.safetensors'} + {folder / 'config.json'}")
    return 0
