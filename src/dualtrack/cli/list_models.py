"""``dualtrack list-models``: registered model names with their parameter counts."""

from __future__ import annotations

import argparse
import logging

import torch

from dualtrack.models import create_model, list_models

log = logging.getLogger(__name__)


def model_parameter_counts(pattern: str | None = None) -> dict[str, int]:
    """Registered model name -> number of parameters (default config), optionally filtered.

    Models are built on PyTorch's ``meta`` device (no memory, no initialisation cost); a model that
    cannot be built there is built on the CPU instead.
    """
    counts = {}
    for name in list_models(pattern):
        try:
            with torch.device("meta"):
                model = create_model(name)
        except (RuntimeError, NotImplementedError):
            model = create_model(name)
        counts[name] = sum(p.numel() for p in model.parameters())
    return counts


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list-models",
        help="list registered models and their parameter counts",
        description="List the registered model names (the values accepted by `model.name` in training "
        "configs and by create_model) with their parameter counts at the default configuration. "
        "Every architecture has a `<name>_tiny` variant for tests and quick demos.",
    )
    p.add_argument("--filter", metavar="TEXT", default=None, help="only names containing TEXT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    counts = model_parameter_counts(args.filter)
    if not counts:
        log.error("no registered model name contains %r; run `dualtrack list-models` to see all", args.filter)
        return 1
    width = max(len(n) for n in counts)
    print(f"{'model':<{width}}  {'parameters':>12}")
    for name, n in counts.items():
        print(f"{name:<{width}}  {n:>12,d}")
    return 0
