"""``dualtrack benchmark``: the paper's comparison table (Table 1, Fig. 3a) on our own data.

A benchmark is one YAML file (:class:`BenchmarkConfig`): a dataset (a folder, or a recipe that
simulates it), one subject-level split, a list of models, and evaluation options.
:func:`run_benchmark`

1. simulates the dataset when asked (resumable) and fixes the split in ``<out>/splits.json``;
2. trains every model's stages in dependency order, each in ``<runs_dir>/<model>/<stage>``
   (default ``runs_dir = <out>/runs``) with :func:`dualtrack.training.train`, always on the same
   ``data.root`` and ``data.splits``. A stage whose run directory holds a **finished** checkpoint of
   the same settings is reused, an interrupted one is resumed (``last.pt``), others are trained.
   Settings that differ from a reused run's ``config.yaml`` are an error, never silently mixed;
3. evaluates every model on the same held-out scans with
   :func:`dualtrack.evaluation.evaluate.evaluate_model` (5-point GPE / LPE, FDR, max drift and the
   TUS-REC all-pixel / landmark errors with the normalised score);
4. writes the table in the paper's form, per-scan CSVs, box plots, paired Wilcoxon tests of the
   reference model (DualTrack) against each other model, the global-branch check
   (:mod:`dualtrack.evaluation.global_check`), a markdown summary and an HTML page.

Model entries take exactly one weights source: ``stages`` (a chain of training stages, e.g.
DualTrack = ``local`` -> ``global`` -> ``fusion``), ``reuse`` (another model's stage, e.g. the
``local_only`` ablation *is* DualTrack's trained local encoder, as in the paper), or ``run_dir`` (an
existing run directory, checkpoint or exported folder). Stage references (``local_from``,
``global_from``, ``init_from``) name a stage of the same model (``local``), a stage of another
model (``dualtrack.local``) or a model (its final stage).

Output folder::

    table.md  table.csv  per_scan/<model>.csv  boxplots_<metric>.png  wilcoxon.csv
    global_check.csv  summary.md  report.html  splits.json  benchmark.json  runs/
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from dualtrack import __version__
from dualtrack.data import TusRecDataset, normalise_subject
from dualtrack.data.splits import Splits, load_splits, make_splits, save_splits
from dualtrack.data.verify import preflight
from dualtrack.evaluation.evaluate import compare, evaluate_model, identity_table, summarise, write_table
from dualtrack.evaluation.global_check import GLOBAL_MODES, global_branch_check
from dualtrack.inference import Predictor
from dualtrack.training.config import ConfigError, coerce, find_config_file, shipped_names
from dualtrack.training.pipeline import ModelSpec, PipelinePlan, plan_pipeline, run_pipeline
from dualtrack.utils import atomic_write

__all__ = [
    "SimulateSpec",
    "DataSpec",
    "GlobalCheckSpec",
    "EvaluationSpec",
    "BenchmarkConfig",
    "BenchmarkResult",
    "TABLE_COLUMNS",
    "load_benchmark_config",
    "benchmark_config_from_dict",
    "shipped_benchmarks",
    "plan_benchmark",
    "run_benchmark",
    "format_paper_table",
]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


# ------------------------------------------------------------------------------------------- config


@dataclass
class SimulateSpec:
    """Recipe of a simulated dataset (:func:`dualtrack.simulate.simulate_dataset`, train layout).

    Attributes:
        preset: simulator preset (``tiny``, ``small``, ``tusrec``).
        subjects: number of subjects (``000 .. subjects-1``).
        protocol: ``"2024"`` (24 scans a subject), ``"2025"`` (2 rotation scans) or ``"both"``.
        scans: restrict to these scan names (``null`` = all of the protocol).
        num_frames: frames per scan (``null`` = the preset's).
        seed: dataset seed.
        device: rendering device (``cpu``, ``cuda``).
    """

    preset: str = "tiny"
    subjects: int = 46
    protocol: int | str = "2024"
    scans: list[str] | None = None
    num_frames: int | None = None
    seed: int = 0
    device: str = "cpu"


@dataclass
class DataSpec:
    """Dataset and split shared by every model.

    Attributes:
        root: dataset folder (TUS-REC layout). With ``simulate`` it is where the data are written
            (default ``<out>/data``).
        simulate: simulate the dataset first (skipped scan by scan when already on disk).
        splits: a split file (:mod:`dualtrack.data.splits`); ``null`` = a random subject split with
            ``val`` / ``test`` subjects (counts, or fractions when < 1) and ``split_seed``.
        val, test: held-out subjects (int count or float fraction) when ``splits`` is ``null``.
        split_seed: seed of that split.
    """

    root: str = ""
    simulate: SimulateSpec | None = None
    splits: str | None = None
    val: int | float = 3
    test: int | float = 3
    split_seed: int = 0


@dataclass
class GlobalCheckSpec:
    """The global-branch check (:mod:`dualtrack.evaluation.global_check`).

    Attributes:
        enabled: run it.
        models: models to check (``null`` = every model with a separate global branch).
        modes: replacements of the global input (``zeros``, ``noise``, ``other_sweep``, ``shuffle``).
        seed: seed of ``noise`` / ``shuffle``.
    """

    enabled: bool = True
    models: list[str] | None = None
    modes: list[str] = field(default_factory=lambda: list(GLOBAL_MODES))
    seed: int = 0


@dataclass
class EvaluationSpec:
    """How the models are evaluated.

    Attributes:
        split: held-out subjects to evaluate on (``test`` or ``val``).
        reference: model tested against every other one (paired Wilcoxon); ``null`` = no tests.
        tusrec: also compute the all-pixel TUS-REC errors and the normalised score.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``.
        chunk_size: frames per chunk of the local CNN at inference (``null`` = automatic).
        precision: inference precision, ``auto`` (bf16 where the hardware has it), ``fp32``,
            ``bf16`` or ``fp16``; the global check uses the same.
        max_scans: evaluate at most this many scans, spread evenly (``null`` = all).
        boxplots: metrics with a box plot of their per-scan distribution.
        global_check: the global-branch check.
    """

    split: Literal["test", "val"] = "test"
    reference: str | None = "dualtrack"
    tusrec: bool = True
    device: str = "auto"
    chunk_size: int | None = None
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    max_scans: int | None = None
    boxplots: list[str] = field(default_factory=lambda: ["GPE", "LPE", "FDR", "max_drift"])
    global_check: GlobalCheckSpec = field(default_factory=GlobalCheckSpec)


@dataclass
class BenchmarkConfig:
    """A complete benchmark (see the module docstring).

    Attributes:
        name: benchmark id (default output folder ``benchmark_output/<name>``).
        title: heading of the table and the reports.
        output: output folder (``""`` = ``benchmark_output/<name>``).
        runs_dir: where the training runs live (``null`` = ``<output>/runs``).
        epoch_scale: multiplies every stage's epochs and warm-up (``0.01`` for a quick run); at
            least one epoch is kept.
        train_overrides: ``key=value`` training overrides for every stage (e.g. ``runtime.device=cuda``).
        data: dataset and split.
        models: the models, in table order.
        evaluation: evaluation options.
    """

    name: str = "benchmark"
    title: str = "Sensorless freehand 3D ultrasound: comparison and ablation"
    output: str = ""
    runs_dir: str | None = None
    epoch_scale: float = 1.0
    train_overrides: list[str] = field(default_factory=list)
    data: DataSpec = field(default_factory=DataSpec)
    models: list[ModelSpec] = field(default_factory=list)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def output_dir(self) -> Path:
        return Path(self.output or f"benchmark_output/{self.name}")


def shipped_benchmarks() -> list[str]:
    """Names of the benchmark configs shipped in ``dualtrack/configs`` (``benchmark*.yaml``)."""
    return shipped_names("benchmark")


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts; list items by index or, for ``models``, by model name."""
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if part.isdigit() and int(part) < len(node):
                idx = int(part)
            else:
                names = [item.get("name") if isinstance(item, dict) else None for item in node]
                if part not in names:
                    raise ConfigError(
                        f"--set {key}: {'.'.join(parts[:i])} has no item {part!r} (index or name)"
                    )
                idx = names.index(part)
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i])} is not a section")


def benchmark_config_from_dict(data: Mapping[str, Any], where: str = "benchmark config") -> BenchmarkConfig:
    """Type-check a mapping into a :class:`BenchmarkConfig` and validate it (:func:`_validate`).

    Raises:
        ConfigError: unknown keys, wrong types, or an inconsistent model list (the message names it).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: must be a mapping, got {type(data).__name__}")
    try:
        cfg = coerce(dict(data), BenchmarkConfig, "")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {str(exc).lstrip('.')}") from None
    _validate(cfg, where)
    return cfg


def load_benchmark_config(name_or_path: str | os.PathLike, overrides: Sequence[str] = ()) -> BenchmarkConfig:
    """Read a benchmark YAML (a path or a shipped name such as ``benchmark_tiny``).

    Args:
        name_or_path: the file.
        overrides: ``dotted.key=value`` (value parsed as YAML); list items of ``models`` may be
            addressed by name, e.g. ``models.dualtrack.overrides=[optim.lr=3e-4]``.

    Raises:
        ConfigError: missing file, invalid YAML, unknown keys, wrong types or an invalid model list.
    """
    path = find_config_file(name_or_path, shipped_benchmarks(), "benchmark config", "benchmark")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a benchmark config must hold a mapping")
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} must look like key=value (e.g. data.root=/data/tusrec)")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        _set_dotted(data, key.strip(), value)
    return benchmark_config_from_dict(data, str(path))


def _validate(cfg: BenchmarkConfig, where: str) -> None:
    if not cfg.models:
        raise ConfigError(f"{where}: 'models' is empty")
    if cfg.epoch_scale <= 0:
        raise ConfigError(f"{where}: epoch_scale must be > 0, got {cfg.epoch_scale}")
    names = [m.name for m in cfg.models]
    for m in cfg.models:
        if not _NAME.match(m.name):
            raise ConfigError(f"{where}: model name {m.name!r} must use letters, digits, '_' or '-'")
        sources = [k for k in ("stages", "reuse", "run_dir") if getattr(m, k)]
        if len(sources) != 1:
            raise ConfigError(
                f"{where}: model {m.name!r} needs exactly one of 'stages', 'reuse' or 'run_dir' "
                f"(got {sources or 'none'})"
            )
        if m.ablation is not None and len(m.ablation) != 3:
            raise ConfigError(f"{where}: model {m.name!r}: ablation must be [local, global, dual_encoder]")
        if not m.comparison and m.ablation is None:
            raise ConfigError(
                f"{where}: model {m.name!r} is in neither the comparison nor the ablation block"
            )
        stage_names = [s.name for s in m.stages]
        if len(set(stage_names)) != len(stage_names):
            raise ConfigError(f"{where}: model {m.name!r} has duplicate stage names {stage_names}")
        for s in m.stages:
            if not _NAME.match(s.name):
                raise ConfigError(
                    f"{where}: model {m.name!r}: stage name {s.name!r} must use letters, digits, _ -"
                )
            if not s.config:
                raise ConfigError(f"{where}: model {m.name!r}, stage {s.name!r}: 'config' is required")
        for o in [*cfg.train_overrides, *m.overrides, *(o for s in m.stages for o in s.overrides)]:
            if o.split("=", 1)[0].strip() in ("data.root", "data.splits"):
                raise ConfigError(
                    f"{where}: override {o!r}: the benchmark sets data.root and data.splits for every model "
                    "(use the benchmark's data section)"
                )
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{where}: duplicate model names {dup}")
    ref = cfg.evaluation.reference
    if ref is not None and ref not in names:
        raise ConfigError(f"{where}: evaluation.reference {ref!r} is not a model; models: {names}")
    unknown = [m for m in cfg.evaluation.global_check.models or [] if m not in names]
    if unknown:
        raise ConfigError(
            f"{where}: evaluation.global_check.models {unknown} are not models; models: {names}"
        )
    bad_modes = [m for m in cfg.evaluation.global_check.modes if m not in GLOBAL_MODES]
    if bad_modes:
        raise ConfigError(f"{where}: evaluation.global_check.modes {bad_modes}; valid: {list(GLOBAL_MODES)}")
    if cfg.data.simulate is not None:
        held_out = [x for x in (cfg.data.val, cfg.data.test) if isinstance(x, int)]
        if cfg.data.splits is None and sum(held_out) >= cfg.data.simulate.subjects:
            raise ConfigError(
                f"{where}: data.val + data.test ({sum(held_out)} subjects) leave none of the "
                f"{cfg.data.simulate.subjects} simulated subjects for training"
            )
        cfg.data.simulate.protocol = str(cfg.data.simulate.protocol)
        if cfg.data.simulate.protocol not in ("2024", "2025", "both"):
            raise ConfigError(f"{where}: data.simulate.protocol must be 2024, 2025 or both")
    if not cfg.data.root and cfg.data.simulate is None:
        raise ConfigError(f"{where}: set data.root (a dataset folder) or data.simulate (a recipe)")


# --------------------------------------------------------------------------------------------- plan


def plan_benchmark(cfg: BenchmarkConfig, data_root: Path, splits_path: Path, splits: Splits) -> PipelinePlan:
    """The benchmark's training plan: :func:`~dualtrack.training.pipeline.plan_pipeline` of its
    models under ``runs_dir`` (default ``<output>/runs``), with its ``epoch_scale`` and
    ``train_overrides``.

    Raises:
        ConfigError: a bad training config or override, an unresolved reference or a cycle.
    """
    runs = Path(cfg.runs_dir).resolve() if cfg.runs_dir else cfg.output_dir / "runs"
    return plan_pipeline(cfg.models, runs, data_root, splits_path, epoch_scale=cfg.epoch_scale,
                         train_overrides=cfg.train_overrides)


# ------------------------------------------------------------------------------------------ running


TABLE_COLUMNS: tuple[tuple[str, str, float, str], ...] = (
    ("GPE", "GPE (mm)", 1.0, ".2f"),
    ("LPE", "LPE (µm)", 1000.0, ".2f"),
    ("FDR", "FDR (%)", 1.0, ".2f"),
    ("max_drift", "Max. drift (mm)", 1.0, ".2f"),
    ("tusrec_GPE", "GPE all-px (mm)", 1.0, ".2f"),
    ("tusrec_LPE", "LPE all-px (mm)", 1.0, ".4f"),
    ("tusrec_GLE", "GLE (mm)", 1.0, ".2f"),
    ("tusrec_LLE", "LLE (mm)", 1.0, ".4f"),
    ("final_score", "Score", 1.0, ".3f"),
)
"""Table columns: ``(metric key, header, display factor, format)``; the paper's four first (5-point
GPE / LPE, LPE shown in µm as in the paper), then the TUS-REC all-pixel / landmark errors and the
normalised score (higher is better). Columns without values are left out."""

HIGHER_IS_BETTER = ("final_score",)

_UNITS = {"GPE": "mm", "LPE": "mm", "FDR": "%", "max_drift": "mm", "final_score": ""}


@dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` produced.

    Attributes:
        out_dir: the output folder.
        plan: the training plan with the action taken for every stage.
        tables: ``{model: {scan_key: {metric: value}}}`` per-scan evaluations.
        rows: the table rows (``table.csv``), one per model in config order.
        wilcoxon: rows of ``wilcoxon.csv``.
        global_check: rows of ``global_check.csv``.
        identity: per-scan errors of predicting no motion (``per_scan/identity.csv``), the
            reference of each row's ``GPE_score`` = ``1 - GPE / GPE of no motion`` (means over scans).
        files: ``{name: path}`` of everything written.
    """

    out_dir: Path
    plan: PipelinePlan
    tables: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    wilcoxon: list[dict[str, Any]] = field(default_factory=list)
    global_check: list[dict[str, Any]] = field(default_factory=list)
    identity: dict[str, dict[str, float]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def trained(self) -> list[str]:
        """Stage keys trained or resumed by this invocation."""
        return [j.key for j in self.plan.jobs if j.action in ("train", "resume")]

    @property
    def reused(self) -> list[str]:
        """Stage keys whose finished runs were reused."""
        return [j.key for j in self.plan.jobs if j.action == "reuse"]


def _prepare_data(cfg: BenchmarkConfig, out: Path, progress: bool, dry_run: bool) -> tuple[Path, list[str]]:
    """The dataset folder (simulated first when asked, except in a dry run) and its subject ids."""
    if cfg.data.simulate is not None:
        from dualtrack.simulate import simulate_dataset

        sim = cfg.data.simulate
        root = Path(cfg.data.root) if cfg.data.root else out / "data"
        if dry_run:
            return root, [normalise_subject(i) for i in range(sim.subjects)]
        log.info("simulating %d subjects (%s preset) into %s", sim.subjects, sim.preset, root)
        try:
            simulate_dataset(
                root, sim.subjects, sim.preset, protocol=sim.protocol, seed=sim.seed, device=sim.device,
                scans=sim.scans, num_frames=sim.num_frames, progress=progress,
            )  # fmt: skip
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"data.simulate: {exc}") from None
    else:
        root = Path(cfg.data.root)
        if not root.is_dir():
            raise ConfigError(f"data.root: {root} is not a folder")
    try:
        return root, TusRecDataset(root).subjects
    except (OSError, ValueError) as exc:
        raise ConfigError(f"data.root: {exc}") from None


def _make_splits(
    cfg: BenchmarkConfig, subjects: list[str], root: Path, out: Path, write: bool
) -> tuple[Splits, Path]:
    """The benchmark's subject split, checked against (or saved as) ``<out>/splits.json``."""
    if cfg.data.splits:
        try:
            splits = load_splits(cfg.data.splits)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"data.splits: {exc}") from None
    else:
        try:
            splits = make_splits(subjects, val=cfg.data.val, test=cfg.data.test, seed=cfg.data.split_seed)
        except ValueError as exc:
            raise ConfigError(f"data: cannot split the {len(subjects)} subjects of {root}: {exc}") from None
    path = out / "splits.json"
    if path.is_file():
        old = load_splits(path)
        if (old.train, old.val, old.test) != (splits.train, splits.val, splits.test):
            raise ConfigError(
                f"{path} holds another subject split than this config gives (the runs in this folder were "
                "trained on it); use another output folder or the same data section"
            )
    elif write:
        save_splits(path, splits)
    return splits, path


def _eval_scans(cfg: BenchmarkConfig, dataset: TusRecDataset, splits: Splits) -> list[tuple[str, str]]:
    subjects = set(getattr(splits, cfg.evaluation.split))
    scans = [s for s in dataset.scans if s[0] in subjects]
    if not scans:
        raise ConfigError(
            f"evaluation: no scans of {cfg.evaluation.split} subjects {sorted(subjects)} in {dataset.root}; "
            "hold out subjects with data.test / data.val or a splits file"
        )
    n = cfg.evaluation.max_scans
    if n is not None and n < len(scans):
        scans = [scans[i] for i in np.unique(np.linspace(0, len(scans) - 1, n).round().astype(int))]
    return scans


def _device(spec: str) -> str | None:
    return None if spec == "auto" else spec


def _table_rows(cfg: BenchmarkConfig, tables: Mapping[str, Mapping[str, Mapping[str, float]]],
                params: Mapping[str, int]) -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    for m in cfg.models:
        summary = summarise(tables[m.name])
        row: dict[str, Any] = {
            "model": m.name,
            "label": m.display,
            "comparison": m.comparison,
            "ablation": "" if m.ablation is None else "".join("1" if a else "0" for a in m.ablation),
            "parameters": params[m.name],
            "n_scans": len(tables[m.name]),
        }
        for key in [c[0] for c in TABLE_COLUMNS] + ["seconds", "frames"]:
            if key in summary:
                for stat in ("mean", "std", "median"):
                    row[f"{key}_{stat}"] = summary[key][stat]
        rows.append(row)
    return rows


def _present_columns(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, float, str]]:
    return [c for c in TABLE_COLUMNS if all(math.isfinite(r.get(f"{c[0]}_mean", math.nan)) for r in rows)]


def _best(rows: Sequence[Mapping[str, Any]], key: str) -> float:
    vals = [r[f"{key}_mean"] for r in rows]
    return max(vals) if key in HIGHER_IS_BETTER else min(vals)


def format_paper_table(rows: Sequence[Mapping[str, Any]], p_values: Mapping[str, float] | None = None,
                       reference_label: str | None = None) -> str:  # fmt: skip
    """Markdown table in the paper's form (Table 1): the comparison block, then the ablation block
    with its local / global / dual-encoder marks. The best mean of each block is bold.

    Args:
        rows: :attr:`BenchmarkResult.rows`.
        p_values: ``{model: p-value of the reference vs that model on GPE}`` (adds a column).
        reference_label: label of the reference model (column header).
    """
    cols = _present_columns(rows)
    head = ["Method", *(c[1] for c in cols)]
    if p_values:
        head.append(f"p GPE vs {reference_label}" if reference_label else "p GPE")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def block(title: str, members: list[Mapping[str, Any]], label_of) -> None:
        if not members:
            return
        lines.append(f"| **{title}** |" + " |" * (len(head) - 1))
        for r in members:
            cells = [label_of(r)]
            for key, _, factor, fmt in cols:
                text = format(r[f"{key}_mean"] * factor, fmt)
                cells.append(
                    f"**{text}**" if len(members) > 1 and r[f"{key}_mean"] == _best(members, key) else text
                )
            if p_values:
                p = p_values.get(r["model"])
                cells.append("" if p is None else f"{p:.3g}")
            lines.append("| " + " | ".join(cells) + " |")

    block("Baseline comparison", [r for r in rows if r["comparison"]], lambda r: r["label"])
    ablation = [r for r in rows if r["ablation"]]
    if ablation:
        block("Ablation (local / global / dual encoder)", ablation, lambda r: f"{_marks(r)} ({r['label']})")
    return "\n".join(lines) + "\n"


def _marks(row: Mapping[str, Any]) -> str:
    """``✓ ✓ ✗``-style marks of an ablation row (local / global / dual encoder)."""
    return " ".join("✓" if c == "1" else "✗" for c in row["ablation"])


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
    cols = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    with atomic_write(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(cols)
        for r in rows:
            writer.writerow([_csv_cell(r.get(c, "")) for c in cols])
    return path


def _csv_cell(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return str(v)


def _wilcoxon(
    cfg: BenchmarkConfig, tables: Mapping[str, Mapping[str, Mapping[str, float]]]
) -> list[dict[str, Any]]:
    ref = cfg.evaluation.reference
    if ref is None or len(tables) < 2:
        return []
    metrics = [c[0] for c in TABLE_COLUMNS
               if all(c[0] in row for t in tables.values() for row in t.values())]  # fmt: skip
    result = compare(tables, metrics, reference=ref)
    rows = []
    for m in cfg.models:
        if m.name == ref:
            continue
        for metric, w in result["tests"][f"{ref} vs {m.name}"].items():
            rows.append({
                "reference": ref, "model": m.name, "metric": metric, "n": int(w["n"]),
                "mean_reference": w["mean_a"], "mean_model": w["mean_b"],
                "median_diff": w["median_diff"], "statistic": w["statistic"],
                "p_value": w["p_value"], "effect_size_r": w["effect_size_r"],
            })  # fmt: skip
    return rows


def _global_check(cfg: BenchmarkConfig, dataset: TusRecDataset, scans: Sequence[tuple[str, str]],
                  predictors: Mapping[str, Predictor], baselines: Mapping[str, dict[str, np.ndarray]],
                  ) -> tuple[list[dict[str, Any]], str]:  # fmt: skip
    """Rows of the global-branch check; ``baselines`` holds the main evaluation's unmodified
    predictions ``{model: {scan_key: (N, 4, 4)}}`` where they can stand in for the check's own."""
    spec = cfg.evaluation.global_check
    if not spec.enabled:
        return [], "disabled in the config"
    names = (
        spec.models
        if spec.models is not None
        else [n for n, p in predictors.items() if p.spec.has_global_branch]
    )
    if not names:
        return [], "no model has a separate global branch"
    modes = [m for m in spec.modes if m != "other_sweep" or len(scans) > 1]
    sweeps = [dataset.load(s, n) for s, n in scans]
    rows: list[dict[str, Any]] = []
    for name in names:
        if not predictors[name].spec.has_global_branch:
            raise ConfigError(f"evaluation.global_check.models: {name!r} has no separate global branch")
        res = global_branch_check(predictors[name], sweeps, modes=modes, label=name, seed=spec.seed,
                                  baseline=baselines.get(name))
        rows += res.rows
    return rows, ""


def _plots(
    cfg: BenchmarkConfig, tables: Mapping[str, Mapping[str, Mapping[str, float]]], out: Path
) -> dict[str, Path]:
    from dualtrack.reconstruction.report import plot_boxplots

    files = {}
    labelled = {cfg.model(n).display: t for n, t in tables.items()}
    for metric in cfg.evaluation.boxplots:
        if not all(metric in row for t in tables.values() for row in t.values()):
            log.warning("box plot of %s skipped: not computed for every scan", metric)
            continue
        finite = {
            k: {s: r for s, r in t.items() if math.isfinite(r[metric])} for k, t in labelled.items()
        }  # fmt: skip
        if any(not t for t in finite.values()):
            log.warning("box plot of %s skipped: a model has no finite value", metric)
            continue
        unit = _UNITS.get(metric, "mm")
        files[f"boxplots_{metric}"] = plot_boxplots(finite, metric, out / f"boxplots_{metric}.png", unit=unit,
                                                    title=f"{metric} per test scan")  # fmt: skip
    return files


def _dataset_facts(
    dataset: TusRecDataset, splits: Splits, scans: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    frames = [dataset.num_frames(s, n) for s, n in scans]
    sweep = dataset.load(*scans[0])
    return {
        "root": str(dataset.root),
        "subjects": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "eval_scans": len(scans),
        "frames_median": float(np.median(frames)),
        "frame_shape": list(sweep.shape),
        "spacing_mm": [round(float(x), 6) for x in sweep.spacing],
    }


def _summary_md(cfg: BenchmarkConfig, result: BenchmarkResult, facts: Mapping[str, Any], table_md: str,
                gc_note: str, device: str) -> str:  # fmt: skip
    from dualtrack.training.runs import git_commit

    ref = cfg.evaluation.reference
    lines = [
        f"# {cfg.title}",
        "",
        f"`dualtrack benchmark` ({cfg.name}), dualtrack {__version__}, git {git_commit()}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, evaluation device {device}.",
        "",
        "## Data",
        "",
        f"* dataset `{facts['root']}`; subjects train / val / test: {facts['subjects']['train']} / "
        f"{facts['subjects']['val']} / {facts['subjects']['test']}; split file `splits.json`",
        f"* evaluated on {facts['eval_scans']} {cfg.evaluation.split} scans (median "
        f"{facts['frames_median']:.0f} frames, {facts['frame_shape'][0]} x {facts['frame_shape'][1]} pixels, "
        f"spacing {facts['spacing_mm']} mm)",
        "",
        "## Models",
        "",
        "| Model | Weights | Source | This run | Parameters |",
        "|---|---|---|---|---|",
    ]
    actions = {j.key.split(".")[0]: [] for j in result.plan.jobs}
    for j in result.plan.jobs:
        actions[j.key.split(".")[0]].append(f"{j.key.split('.', 1)[1]}: {j.action}"
                                            + (f" ({j.seconds:.1f} s)" if j.seconds else ""))  # fmt: skip
    for r in result.rows:
        name = r["model"]
        lines.append(f"| {r['label']} | `{result.plan.weights[name]}` | {result.plan.sources[name]} | "
                     f"{', '.join(actions.get(name, [])) or '-'} | {r['parameters']:,} |")  # fmt: skip
    lines += ["", "## Results (the paper's Table 1 form)", "", table_md]
    lines += [
        "Means over scans. GPE / LPE: the paper's 5-point errors (4 corners + centre), LPE in µm; FDR: final "
        "drift over the straight-line distance between the first and last frame centres; max drift: largest "
        "distance between true and predicted frame centres. All-pixel GPE / LPE and landmark GLE / LLE: the "
        "official TUS-REC errors; score: the TUS-REC 2025 normalised score (1 = perfect, 0 = identity; "
        "higher is better). Per-scan values: `per_scan/<model>.csv`; mean / std / median: `table.csv`.",
        "",
    ]
    if result.identity:
        identity_gpe = summarise(result.identity)["GPE"]["mean"]
        lines += [
            "## Against predicting no motion",
            "",
            f"Every frame left at the first frame's pose (`per_scan/identity.csv`) has a mean GPE of "
            f"{identity_gpe:.2f} mm. Normalised GPE score = 1 - GPE / {identity_gpe:.2f} mm (means over "
            "scans; 1 = perfect, 0 = no better than no motion):",
            "",
            "| Model | GPE (mm) | normalised GPE score |",
            "|---|---|---|",
            *(f"| {r['label']} | {r['GPE_mean']:.2f} | {r['GPE_score']:.3f} |" for r in result.rows),
            "",
        ]
    if result.wilcoxon:
        metrics = list(dict.fromkeys(w["metric"] for w in result.wilcoxon))
        lines += [f"## Paired Wilcoxon signed-rank tests: {cfg.model(ref).display} vs each model", "",
                  f"Two-sided p-values over {result.wilcoxon[0]['n']} paired scans (`wilcoxon.csv` has the "
                  "statistics, median differences and effect sizes).", "",
                  "| Model | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]  # fmt: skip
        for m in cfg.models:
            if m.name == ref:
                continue
            ps = {w["metric"]: w["p_value"] for w in result.wilcoxon if w["model"] == m.name}
            lines.append(f"| {m.display} | " + " | ".join(f"{ps[k]:.3g}" for k in metrics) + " |")
        lines.append("")
    lines += ["## Global-branch check", ""]
    if result.global_check:
        lines += [
            "The model is evaluated with the input of its global branch replaced (the local branch sees the "
            "true frames). `prediction change` is the 5-point GPE between the unmodified and the modified "
            "predicted trajectories: 0 means the global branch is ignored.",
            "",
            "| Model | Global input | GPE (mm) | ΔGPE (mm) | ΔGPE (%) | p (GPE) | Prediction change (mm) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in result.global_check:
            lines.append(
                f"| {cfg.model(r['model']).display} | {r['mode']} | {r['GPE']:.3f} | {r['delta_GPE']:+.3f} | "
                f"{r['GPE_change_pct']:+.1f} | {r['p_value_GPE']:.3g} | {r['prediction_change']:.4f} |"
            )
        lines += ["", *(_global_verdict(cfg.model(name).display, rows)
                        for name, rows in _group(result.global_check).items()), ""]  # fmt: skip
    else:
        lines += [f"Not run: {gc_note}.", ""]
    plots = [k for k in result.files if k.startswith("boxplots_")]
    if plots:
        lines += ["## Per-scan error distributions (the paper's Fig. 3a)", ""]
        lines += [f"![{k[len('boxplots_') :]}]({result.files[k].name})" for k in plots]
        lines.append("")
    return "\n".join(lines)


def _group(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault(str(r["model"]), []).append(r)
    return out


def _global_verdict(label: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """One sentence on how much the replaced global input moved the predictions of a model."""
    base = next(float(r["GPE"]) for r in rows if r["mode"] == "none")
    changed = [r for r in rows if r["mode"] != "none"]
    worst = max(changed, key=lambda r: float(r["prediction_change"]))
    rel = 100.0 * float(worst["prediction_change"]) / base if base > 0 else math.nan
    gpe = max(abs(float(r["GPE_change_pct"])) for r in changed)
    verdict = (
        "the global branch has almost no influence on the predictions (< 1 % of the GPE)"
        if rel < 1.0
        else "the predictions depend on the global branch"
    )
    return (
        f"* {label}: the largest change of the predicted trajectory is "
        f"{float(worst['prediction_change']):.3g} mm ({worst['mode']}, {rel:.1f} % of the unmodified GPE "
        f"{base:.3g} mm); the mean GPE changes by at most {gpe:.1f} %: {verdict}."
    )


def run_benchmark(
    cfg: BenchmarkConfig,
    output: str | os.PathLike | None = None,
    *,
    dry_run: bool = False,
    progress: bool = True,
    argv: Sequence[str] = ("dualtrack", "benchmark"),
) -> BenchmarkResult:
    """Run a benchmark end to end (see the module docstring); resumable.

    Args:
        cfg: the benchmark config.
        output: output folder (overrides ``cfg.output``).
        dry_run: resolve the split and the plan (what would be trained, resumed or reused); simulate,
            train, evaluate and write nothing.
        progress: progress bars of simulation and evaluation.
        argv: command line recorded in the training runs.

    Returns:
        :class:`BenchmarkResult`.

    Raises:
        ConfigError: invalid config, data, split, chaining or a run trained with other settings.
    """
    cfg = dataclasses.replace(
        cfg, output=str(Path(output if output is not None else cfg.output_dir).resolve())
    )
    out = cfg.output_dir
    out.mkdir(parents=True, exist_ok=True)
    root, subjects = _prepare_data(cfg, out, progress, dry_run)
    splits, splits_path = _make_splits(cfg, subjects, root, out, write=not dry_run)
    plan = plan_benchmark(cfg, root, splits_path, splits)
    result = BenchmarkResult(out_dir=out, plan=plan)
    if dry_run:
        run_pipeline(plan, splits, argv, dry_run=True)
        return result
    dataset = TusRecDataset(root)
    preflight(root)
    scans = _eval_scans(cfg, dataset, splits)  # before training: fails early without held-out scans
    run_pipeline(plan, splits, argv)

    device = _device(cfg.evaluation.device)
    eval_device = str(device or "auto")
    predictors, params, baselines = {}, {}, {}
    # The global check predicts with the evaluation's settings, so the evaluation's predictions are
    # its unmodified baseline.
    keep_poses = cfg.evaluation.global_check.enabled
    for m in cfg.models:
        try:
            predictor = Predictor.from_path(plan.weights[m.name], device=device,
                                            chunk_size=cfg.evaluation.chunk_size,
                                            precision=cfg.evaluation.precision)
        except (OSError, ValueError, ConfigError) as exc:
            raise ConfigError(f"model {m.name!r}: {exc}") from None
        predictors[m.name] = predictor
        params[m.name] = sum(p.numel() for p in predictor.model.parameters())
        log.info("evaluating %s (%s) on %d scans", m.name, predictor.model.model_name, len(scans))
        evaluation = evaluate_model(predictor, dataset, scans, tusrec=cfg.evaluation.tusrec,
                                    progress=progress, keep_poses=keep_poses)
        result.tables[m.name] = evaluation.table
        baselines[m.name] = evaluation.poses
        result.files[f"per_scan/{m.name}"] = write_table(out / "per_scan" / f"{m.name}.csv", evaluation.table)
        eval_device = evaluation.info.get("device", str(device))

    result.identity = identity_table(dataset, scans)
    result.files["per_scan/identity"] = write_table(out / "per_scan" / "identity.csv", result.identity)
    result.rows = _table_rows(cfg, result.tables, params)
    identity_gpe = summarise(result.identity)["GPE"]["mean"]
    for row in result.rows:
        row["GPE_score"] = 1.0 - row["GPE_mean"] / identity_gpe
    result.files["table.csv"] = _write_csv(out / "table.csv", result.rows)
    result.wilcoxon = _wilcoxon(cfg, result.tables)
    result.files["wilcoxon.csv"] = _write_csv(
        out / "wilcoxon.csv", result.wilcoxon,
        ["reference", "model", "metric", "n", "mean_reference", "mean_model", "median_diff", "statistic",
         "p_value", "effect_size_r"],
    )  # fmt: skip
    ref = cfg.evaluation.reference
    p_gpe = {w["model"]: w["p_value"] for w in result.wilcoxon if w["metric"] == "GPE"}
    table_md = format_paper_table(result.rows, p_gpe or None, cfg.model(ref).display if ref else None)
    header = (
        f"# {cfg.title}\n\n{len(scans)} {cfg.evaluation.split} scans of "
        f"{len(getattr(splits, cfg.evaluation.split))} held-out subjects; means over scans (best of each "
        "block in bold). GPE / LPE on 5 image points as in "
        "the paper (LPE in µm); all-pixel errors and score as in TUS-REC 2025.\n\n"
    )
    with atomic_write(out / "table.md") as tmp:
        tmp.write_text(header + table_md, encoding="utf-8")
    result.files["table.md"] = out / "table.md"

    result.global_check, gc_note = _global_check(cfg, dataset, scans, predictors, baselines)
    result.files["global_check.csv"] = _write_csv(
        out / "global_check.csv", result.global_check,
        ["model", "mode", "n_scans", "GPE", "LPE", "FDR", "max_drift", "delta_GPE", "delta_LPE", "delta_FDR",
         "delta_max_drift", "GPE_change_pct", "p_value_GPE", "prediction_change"],
    )  # fmt: skip
    result.files.update(_plots(cfg, result.tables, out))

    facts = _dataset_facts(dataset, splits, scans)
    with atomic_write(out / "summary.md") as tmp:
        tmp.write_text(_summary_md(cfg, result, facts, table_md, gc_note, eval_device), encoding="utf-8")
    result.files["summary.md"] = out / "summary.md"
    result.files["report.html"] = _html(cfg, result, facts, out)
    manifest = {
        "config": dataclasses.asdict(cfg),
        "data": facts,
        "runs": {
            j.key: {"run_dir": str(j.run_dir), "action": j.action, "seconds": j.seconds} for j in plan.jobs
        },
        "weights": {k: str(v) for k, v in plan.weights.items()},
        "identity_GPE_mm": identity_gpe,
        "dualtrack_version": __version__,
    }
    with atomic_write(out / "benchmark.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    result.files["benchmark.json"] = out / "benchmark.json"
    log.info("benchmark written to %s", out)
    return result


def _html(cfg: BenchmarkConfig, result: BenchmarkResult, facts: Mapping[str, Any], out: Path) -> Path:
    from dualtrack.reconstruction.report import write_html_report

    cols = _present_columns(result.rows)
    table = []
    for r in result.rows:
        row: dict[str, Any] = {"Method": r["label"]}
        if r["ablation"]:
            row["Local / global / dual"] = _marks(r)
        for key, header, factor, _ in cols:
            row[header] = r[f"{key}_mean"] * factor
        table.append(row)
    notes = [
        f"{facts['eval_scans']} {cfg.evaluation.split} scans of {facts['subjects'][cfg.evaluation.split]} "
        f"held-out subjects from {facts['root']}; means over scans.",
        "GPE / LPE: 5-point errors as in the DualTrack paper (LPE in µm); all-pixel errors and the "
        "normalised score as in TUS-REC 2025. See summary.md for the paired tests and the global-branch "
        "check.",
    ]
    images = [
        (f"{k[len('boxplots_') :]} per scan", p) for k, p in result.files.items() if k.startswith("boxplots_")
    ]
    return write_html_report(out / "report.html", cfg.title, table, images, notes)
