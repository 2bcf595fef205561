"""``dualtrack benchmark CONFIG [key=value ...]``: the paper's comparison table on our own data."""

from __future__ import annotations

import argparse

from dualtrack.evaluation.benchmark import load_benchmark_config, run_benchmark, shipped_benchmarks
from dualtrack.training.runs import command_line

DESCRIPTION = f"""\
Train (or reuse) every model of a benchmark on one dataset and subject split, evaluate them all on
the same held-out scans, and write the DualTrack paper's Table 1 (GPE, LPE, FDR, max drift; plus
the TUS-REC all-pixel errors and normalised score), per-scan CSVs, box plots (the paper's Fig. 3a),
paired Wilcoxon tests of the reference model against each other one, a global-branch check (is
DualTrack's global input used at all?), summary.md and report.html.

CONFIG is a YAML file or a shipped benchmark: {", ".join(shipped_benchmarks())}.
Settings can be overridden with dotted key=value pairs (values parsed as YAML); models are
addressed by name, e.g.

  dualtrack benchmark benchmark_tiny -o benchmark_output/tiny          # tiny models, CPU
  dualtrack benchmark benchmark data.simulate=null data.root=/data/tusrec \\
      train_overrides=[runtime.device=cuda] -o benchmark_output/tusrec
  dualtrack benchmark benchmark epoch_scale=0.01 models.dualtrack.label=Ours

Resumable: a stage whose run directory (<output>/runs/<model>/<stage>) holds a finished
checkpoint is reused, an interrupted one is resumed; run the same command again after a crash.
Use --dry-run to see what would be trained. See docs/benchmark.md.
"""


def register(sub) -> None:
    p = sub.add_parser(
        "benchmark",
        help="train or reuse a list of models, evaluate all on the same test scans, write the paper's table",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", metavar="CONFIG", help="benchmark YAML file or shipped benchmark name")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. data.root=/data")
    p.add_argument("-o", "--output", metavar="DIR", help="output folder (default: the config's output)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be trained, resumed or reused; simulate, train and write nothing",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_benchmark_config(args.config, args.overrides)
    result = run_benchmark(cfg, args.output, dry_run=args.dry_run, progress=not args.no_progress,
                           argv=command_line())
    print(f"benchmark {cfg.name}: {result.out_dir}")
    for job in result.plan.jobs:
        took = f" ({job.seconds:.1f} s)" if job.seconds else ""
        print(f"  {job.key:<32} {job.action}{took}  {job.run_dir}")
    if args.dry_run:
        print("dry run: nothing trained or evaluated")
        return 0
    print()
    print(result.files["table.md"].read_text(encoding="utf-8"))
    for name in ("summary.md", "report.html", "table.csv", "wilcoxon.csv", "global_check.csv"):
        print(f"{name}: {result.files[name]}")
    return 0
