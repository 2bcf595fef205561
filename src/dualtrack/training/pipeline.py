"""The one runner of staged training: a stage graph of models, planned, then trained, resumed or reused.

A pipeline is a list of :class:`ModelSpec`, each with :class:`StageSpec` s (a shipped training config
plus ``key=value`` overrides) that may load earlier stages (``local_from``, ``global_from``,
``init_from``: an earlier stage of the same model, ``model.stage``, or another model). DualTrack is
``local -> global -> fusion`` (``configs/pipeline.yaml``); single-stage models have one stage.
:func:`plan_pipeline` resolves and type-checks every stage's :class:`~dualtrack.training.config.TrainConfig`
before anything runs; :func:`run_pipeline` trains them in dependency order, resumes interrupted runs
exactly and reuses finished ones, and refuses a run folder made with other settings or another split
(:func:`stage_state`). ``dualtrack demo``, ``dualtrack benchmark`` and
``benchmarks/run_dualtrack_pipeline.py`` all train through it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dualtrack.data.splits import Splits, load_splits
from dualtrack.models.weights import read_checkpoint
from dualtrack.training.config import (
    ConfigError,
    TrainConfig,
    coerce,
    config_to_dict,
    find_config_file,
    load_config,
    shipped_names,
)
from dualtrack.training.loop import train
from dualtrack.training.stages import resolve_phases

__all__ = [
    "StageSpec",
    "ModelSpec",
    "StageJob",
    "PipelinePlan",
    "shipped_pipelines",
    "load_pipeline",
    "stage_state",
    "plan_pipeline",
    "run_pipeline",
]

log = logging.getLogger(__name__)

_RESUMABLE_KEYS = ("runtime.", "data.num_workers", "data.cache_dir", "data.root", "data.splits")
"""Settings that may differ between a reused run and the pipeline (the split is compared by content)."""
_CHAIN_KEYS = ("stage.local_from", "stage.global_from", "stage.init_from")


@dataclass
class StageSpec:
    """One training stage of a model.

    Attributes:
        name: stage id (``local``, ``global``, ``fusion``, ...); the run is ``<runs_dir>/<model>/<name>``.
        config: training config (shipped name such as ``local`` or a YAML path).
        overrides: ``key=value`` training overrides of this stage.
        local_from, global_from, init_from: references to earlier runs (``stage``, ``model.stage`` or
            ``model``), set as ``stage.local_from`` etc.; unset ones are cleared, so a pipeline never
            picks up a run from outside itself by accident.
    """

    name: str = ""
    config: str = ""
    overrides: list[str] = field(default_factory=list)
    local_from: str | None = None
    global_from: str | None = None
    init_from: str | None = None


@dataclass
class ModelSpec:
    """A model of the pipeline (in a benchmark: a row of the table).

    Attributes:
        name: id used for files and references (letters, digits, ``_``, ``-``).
        label: name shown in the table (default ``name``).
        stages: training stages, in order (the last one gives the model).
        reuse: ``model.stage`` or ``model`` whose run is this model (no training of its own).
        run_dir: an existing run directory, checkpoint or exported folder (no training).
        overrides: ``key=value`` training overrides applied to every stage of this model.
        comparison: (benchmark table) show the model in the baseline-comparison block.
        ablation: (benchmark table) ``[local, global, dual_encoder]`` marks of the ablation block
            (``null`` = not in it).
    """

    name: str = ""
    label: str | None = None
    stages: list[StageSpec] = field(default_factory=list)
    reuse: str | None = None
    run_dir: str | None = None
    overrides: list[str] = field(default_factory=list)
    comparison: bool = True
    ablation: list[bool] | None = None

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclass
class StageJob:
    """One training run of a pipeline.

    Attributes:
        key: ``"<model>.<stage>"``.
        run_dir: its run directory.
        config: the resolved training config.
        depends: keys of the jobs whose runs it loads.
        state: ``missing`` / ``partial`` / ``finished`` when planned (:func:`stage_state`).
        action: what :func:`run_pipeline` does or did: ``train``, ``resume``, ``reuse`` or
            ``pending`` (not started before the deadline).
        seconds: training time spent in this invocation.
        finished: the run has completed all its phases.
    """

    key: str
    run_dir: Path
    config: TrainConfig
    depends: tuple[str, ...]
    state: str = "missing"
    action: str = "train"
    seconds: float = 0.0
    finished: bool = False


@dataclass
class PipelinePlan:
    """Training jobs in dependency order and the weights of each model (:func:`plan_pipeline`).

    Attributes:
        jobs: stage jobs, each after the jobs it depends on.
        weights: ``{model: run directory / checkpoint / export}`` evaluated for that model.
        sources: ``{model: "stages" | "reuse <ref>" | "run_dir"}``.
    """

    jobs: list[StageJob]
    weights: dict[str, Path]
    sources: dict[str, str]


def _scale_epochs(cfg: TrainConfig, scale: float) -> None:
    if scale == 1.0:
        return
    cfg.optim.epochs = max(1, round(cfg.optim.epochs * scale))
    cfg.optim.warmup_epochs *= scale
    for phase in cfg.stage.phases:
        if phase.epochs is not None:
            phase.epochs = max(1, round(phase.epochs * scale))
        if phase.warmup_epochs is not None:
            phase.warmup_epochs *= scale


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and not key.startswith("model"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _comparable(cfg: TrainConfig) -> dict[str, Any]:
    """Flat settings of a run; chained runs are identified by their ``<model>/<stage>`` folders so
    that a benchmark folder can move."""
    flat = _flatten(config_to_dict(cfg))
    for key in _CHAIN_KEYS:
        if flat.get(key):
            flat[key] = "/".join(Path(flat[key]).parts[-2:])
    return flat


def stage_state(run_dir: Path, cfg: TrainConfig, splits: Splits) -> str:
    """State of a stage's run directory: ``missing``, ``partial`` (resumable ``last.pt``) or
    ``finished`` (all phases done).

    Raises:
        ConfigError: the run was made with other settings (the message lists them) or another split.
    """
    last = run_dir / "last.pt"
    if not last.is_file() or not (run_dir / "config.yaml").is_file():
        return "missing"
    saved = load_config(run_dir / "config.yaml")
    old, new = _comparable(saved), _comparable(cfg)
    diff = sorted(
        k for k in set(old) | set(new) if old.get(k) != new.get(k) and not k.startswith(_RESUMABLE_KEYS)
    )  # fmt: skip
    if diff:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:6])
        raise ConfigError(
            f"{run_dir} was trained with other settings ({detail}); delete it or use another runs_dir "
            "to retrain"
        )
    if (run_dir / "splits.json").is_file():
        run_splits = load_splits(run_dir / "splits.json")
        if (run_splits.train, run_splits.val, run_splits.test) != (splits.train, splits.val, splits.test):
            raise ConfigError(
                f"{run_dir} was trained on another subject split; delete it or use another runs_dir"
            )
    checkpoints = [p for p in (last, run_dir / "best.pt") if p.is_file()]
    try:
        loaded = {p: read_checkpoint(p) for p in checkpoints}
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for path, content in loaded.items():
        if content.get("model_name") != cfg.model.name:
            raise ConfigError(
                f"{path} holds a {content.get('model_name')!r} model, not the {cfg.model.name!r} this stage "
                "trains; delete that run folder or use another runs_dir"
            )
    ckpt = loaded[last]
    done = int(ckpt["state"]["phase"]) >= len(resolve_phases(saved))
    return "finished" if done else "partial"


def _toposort(jobs: Mapping[str, StageJob]) -> list[StageJob]:
    order: list[StageJob] = []
    done: set[str] = set()
    remaining = list(jobs)
    while remaining:
        ready = [k for k in remaining if all(d in done for d in jobs[k].depends)]
        if not ready:
            raise ConfigError(f"training stages depend on each other in a cycle: {remaining}")
        for k in ready:
            order.append(jobs[k])
            done.add(k)
        remaining = [k for k in remaining if k not in done]
    return order


def _stage_ref(models: Sequence[ModelSpec], model: ModelSpec, stage_index: int, ref: str, what: str) -> str:
    """Job key or model name that a stage reference points to."""
    where = f"model {model.name!r}, stage {model.stages[stage_index].name!r}, {what}"
    earlier = [s.name for s in model.stages[:stage_index]]
    if "." in ref:
        mname, sname = ref.split(".", 1)
        target = next((m for m in models if m.name == mname), None)
        if target is None:
            raise ConfigError(f"{where}: {ref!r} names no model")
        if sname not in [s.name for s in target.stages]:
            raise ConfigError(f"{where}: model {mname!r} has no stage {sname!r}")
        return ref
    if ref in earlier:
        return f"{model.name}.{ref}"
    if ref in [m.name for m in models] and ref != model.name:
        return ref
    raise ConfigError(f"{where}: {ref!r} is neither an earlier stage ({earlier}) nor a model")


def plan_pipeline(
    models: Sequence[ModelSpec],
    runs_dir: Path,
    data_root: Path,
    splits_path: Path,
    *,
    epoch_scale: float = 1.0,
    train_overrides: Sequence[str] = (),
) -> PipelinePlan:
    """Resolve every stage's training config and run directory (``<runs_dir>/<model>/<stage>``), in
    dependency order.

    Every training config is loaded (and type-checked) here, before anything is trained. The
    overrides of a stage apply in this order: chaining (``stage.local_from`` ... from the stage
    graph; unset ones cleared), ``train_overrides``, the model's, the stage's, then ``data.root``
    and ``data.splits``. ``epoch_scale`` multiplies every epoch count (at least one is kept).

    Raises:
        ConfigError: a bad training config or override, an unresolved reference or a cycle.
    """
    by_name = {m.name: m for m in models}
    jobs: dict[str, StageJob] = {}
    pending_refs: dict[str, list[tuple[str, str]]] = {}
    for m in models:
        for i, s in enumerate(m.stages):
            key = f"{m.name}.{s.name}"
            refs = []
            for what, ref in (("local_from", s.local_from), ("global_from", s.global_from),
                              ("init_from", s.init_from)):
                if ref is not None:
                    refs.append((what, _stage_ref(models, m, i, ref, f"stage.{what}")))
            pending_refs[key] = refs
            jobs[key] = StageJob(key=key, run_dir=runs_dir / m.name / s.name, config=TrainConfig(),
                                 depends=())

    def final_dir(model_name: str, seen: tuple[str, ...] = ()) -> tuple[Path, tuple[str, ...]]:
        """Weights of a model and the job keys behind them."""
        if model_name in seen:
            raise ConfigError(f"models reuse each other in a cycle: {' -> '.join((*seen, model_name))}")
        m = by_name[model_name]
        if m.stages:
            key = f"{m.name}.{m.stages[-1].name}"
            return jobs[key].run_dir, (key,)
        if m.run_dir:
            return Path(m.run_dir), ()
        ref = m.reuse or ""
        if "." in ref:
            if ref not in jobs:
                raise ConfigError(f"model {m.name!r}: reuse {ref!r} names no stage (known: {sorted(jobs)})")
            return jobs[ref].run_dir, (ref,)
        if ref not in by_name:
            raise ConfigError(f"model {m.name!r}: reuse {ref!r} names no model or stage")
        return final_dir(ref, (*seen, model_name))

    weights, sources = {}, {}
    for m in models:
        weights[m.name] = final_dir(m.name)[0]
        sources[m.name] = "stages" if m.stages else (f"reuse {m.reuse}" if m.reuse else "run_dir")

    for m in models:
        for s in m.stages:
            key = f"{m.name}.{s.name}"
            chain, deps = [], []
            for what, target in pending_refs[key]:
                if target in jobs:
                    path, ks = jobs[target].run_dir, (target,)
                else:
                    path, ks = final_dir(target)
                chain.append(f"stage.{what}={path}")
                deps += ks
            cleared = [f"{k}=null" for k in _CHAIN_KEYS]
            overrides = [*cleared, *chain, *train_overrides, *m.overrides, *s.overrides,
                         f"data.root={data_root}", f"data.splits={splits_path}"]  # fmt: skip
            try:
                tcfg = load_config(s.config, overrides, origin="pipeline setting")
            except ConfigError as exc:
                raise ConfigError(f"model {m.name!r}, stage {s.name!r}: {exc}") from None
            _scale_epochs(tcfg, epoch_scale)
            jobs[key].config = tcfg
            jobs[key].depends = tuple(dict.fromkeys(deps))
    return PipelinePlan(jobs=_toposort(jobs), weights=weights, sources=sources)


def run_pipeline(
    plan: PipelinePlan,
    splits: Splits,
    argv: Sequence[str] = (),
    *,
    dry_run: bool = False,
    deadline: float | None = None,
) -> list[StageJob]:
    """Train (or resume, or reuse) every stage of ``plan`` in dependency order.

    A finished run with the same settings and split is reused; a partial one is resumed exactly;
    a run made with other settings is an error (:func:`stage_state`). With ``deadline``
    (``time.monotonic()`` seconds) the stage running at the deadline is asked to stop after its
    current step (it saves ``last.pt``; the next call resumes it) and later stages stay ``pending``.

    Returns:
        the jobs with their ``action``, ``seconds`` and ``finished`` filled in.

    Raises:
        ConfigError: a run trained with other settings, or a stage that stopped early without a
            deadline (``runtime.stop_after_steps``).
    """
    for job in plan.jobs:
        job.state = stage_state(job.run_dir, job.config, splits)
        job.action = {"finished": "reuse", "partial": "resume", "missing": "train"}[job.state]
        job.finished = job.state == "finished"
        log.info("stage %s: %s (%s)", job.key, job.action, job.run_dir)
    if dry_run:
        return plan.jobs
    for job in plan.jobs:
        if job.action == "reuse":
            continue
        if deadline is not None and deadline - time.monotonic() <= 0:
            job.action = "pending"
            continue
        timer = None
        if deadline is not None:
            cfg = job.config

            def stop(cfg: TrainConfig = cfg) -> None:
                cfg.runtime.stop_after_steps = 0  # read by the loop at every step

            timer = threading.Timer(max(0.0, deadline - time.monotonic()), stop)
            timer.daemon = True
            timer.start()
        start = time.perf_counter()
        try:
            result = train(job.config, job.run_dir, resume=job.action == "resume", argv=list(argv))
        finally:
            if timer is not None:
                timer.cancel()
                job.config.runtime.stop_after_steps = None
        job.seconds = time.perf_counter() - start
        job.finished = result.finished
        if not result.finished and deadline is None:
            raise ConfigError(
                f"stage {job.key} stopped before the end (runtime.stop_after_steps?); run again to resume it"
            )
    return plan.jobs


def shipped_pipelines() -> list[str]:
    """Names of the stage graphs shipped in ``dualtrack/configs`` (``pipeline*.yaml``)."""
    return shipped_names("pipeline")


def load_pipeline(name_or_path: str | os.PathLike = "pipeline") -> list[ModelSpec]:
    """The models of a pipeline YAML (``models:`` list; a shipped name such as ``pipeline`` or a
    path), type-checked like every config (unknown keys are errors).

    Raises:
        ConfigError: unreadable file, unknown keys or wrong types (the message names the file).
    """
    path = find_config_file(name_or_path, shipped_pipelines(), "pipeline", "pipeline")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"pipeline {name_or_path}: cannot read ({exc})") from None
    if not isinstance(data, dict) or set(data) != {"models"}:
        raise ConfigError(f"{path}: a pipeline file holds exactly one key, 'models'")
    try:
        return coerce(data["models"], list[ModelSpec], "models")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
