"""``dualtrack demo``: simulate, train, evaluate, reconstruct, report (see :mod:`dualtrack.demo`)."""

from __future__ import annotations

import argparse

from dualtrack.cli._common import add_device_argument

EPILOG = """\
what it does (the measured duration is in docs/demo.md):
  1. simulates a small TUS-REC-layout dataset of forearm sweeps       OUT/data/
  2. splits it by subject into train / validation / test               OUT/splits.json
  3. trains a small DualTrack: local -> global -> fusion stages        OUT/runs/{local,global,fusion}/
  4. evaluates DualTrack and the local-only model on the test subjects OUT/evaluation/
  5. predicts one test sweep and reconstructs it with the predicted
     and the true trajectory (NRRD + Slicer sequence)                  OUT/prediction/, OUT/volumes/
  6. writes the report (HTML + PNG)                                    OUT/report/report.html

The numbers are those of a short demo run on simulated data, not the paper's.
"""


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="end-to-end demo: simulate, train briefly, evaluate, reconstruct, report",
        description="Run the whole pipeline on a freshly simulated dataset and write an HTML report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-o", "--output", default="demo_output", metavar="OUT",
                   help="output folder (default: demo_output)")
    add_device_argument(p, "on CUDA the demo uses a larger preset, larger models and longer training")
    p.add_argument("--preset", choices=("tiny", "small", "tusrec"),
                   help="override the simulator preset of the plan (the model crop must fit its frames)")
    p.add_argument("--quick", action="store_true",
                   help="a much smaller smoke run (tiny preset, a few training steps; seconds)")
    p.add_argument("--seed", type=int, default=0, help="seed of simulation, split and training (default 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="remove the demo's earlier outputs in OUT first")
    p.set_defaults(func=run)


def run(args) -> int:
    from dualtrack.demo import format_summary, run_demo

    res = run_demo(args.output, device=args.device, preset=args.preset, overwrite=args.overwrite,
                   seed=args.seed, quick=args.quick)
    print()
    print(format_summary(res))
    return 0
