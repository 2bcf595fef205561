"""Arguments shared by several sub-commands, so that they read the same everywhere."""

from __future__ import annotations

import argparse

from dualtrack.utils import DEFAULT_DEVICE, PRECISIONS, UsageError


def add_device_argument(parser: argparse.ArgumentParser, purpose: str = "") -> None:
    """``--device`` with the package-wide default ``auto`` (CUDA when available, else CPU)."""
    suffix = f"; {purpose}" if purpose else ""
    parser.add_argument(
        "--device", default=DEFAULT_DEVICE, metavar="DEV",
        help=f"auto (default: CUDA when available, else CPU), cpu, cuda or cuda:N{suffix}",
    )


def add_chunk_size_argument(parser: argparse.ArgumentParser) -> None:
    """``--chunk-size`` of the local CNN at inference, default automatic (``None``)."""
    parser.add_argument(
        "--chunk-size", type=int, default=None, metavar="N",
        help="frames per chunk of the local CNN (default: the whole sweep when it fits in memory, else "
        "chunks that re-encode under 10 %% of the frames)",
    )


def check_chunk_size(value: int | None) -> None:
    """Refuse a ``--chunk-size`` below 1 as a usage error."""
    if value is not None and value < 1:
        raise UsageError(f"--chunk-size must be >= 1, got {value}")


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """``--precision`` of inference, default ``auto`` (see :data:`dualtrack.utils.PRECISIONS`)."""
    parser.add_argument(
        "--precision", default="auto", choices=PRECISIONS,
        help="auto (default): bf16 autocast on CPUs with native bf16 (AMX / AVX-512 BF16) and on GPUs "
        "that support it, fp16 on other GPUs, else fp32; or force fp32, bf16 or fp16 (CUDA only)",
    )
