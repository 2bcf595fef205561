"""``dualtrack train CONFIG [key=value ...]``: train one stage into a run directory."""

from __future__ import annotations

import argparse
import os

from dualtrack.training.config import shipped_configs
from dualtrack.training.loop import prepare_run, train
from dualtrack.training.runs import command_line
from dualtrack.utils import UsageError

DESCRIPTION = f"""\
Train a model (one stage of DualTrack, an ablation or a baseline) into a run directory.

CONFIG is a YAML file or a shipped config name: {", ".join(shipped_configs())}.
Any setting can be overridden with dotted key=value pairs, values parsed as YAML and checked
against the config's types, e.g.

  dualtrack train local data.root=/data/tusrec optim.lr=3e-4 --run-dir runs/local
  dualtrack train global data.root=/data/tusrec --run-dir runs/global
  dualtrack train fusion data.root=/data/tusrec stage.local_from=runs/local \\
      stage.global_from=runs/global --run-dir runs/fusion
  dualtrack train --resume --run-dir runs/local          # continue exactly where it stopped

Multi-GPU / multi-node: launch the same command with torchrun, e.g.
  torchrun --nproc_per_node=4 -m dualtrack.cli train local data.root=/data/tusrec --run-dir runs/local

The run directory receives the resolved config, command line, git commit, package versions,
split file, metrics.csv, TensorBoard logs (if installed), last.pt (resumable) and best.pt
(lowest validation GPE). See docs/training.md.
"""


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a stage (local / global / fusion), an ablation or a baseline into a run directory",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", metavar="CONFIG", help="YAML file or shipped config name")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. optim.lr=3e-4")
    p.add_argument("--run-dir", metavar="DIR", help="run directory (default runs/<stage>-<model>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last.pt")
    p.add_argument("--device", metavar="DEV",
                   help="auto, cpu, cuda or cuda:N (sets runtime.device, whose default is auto)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # `--resume key=value` without a CONFIG
        config, overrides = None, [config, *overrides]
    if args.device:
        overrides.append(f"runtime.device={args.device}")
    if config is None and not args.resume:
        raise UsageError("CONFIG is required unless --resume is given")
    cfg, run_dir = prepare_run(config, overrides, args.run_dir, args.resume)
    result = train(cfg, run_dir if run_dir is not None else args.run_dir, args.resume, command_line())
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    state = result.state
    status = "finished" if result.finished else "stopped (resume with --resume)"
    print(f"{status}: {state.step} steps, {state.samples_seen} items -> {result.run_dir}")
    if result.last_val:
        print("last validation: " + ", ".join(f"{k} {v:.4g}" for k, v in result.last_val.items()))
        print(f"best validation GPE: {result.best_gpe:.4g} mm")
    return 0
