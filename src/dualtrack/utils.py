"""Small shared helpers used by every layer: atomic writes, the device default, the usage-error
type, and progress reporting that suits both terminals and log files."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "atomic_write", "check_output_dir", "atomic_dir", "available_memory_bytes", "cpu_name", "UsageError",
    "DEFAULT_DEVICE", "resolve_device", "PRECISIONS", "cpu_supports_bf16", "resolve_precision",
    "autocast", "progress_bar", "LogProgress",
]

log = logging.getLogger("dualtrack.progress")

DEFAULT_DEVICE = "auto"
"""The device default of every command and library entry point: CUDA when available, else CPU."""


class UsageError(ValueError):
    """A bad command-line value or configuration (the ``dualtrack`` CLI exits with code 2).

    Errors about the data or the run itself (a missing file, a corrupt scan) are ordinary
    ``OSError`` / ``ValueError`` and exit with code 1.
    """


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it over ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is left untouched, so a killed
    or failed write never leaves a half-written file that looks complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_output_dir(path: str | os.PathLike, overwrite: bool) -> Path:
    """``path`` as an output folder: refused if it is a file, or a non-empty folder without
    ``overwrite`` (``FileExistsError`` naming the folder and the ``--overwrite`` fix)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"output folder {path} is an existing file")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder {path} exists and is not empty; use --overwrite to replace it")
    return path


@contextlib.contextmanager
def atomic_dir(
    path: str | os.PathLike, overwrite: bool = False, managed: Collection[str] | None = None
) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``path``; when the block succeeds it becomes ``path``.

    The previous folder is renamed aside, the new one renamed into place, and only then is the old
    one deleted, so a failure or a kill at any point leaves either the complete old outputs or the
    complete new ones (after a kill between the two renames, the old ones wait in
    ``.<name>.old-<pid>`` beside it). With ``managed`` (file names), only those entries are
    replaced: other entries of an existing folder are moved over into the new one.

    Raises:
        FileExistsError: see :func:`check_output_dir`.
    """
    path = check_output_dir(path, overwrite)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            if managed is not None:
                for entry in path.iterdir():
                    if entry.name not in managed and not (tmp / entry.name).exists():
                        os.replace(entry, tmp / entry.name)
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def cpu_name() -> str:
    """The CPU model name from ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    import platform

    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def available_memory_bytes() -> int:
    """``MemAvailable`` of ``/proc/meminfo`` (20 GB assumed where it cannot be read)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return 20 * 10**9


def resolve_device(name: str | torch.device | None = DEFAULT_DEVICE, local_rank: int = 0) -> torch.device:
    """``"auto"`` (or ``None``) -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; other
    names (``cpu``, ``cuda``, ``cuda:N``) as given, a bare ``cuda`` becoming ``cuda:<local_rank>``.

    Raises:
        UsageError: an unknown device name, or CUDA requested but not available.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if name is None or name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {name!r} requested but CUDA is not available; use auto or cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
"""Values of every ``precision`` setting (``--precision``): ``auto`` = bf16 autocast on CPUs with
native bf16 (AMX or AVX-512 BF16) and on CUDA GPUs that support it, fp16 on other GPUs, else fp32."""


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX tiles or AVX-512 BF16), where oneDNN runs bf16
    convolutions and matrix products several times faster than fp32."""
    import torch.cpu

    names = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private, so looked up with care
    checks = [getattr(torch.cpu, name, None) for name in names]
    if all(callable(c) for c in checks):
        return any(c() for c in checks)
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
        return " amx_bf16" in flags or " avx512_bf16" in flags
    return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a ``precision`` setting on ``device`` (``None`` = plain fp32).

    Raises:
        UsageError: an unknown value, or ``fp16`` on a CPU.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    cuda = device.type == "cuda"
    if precision == "auto":
        if cuda:
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_supports_bf16() else None
    if precision == "fp16" and not cuda:
        raise UsageError("precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op context for ``None`` (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class LogProgress:
    """A progress reporter for output that is not a terminal: a log line every ``every_fraction``
    of the work or every ``every_s`` seconds (whichever comes first), and one at the end, instead
    of carriage-return redraws. Implements the part of tqdm's interface the package uses
    (iteration, ``update``, ``set_postfix``, ``close``, context manager)."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        every_fraction: float = 0.1,
        every_s: float = 60.0,
        logger: logging.Logger = log,
    ) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.every_fraction, self.every_s, self.logger = every_fraction, every_s, logger
        self.postfix = ""
        self.start = self._last_time = time.monotonic()
        self._last_n = initial
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        step = (self.total or 0) * self.every_fraction
        if (step > 0 and self.n - self._last_n >= step) or now - self._last_time >= self.every_s:
            self._emit(now)

    def _emit(self, now: float) -> None:
        done = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        self.logger.info("%s: %s%s, %.0f s%s", self.desc or "progress", done, pct, now - self.start, extra)
        self._last_n, self._last_time = self.n, now

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n != self._last_n:
                self._emit(time.monotonic())


class _Silent(LogProgress):
    def _emit(self, now: float) -> None:
        self._last_n, self._last_time = self.n, now


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    initial: int = 0,
    enabled: bool = True,
    stream: Any = None,
) -> Any:
    """A tqdm bar when ``stream`` (default stderr) is a terminal; else a :class:`LogProgress` that
    logs a line every 10 % / 60 s; with ``enabled=False`` an object of the same interface that
    reports nothing. Use like tqdm: iterate over it, or ``update`` / ``set_postfix`` / ``close``."""
    if not enabled:
        return _Silent(iterable, total=total, desc=desc, unit=unit, initial=initial)
    stream = sys.stderr if stream is None else stream
    if getattr(stream, "isatty", lambda: False)():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True,
                    file=stream)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)
