"""``dualtrack import-weights CHECKPOINT --arch A -o DIR``: the DualTrack authors' released weights
as an export folder of this package (:func:`dualtrack.models.authors.import_weights`)."""

from __future__ import annotations

import argparse

from dualtrack.models.authors import IMPORTABLE, import_weights

DESCRIPTION = """\
Convert a checkpoint released by the DualTrack authors (their TUS-REC 2024 model, or the
TUS-REC 2025 challenge model with 4096-entry position tables) into an export folder
(model.safetensors + config.json) that `dualtrack predict`, `reconstruct`, `evaluate`,
`benchmark`, predict_ddfs and training's init_from accept.

The checkpoint is read with torch.load(weights_only=True) (no code is unpickled): a bare
state_dict or their training checkpoint with a 'model' entry. Every key must map onto the
architecture, every parameter of ours must be filled and every shape must agree; otherwise
nothing is written and the error names the keys. The weights are the authors' (CC BY-NC-SA 4.0:
non-commercial use); this package ships and downloads none. See docs/models.md.

  dualtrack import-weights dualtrack_final.pt --arch dualtrack_tusrec2024 -o weights/dualtrack2024
  dualtrack predict scan.h5 --weights weights/dualtrack2024 -o pred/
"""


def register(sub) -> None:
    p = sub.add_parser(
        "import-weights",
        help="import the DualTrack authors' released weights (TUS-REC 2024 / 2025)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="the authors' .pt file")
    p.add_argument(
        "--arch",
        required=True,
        choices=IMPORTABLE,
        help="architecture of the checkpoint: dualtrack_tusrec2024 (1024 positions) or "
        "dualtrack_tusrec2025 (4096); *_tiny are test sizes",
    )
    p.add_argument("-o", "--output", metavar="DIR", required=True, help="export folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export in DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    folder = import_weights(args.checkpoint, args.arch, args.output, overwrite=args.overwrite)
    print(
        f"imported {args.checkpoint} ({args.arch}) -> {folder / 'model.safetensors'} + "
        f"{folder / 'config.json'}"
    )
    return 0
