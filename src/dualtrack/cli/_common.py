"""Arguments shared by several sub-commands, so that they read the same everywhere."""

from __future__ import annotations

import argparse

from dualtrack.utils import DEFAULT_DEVICE


def add_device_argument(parser: argparse.ArgumentParser, purpose: str = "") -> None:
    """``--device`` with the package-wide default ``auto`` (CUDA when available, else CPU)."""
    suffix = f"; {purpose}" if purpose else ""
    parser.add_argument(
        "--device", default=DEFAULT_DEVICE, metavar="DEV",
        help=f"auto (default: CUDA when available, else CPU), cpu, cuda or cuda:N{suffix}",
    )
