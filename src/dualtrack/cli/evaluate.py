"""``dualtrack evaluate RUN_OR_WEIGHTS --data DIR``: per-scan metrics, summary, paired comparisons."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dualtrack.cli._common import (
    add_chunk_size_argument,
    add_device_argument,
    add_precision_argument,
    check_chunk_size,
)
from dualtrack.data import TusRecDataset
from dualtrack.data.splits import load_splits
from dualtrack.data.verify import preflight
from dualtrack.evaluation.evaluate import (
    PAPER_METRICS,
    compare,
    evaluate_model,
    format_comparison,
    read_table,
    select_scans,
    write_results,
)
from dualtrack.inference import Predictor
from dualtrack.training.config import load_config
from dualtrack.utils import UsageError, atomic_write, check_output_dir

DESCRIPTION = """\
Evaluate a trained model (run directory, checkpoint or exported folder) on whole sweeps.

Writes OUT/metrics.csv (one row per scan: GPE, LPE [mm], FDR [%], max drift [mm], frames,
prediction seconds; with --tusrec-metrics also the official all-pixel / landmark errors
tusrec_GPE/LPE/GLE/LLE and the TUS-REC 2025 normalised scores) and OUT/summary.json (mean,
median, std, min, max over scans), and prints the summary.

Scans: --split test|val|train of the subject-level split (the run's splits.json by default, or
--splits FILE), or --split all for every scan of --data (e.g. the official validation set).

Compare methods evaluated on the same scans (summary table + paired Wilcoxon signed-rank tests):
  dualtrack evaluate --compare dualtrack=runs/fusion/eval-val local=runs/local/eval-val
"""


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a model on whole sweeps (paper and TUS-REC metrics), or compare evaluations",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "weights", nargs="?", metavar="RUN_OR_WEIGHTS", help="run dir, checkpoint or export folder"
    )
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: the run's data.root)")
    p.add_argument(
        "--split",
        choices=("test", "val", "train", "all"),
        help="which scans (default with a splits file: test, or val when test is empty; else all)",
    )
    p.add_argument("--splits", metavar="FILE", help="splits JSON (default: the run's splits.json)")
    p.add_argument("-o", "--output", metavar="OUT", help="output folder (default RUN/eval-<split>)")
    add_device_argument(p)
    add_chunk_size_argument(p)
    add_precision_argument(p)
    p.add_argument(
        "--tusrec-metrics",
        action="store_true",
        help="also compute the official all-pixel / landmark errors and normalised score",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="NAME=TABLE",
        help="compare per-scan tables (metrics.csv or their folders) instead of evaluating",
    )
    p.add_argument("--reference", metavar="NAME", help="with --compare: test every method against NAME")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation in OUT")
    p.set_defaults(func=run)


def _run_compare(args: argparse.Namespace) -> int:
    tables = {}
    for item in args.compare:
        name, _, path = item.rpartition("=")
        name = name or Path(path).parent.name or path
        tables[name] = read_table(path)
    result = compare(tables, PAPER_METRICS, reference=args.reference)
    print(format_comparison(result))
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "comparison.json") as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"written {out / 'comparison.json'}")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    src = Path(args.weights)
    run_dir = src if (src / "config.yaml").is_file() else None
    data = args.data
    if data is None:
        if run_dir is None:
            raise UsageError(f"--data DIR is required: {src} is not a run directory (no config.yaml)")
        data = load_config(run_dir / "config.yaml").data.root
    splits = args.splits
    if splits is None and run_dir is not None and (run_dir / "splits.json").is_file():
        splits = run_dir / "splits.json"
    split = args.split
    if split is None:
        split = "all" if splits is None else ("test" if load_splits(splits).test else "val")
    out = Path(args.output) if args.output else (run_dir or src.parent) / f"eval-{split}"
    check_output_dir(out, args.overwrite)  # before the (long) evaluation
    predictor = Predictor.from_path(src, device=args.device, chunk_size=args.chunk_size,
                                    precision=args.precision)
    dataset = TusRecDataset(data)
    preflight(data)
    scans = select_scans(dataset, split, splits)
    evaluation = evaluate_model(predictor, dataset, scans, tusrec=args.tusrec_metrics, progress=True)
    name = predictor.model.model_name
    evaluation.info.update(
        model=name,
        weights=predictor.source,
        split=split,
        splits=None if splits is None else str(splits),
    )
    csv_path, json_path = write_results(evaluation, out, overwrite=args.overwrite)
    summary = evaluation.summary
    print(f"{name} on {len(evaluation.table)} scans ({split}) of {data}")
    keys = [
        k
        for k in (*PAPER_METRICS, "tusrec_GPE", "tusrec_GLE", "tusrec_LPE", "tusrec_LLE", "final_score")
        if k in summary
    ]
    for k in keys:
        s = summary[k]
        print(f"  {k:<12} mean {s['mean']:.4g}  median {s['median']:.4g}  std {s['std']:.4g}")
    print(f"written {csv_path} and {json_path}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.compare:
        return _run_compare(args)
    if args.weights is None:
        raise UsageError("RUN_OR_WEIGHTS is required (or use --compare NAME=TABLE ...)")
    check_chunk_size(args.chunk_size)
    return _run_evaluate(args)
