"""The training loop: one plain loop for every stage, model and process count.

:func:`train` runs a :class:`~dualtrack.training.config.TrainConfig` into a run directory:

1. :func:`prepare_run` resolves the config (or the saved one on ``--resume``) and checks the stage
   chaining (:func:`dualtrack.training.stages.prepare_model`) before anything is written;
2. the subject-level split is made (or read) and saved, the training targets' mean / std are
   estimated on the training split and stored in the model's buffers;
3. for each phase: frames are cached at model resolution, a DataLoader with worker processes
   feeds :class:`~dualtrack.training.datasets.SweepItemDataset` items, and the optimiser
   (AdamW, cosine schedule with linear warm-up, gradient clipping; with ``runtime.amp`` bf16 autocast
   on GPUs and on CPUs with native bf16, :func:`dualtrack.utils.cpu_supports_bf16`) steps
   on ``model.loss(model(frames), normalised targets)``;
4. every ``runtime.val_every`` epochs the model predicts whole validation sweeps
   (:class:`dualtrack.inference.Predictor`) and :func:`~dualtrack.metrics.paper_metrics`
   gives the validation GPE / LPE / FDR / max drift; ``best.pt`` keeps the lowest GPE;
5. ``metrics.csv`` (and TensorBoard when installed) get the loss, learning rate and throughput,
   ``last.pt`` holds everything needed to continue exactly.

Under ``torchrun`` the same code runs one process per GPU with DDP (see
:mod:`dualtrack.training.distributed`); only rank 0 writes files and shows progress.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from dualtrack.data import TusRecDataset
from dualtrack.data.splits import Splits, load_splits, make_splits, save_splits
from dualtrack.data.verify import preflight
from dualtrack.inference import Predictor, centre_crop_box
from dualtrack.metrics import paper_metrics
from dualtrack.models import TrajectoryModel
from dualtrack.models.weights import read_checkpoint
from dualtrack.training import distributed as ddp
from dualtrack.training.cache import FrameCache
from dualtrack.training.checkpoint import TrainState, save_checkpoint, set_rng_state
from dualtrack.training.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
)
from dualtrack.training.datasets import SweepItemDataset, collate_items, feature_variant, target_statistics
from dualtrack.training.runs import MetricsLog, default_run_dir, write_run_files
from dualtrack.training.samplers import EpochSampler
from dualtrack.training.stages import Phase, chained_freeze, prepare_model, resolve_phases, set_frozen
from dualtrack.utils import atomic_write, autocast, cpu_supports_bf16, progress_bar

__all__ = ["TrainResult", "prepare_run", "train", "lr_factor", "validate", "VAL_METRICS"]

log = logging.getLogger(__name__)

VAL_METRICS = ("GPE", "LPE", "FDR", "max_drift")
"""Paper metrics averaged over the validation sweeps."""

RESUME_OVERRIDABLE = ("runtime.", "data.num_workers", "data.cache_dir", "data.root")
"""Settings that may change when a run is resumed (everything else must stay as saved)."""


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        run_dir: the run directory.
        state: counters at the end (``state.step`` optimiser steps done).
        finished: all phases completed (``False`` when stopped by ``runtime.stop_after_steps``).
        best_gpe: lowest validation GPE (mm; ``inf`` without validation).
        last_val: the last validation's metrics (empty without validation).
        model: the trained model (unwrapped, on the training device, last weights).
    """

    run_dir: Path
    state: TrainState
    finished: bool
    best_gpe: float
    last_val: dict[str, float] = field(default_factory=dict)
    model: TrajectoryModel | None = None


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Learning-rate multiplier at optimiser ``step``: linear warm-up over ``warmup`` steps, then
    cosine decay from 1 to ``min_ratio`` at ``total`` steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def prepare_run(
    config: str | os.PathLike | None,
    overrides: Sequence[str] = (),
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
) -> tuple[TrainConfig, Path | None]:
    """Resolve the config of a new or resumed run.

    A new run loads ``config`` (file or shipped name) with ``overrides``. ``resume`` reloads
    ``run_dir/config.yaml``; only ``runtime.*``, ``data.num_workers``, ``data.cache_dir`` and
    ``data.root`` may then be overridden (``runtime.stop_after_steps`` is reset), and ``config``,
    when given, must resolve to the same settings.

    Raises:
        ConfigError: bad config, or a resume request without a resumable run directory.
    """
    if not resume:
        return load_config(config, list(overrides)), None if run_dir is None else Path(run_dir)
    if run_dir is None:
        raise ConfigError("--resume needs --run-dir (the run directory to continue)")
    run_dir = Path(run_dir)
    if not (run_dir / "last.pt").is_file() or not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"--resume: {run_dir} has no last.pt / config.yaml to resume from")
    saved = load_config(run_dir / "config.yaml")
    bad = [o.split("=", 1)[0] for o in overrides if not o.split("=", 1)[0].startswith(RESUME_OVERRIDABLE)]
    if bad:
        raise ConfigError(
            f"--resume: cannot change {', '.join(bad)} of an existing run; only "
            f"{', '.join(RESUME_OVERRIDABLE)} may be overridden"
        )
    if config is not None:
        fresh = config_to_dict(load_config(config))
        saved_d = config_to_dict(saved)
        diff = [
            f"{sec}.{k}"
            for sec in fresh
            for k in fresh[sec]
            if fresh[sec][k] != saved_d[sec].get(k) and not f"{sec}.{k}".startswith(RESUME_OVERRIDABLE)
        ]
        if diff:
            raise ConfigError(
                f"--resume: {config} differs from {run_dir / 'config.yaml'} in {', '.join(diff)}"
            )
    data = config_to_dict(saved)
    data["runtime"]["stop_after_steps"] = None  # a per-invocation limit, not a property of the run
    return config_from_dict(apply_overrides(data, list(overrides))), run_dir


def _splits(cfg: TrainConfig, dataset: TusRecDataset, run_dir: Path, resume: bool) -> Splits:
    if resume and (run_dir / "splits.json").is_file():
        return load_splits(run_dir / "splits.json")
    if cfg.data.splits:
        try:
            return load_splits(cfg.data.splits)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"data.splits: {exc}") from None
    try:
        return make_splits(
            dataset.subjects, val=cfg.data.val_fraction, test=cfg.data.test_fraction, seed=cfg.data.split_seed
        )
    except ValueError as exc:
        raise ConfigError(f"data: cannot split {dataset.root}: {exc}") from None


def _open_dataset(root: str) -> TusRecDataset:
    if not root:
        raise ConfigError("data.root is not set (the dataset directory, e.g. data.root=/data/tusrec)")
    try:
        dataset = TusRecDataset(root)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"data.root: {exc}") from None
    preflight(root)  # a broken scan stops the run here, naming the file (exit code 1)
    return dataset


def _global_size(cfg: TrainConfig, model: TrajectoryModel) -> tuple[int, int] | None:
    """Size the global frames are pre-resized to in the data: ``data.global_size``, else the
    model's ``input_spec.global_size`` (``None``: native size)."""
    if cfg.data.global_size is not None:
        if len(cfg.data.global_size) != 2:
            raise ConfigError(f"data.global_size must be [h, w], got {cfg.data.global_size}")
        return int(cfg.data.global_size[0]), int(cfg.data.global_size[1])
    return model.input_spec.global_size


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on matrices / kernels, none on biases, norms and embeddings of rank 1."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def validate(
    model: TrajectoryModel,
    dataset: TusRecDataset,
    scans: Sequence[tuple[str, str]],
    device: torch.device,
    max_sweeps: int,
    info: ddp.DistInfo | None = None,
    precision: str = "auto",
) -> dict[str, float]:
    """Mean paper metrics (GPE, LPE, FDR, max drift) over up to ``max_sweeps`` validation sweeps.

    The sweeps are spread evenly over ``scans`` and shared among the DDP processes; every process
    returns the same means. The model is fed as its input spec says (:class:`Predictor`);
    ``precision`` as there.
    """
    info = info or ddp.DistInfo()
    if not scans:
        return {}
    chosen = [
        scans[i] for i in np.unique(np.linspace(0, len(scans) - 1, min(max_sweeps, len(scans))).astype(int))
    ]
    sums = torch.zeros(len(VAL_METRICS) + 1, dtype=torch.float64)
    predictor = Predictor.from_model(model, device=device, precision=precision)
    for subject, name in chosen[info.rank :: info.world_size]:
        sweep = dataset.load(subject, name)
        pred = predictor.predict(sweep)
        with warnings_as_log():
            m = paper_metrics(sweep.global_transforms(), pred.global_, sweep.shape, sweep.calibration.scale)
        sums += torch.tensor([*(m[k] for k in VAL_METRICS), 1.0], dtype=torch.float64)
    if info.enabled:
        dev_sums = sums.to(device)
        torch.distributed.all_reduce(dev_sums)
        sums = dev_sums.cpu()
    count = max(sums[-1].item(), 1.0)
    return {k: sums[i].item() / count for i, k in enumerate(VAL_METRICS)}


@contextlib.contextmanager
def warnings_as_log():
    """Route Python warnings (e.g. an undefined FDR) to the log during validation."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        log.debug("validation: %s", w.message)


class _Trainer:
    """State of one :func:`train` call (one instance per process)."""

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        resume: bool,
        argv: Sequence[str],
        info: ddp.DistInfo,
        device: torch.device,
    ) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.info = info
        self.device = device
        self.phases = resolve_phases(cfg)
        torch.manual_seed(cfg.runtime.seed)
        self.model, has_stats = prepare_model(cfg)
        self.model.to(device)
        limit = self.model.input_spec.max_frames
        for phase in self.phases:
            window = phase.sampling.max_length
            if limit is not None and phase.sampling.mode == "sweep" and window is not None and window > limit:
                raise ConfigError(f"phase {phase.name!r}: sampling.max_length={window}, but {cfg.model.name} "
                                  f"accepts at most {limit} frames (its position tables); set it <= {limit}")
        self.ckpt = read_checkpoint(run_dir / "last.pt") if resume else None
        if not resume and (run_dir / "last.pt").exists():
            raise ConfigError(f"{run_dir} already holds a run (last.pt); use --resume or another --run-dir")
        self.dataset = _open_dataset(cfg.data.root)
        self.splits = _splits(cfg, self.dataset, run_dir, resume)
        self.train_scans = [s for s in self.dataset.scans if s[0] in self.splits.train]
        self.val_scans = [s for s in self.dataset.scans if s[0] in self.splits.val]
        if not self.train_scans:
            raise ConfigError(
                f"data: no training scans in {self.dataset.root} for subjects {self.splits.train}"
            )
        if not self.val_scans and info.is_main:
            log.warning(
                "NO VALIDATION SCANS (validation subjects %s of %d in %s): the run trains without "
                "validation, writes no best.pt, and `dualtrack evaluate` of it needs --data and --split all. "
                "Fix: data.val_fraction=0.2 (at least one subject) or data.splits=FILE.",
                self.splits.val or "none", len(self.dataset.subjects), self.dataset.root,
            )
        if info.is_main:
            write_run_files(run_dir, cfg, argv, resumed=resume)
            save_splits(run_dir / "splits.json", self.splits)
        ddp.barrier()
        self.cache = FrameCache(
            cfg.data.cache_dir or Path(self.dataset.root) / ".dualtrack_cache", self.dataset.root
        )
        self.global_size = _global_size(cfg, self.model)
        self.global_stride = self.model.input_spec.global_stride
        last_mode = self.phases[-1].sampling.mode
        crop = cfg.data.local_crop
        self.model.configure_input(
            local_crop=None if last_mode == "subset" or crop is None else (int(crop[0]), int(crop[1])),
            pixel_spacing=self.dataset.calibration.spacing,
        )
        subsets = [p.sampling.subset_size for p in self.phases if p.sampling.mode == "subset"]
        if subsets and self.model.input_spec.sparse_frames is not None:
            # a model trained on random subsets of k frames sees a sweep as k evenly spaced frames
            self.model.configure_input(sparse_frames=int(subsets[-1]))
        self._check_clip_lengths()
        self.state = TrainState()
        if self.ckpt is not None:
            self.model.load_state_dict(self.ckpt["model"], strict=True)
            self.state = TrainState(**self.ckpt["state"])
        elif not has_stats:
            self._set_target_stats()
        self.metrics = (
            MetricsLog(
                run_dir / "metrics.csv",
                self.state.step if resume else None,
                run_dir / "tensorboard" if cfg.runtime.tensorboard else None,
            )
            if info.is_main
            else None
        )
        self.last_val: dict[str, float] = {}
        self.features: dict[tuple[int, int], torch.Tensor] | None = None

    # -------------------------------------------------------------------------------- helpers
    def _dataset(self, phase: Phase, train: bool = True) -> SweepItemDataset:
        return SweepItemDataset(
            self.dataset,
            self.train_scans,
            self.cfg.data,
            phase.sampling,
            self.cache,
            self.global_size,
            self.global_stride,
            train=train,
        )

    def _set_target_stats(self) -> None:
        ds = self._dataset(self.phases[0])
        mean, std = target_statistics(ds, self.cfg.sampling.stats_items, self.cfg.runtime.seed)
        self.model.set_target_stats(torch.as_tensor(mean), torch.as_tensor(std))
        log.info("target mean %s, std %s", np.round(mean, 4).tolist(), np.round(std, 4).tolist())
        if self.info.is_main:
            with atomic_write(self.run_dir / "target_stats.json") as tmp:
                tmp.write_text(json.dumps({"mean": mean.tolist(), "std": std.tolist()}, indent=2) + "\n")

    def _save(self, name: str, optimizer, scheduler) -> None:
        if not math.isfinite(self.state.loss_sum):
            raise FloatingPointError(
                f"training loss became {self.state.loss_sum} before step {self.state.step}; not saving "
                f"{name} (lower optim.lr or set optim.grad_clip)"
            )
        if self.info.is_main:
            save_checkpoint(
                self.run_dir / name,
                self.model,
                optimizer,
                scheduler,
                self.state,
                config_to_dict(self.cfg),
            )

    def _validate(self, optimizer, scheduler, epoch: int, phase: Phase) -> None:
        ddp.sync_buffers(self.model)
        if not self.val_scans:
            return
        self.last_val = validate(
            self.model,
            self.dataset,
            self.val_scans,
            self.device,
            self.cfg.runtime.val_max_sweeps,
            self.info,
            precision="auto" if self.cfg.runtime.amp else "fp32",
        )
        log.info(
            "step %d validation: %s", self.state.step, {k: round(v, 4) for k, v in self.last_val.items()}
        )
        if self.metrics is not None:
            self.metrics.write(
                step=self.state.step,
                epoch=epoch,
                phase=phase.name,
                **{f"val_{k}": v for k, v in self.last_val.items()},
            )
        gpe = self.last_val["GPE"]
        if gpe < self.state.best_gpe:
            self.state.best_gpe = gpe
            self._save("best.pt", optimizer, scheduler)

    # -------------------------------------------------------------------------------- main
    def run(self) -> TrainResult:
        stop = self.cfg.runtime.stop_after_steps
        finished = True
        try:
            while self.state.phase < len(self.phases):
                if stop is not None and self.state.step >= stop:
                    finished = False
                    break
                done = self._run_phase(self.phases[self.state.phase])
                ddp.sync_buffers(self.model)
                if not done:
                    finished = False
                    break
                self.state.phase += 1
                self.state.epoch = 0
                self.state.batches_done = 0
            if finished:
                self._save("last.pt", None, None)
                log.info(
                    "finished %d steps in %s (best validation GPE %.4g mm)",
                    self.state.step,
                    self.run_dir,
                    self.state.best_gpe,
                )
        finally:
            if self.metrics is not None:
                self.metrics.close()
        return TrainResult(self.run_dir, self.state, finished, self.state.best_gpe, self.last_val, self.model)

    def _run_phase(self, phase: Phase) -> bool:
        """Train one phase from the current counters; ``False`` when stopped early."""
        cfg, info, device, state = self.cfg, self.info, self.device, self.state
        s = phase.sampling
        frozen = (*phase.freeze, *chained_freeze(cfg, self.model))
        set_frozen(self.model, frozen)
        ds = self._dataset(phase)
        if info.is_main:
            ds.prepare_cache(progress=cfg.runtime.progress)
        ddp.barrier()
        if not info.is_main:
            ds.prepare_cache()
        self.features = self._cache_features(phase, ds, frozen)
        ds.read_frames = self.features is None
        sampler = EpochSampler(len(ds), cfg.runtime.seed + 7919 * state.phase, info.rank, info.world_size)
        steps_per_epoch = math.ceil(sampler.per_rank / s.batch_size)
        total = phase.epochs * steps_per_epoch
        warmup = round(phase.warmup_epochs * steps_per_epoch)
        optimizer = torch.optim.AdamW(
            _param_groups(self.model, phase.weight_decay),
            lr=phase.lr,
            betas=tuple(cfg.optim.betas),
            fused=device.type == "cuda",
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            functools.partial(lr_factor, total=total, warmup=warmup, min_ratio=cfg.optim.min_lr_ratio),
        )
        if self.ckpt is not None and self.ckpt["state"]["phase"] == state.phase and self.ckpt["optimizer"]:
            optimizer.load_state_dict(self.ckpt["optimizer"])
            scheduler.load_state_dict(self.ckpt["scheduler"])
        if self.ckpt is not None:
            set_rng_state(self.ckpt["rng"])
            self.ckpt = None
        net: nn.Module = self.model
        if info.enabled:
            net = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        loader = DataLoader(
            ds,
            batch_size=s.batch_size,
            sampler=sampler,
            num_workers=cfg.data.num_workers,
            collate_fn=functools.partial(collate_items, global_stride=self.global_stride or 1),
            pin_memory=device.type == "cuda",
            persistent_workers=cfg.data.num_workers > 0,
            generator=torch.Generator().manual_seed(cfg.runtime.seed),
        )
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if not trainable:
            raise ConfigError(f"phase {phase.name!r}: every parameter is frozen; nothing to train")
        # bf16 (no loss scaling needed) on every GPU, and on CPUs that compute it natively
        bf16 = cfg.runtime.amp and (device.type == "cuda" or cpu_supports_bf16())
        amp_dtype = torch.bfloat16 if bf16 else None
        bar = progress_bar(
            total=total,
            initial=state.epoch * steps_per_epoch + state.batches_done,
            desc=phase.name,
            unit="step",
            enabled=info.is_main and cfg.runtime.progress,
        )
        # float32 on the device: no host sync per step (checked every log interval), and MPS has no float64
        loss_acc = torch.tensor(state.loss_sum, dtype=torch.float32, device=device)
        t_last, items_last = time.perf_counter(), 0
        try:
            for epoch in range(state.epoch, phase.epochs):
                sampler.set_epoch(epoch, start=state.batches_done * s.batch_size)
                self.model.train()
                for batch in loader:
                    lr = scheduler.get_last_lr()[0]
                    loss = self._step(net, batch, optimizer, scheduler, trainable, amp_dtype)
                    loss_acc += loss.detach().float()
                    state.loss_count += 1
                    state.step += 1
                    state.batches_done += 1
                    state.samples_seen += len(batch["index"]) * info.world_size
                    items_last += len(batch["index"]) * info.world_size
                    bar.update(1)
                    if state.step % cfg.runtime.log_every == 0:
                        self._check_finite(loss_acc)
                        now = time.perf_counter()
                        mean_loss = ddp.all_reduce_mean(loss_acc / state.loss_count).item()
                        rate = items_last / max(now - t_last, 1e-9)
                        if self.metrics is not None:
                            self.metrics.write(
                                step=state.step,
                                epoch=epoch,
                                phase=phase.name,
                                lr=lr,
                                train_loss=mean_loss,
                                items_per_s=rate,
                            )
                        bar.set_postfix(loss=f"{mean_loss:.4g}", items_s=f"{rate:.1f}")
                        loss_acc.zero_()
                        state.loss_count = 0
                        t_last, items_last = now, 0
                    stop = cfg.runtime.stop_after_steps
                    if stop is not None and state.step >= stop:
                        state.loss_sum = loss_acc.item()
                        self._save("last.pt", optimizer, scheduler)
                        log.info(
                            "stopped after %d steps (runtime.stop_after_steps); resume with --resume",
                            state.step,
                        )
                        return False
                    # The epoch's last step is saved after the epoch end (validation included), so a
                    # kill during that save resumes before the step and never repeats a validation.
                    if self._checkpoint_due() and state.batches_done < steps_per_epoch:
                        state.loss_sum = loss_acc.item()
                        self._save("last.pt", optimizer, scheduler)
                state.epoch = epoch + 1
                state.batches_done = 0
                last_epoch = epoch + 1 == phase.epochs and state.phase == len(self.phases) - 1
                every = cfg.runtime.val_every
                if last_epoch or (every > 0 and (epoch + 1) % every == 0):
                    self._validate(optimizer, scheduler, epoch, phase)
                state.loss_sum = loss_acc.item()
                if cfg.runtime.checkpoint_every == 0 or last_epoch or self._checkpoint_due():
                    self._save("last.pt", optimizer, scheduler)
        finally:
            bar.close()
        return True

    def _cache_features(
        self, phase: Phase, ds: SweepItemDataset, frozen: Sequence[str]
    ) -> dict[tuple[int, int], torch.Tensor] | None:
        """``{(scan record, frame order): (N, D) features}`` of the frozen per-frame encoder for
        every training scan, or ``None`` when the phase cannot use them (see
        ``runtime.cache_features``)."""
        s, groups = phase.sampling, self.model.encode_groups()
        if not self.cfg.runtime.cache_features or groups is None or not set(groups) <= set(frozen):
            return None
        if s.mode != "sweep" or s.random_crop or list(s.strides) != [1]:
            log.info("phase %r: per-frame features not cached (needs sweep mode, no random crop, "
                     "strides [1])", phase.name)
            return None
        start = time.perf_counter()
        predictor = Predictor.from_model(self.model, device=self.device,
                                         precision="auto" if self.cfg.runtime.amp else "fp32")
        flips = (False, True) if s.flip > 0 else (False,)
        reverses = (False, True) if s.reverse > 0 else (False,)
        out: dict[tuple[int, int], torch.Tensor] = {}
        for k, rec in enumerate(ds.records):
            top, left, h, w = centre_crop_box(rec.shape, ds.crop_shape(rec))
            frames = ds.read(rec, rec.shape, np.arange(rec.num_frames))[:, top : top + h, left : left + w]
            for flip in flips:
                for reverse in reverses:
                    view = frames[..., ::-1] if flip else frames
                    view = view[::-1] if reverse else view
                    out[(k, feature_variant(flip, reverse))] = predictor.encode(view)
        log.info("phase %r: per-frame features of the frozen %s cached for %d scans x %d frame orders "
                 "(%.1f s); they are not recomputed during the phase", phase.name, ", ".join(groups),
                 len(ds.records), len(flips) * len(reverses), time.perf_counter() - start)
        return out

    def _check_finite(self, loss_acc: torch.Tensor) -> None:
        """Raise when the running loss of this log interval is NaN or infinite (one host sync per
        interval instead of one per step)."""
        value = loss_acc.item()
        if not math.isfinite(value):
            first = self.state.step - self.state.loss_count + 1
            raise FloatingPointError(
                f"training loss became {value} between steps {first} and {self.state.step} "
                "(lower optim.lr or set optim.grad_clip)"
            )

    def _check_clip_lengths(self) -> None:
        """Warn when a clip phase trains on clips no longer than the per-frame encoder's temporal
        receptive field: then no training frame sees the real neighbours it sees at inference."""
        halo = self.model.input_spec.halo
        for phase in self.phases:
            s = phase.sampling
            if s.mode == "clip" and halo is not None and s.clip_length <= 2 * halo and self.info.is_main:
                log.warning(
                    "phase %r: %d-frame clips but the model's per-frame features depend on ±%d frames; "
                    "every training frame sees zero padding where inference sees real frames. Use "
                    "sampling.clip_length >= %d or a smaller receptive field "
                    "(model.local_encoder.small_window: true)",
                    phase.name, s.clip_length, halo, 2 * halo + 2,
                )

    def _checkpoint_due(self) -> bool:
        every = self.cfg.runtime.checkpoint_every
        return every > 0 and self.state.step % every == 0

    def _step(
        self,
        net: nn.Module,
        batch: dict[str, torch.Tensor],
        optimizer,
        scheduler,
        trainable: list[nn.Parameter],
        amp_dtype: torch.dtype | None,
    ) -> torch.Tensor:
        device = self.device
        index = batch["index"].to(device, non_blocking=True)
        if self.features is not None:
            keys = zip(batch["scan"].tolist(), batch["variant"].tolist(), strict=True)
            feats = [self.features[key][i] for key, i in zip(keys, index, strict=True)]
            inputs = {"features": torch.stack(feats)}
        else:  # uint8 to the device; the model divides by its input spec's intensity divisor there
            inputs = {"frames": batch["frames"].to(device, non_blocking=True)}
        target = self.model.normalise(batch["target"].to(device, non_blocking=True))
        extra = {}
        if "global_frames" in batch:
            extra = {
                "global_frames": batch["global_frames"].to(device, non_blocking=True),
                "global_index": batch["global_index"].to(device, non_blocking=True),
            }
        with autocast(device, amp_dtype):
            pred = net(**inputs, index=index, **extra)
            loss = self.model.loss(pred, target)
        loss.backward()
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, self.cfg.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss


def train(
    cfg: TrainConfig,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    argv: Sequence[str] = (),
) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (default ``runs/<stage>-<model>-<time>``).

    Args:
        cfg: the resolved config (see :func:`prepare_run`).
        run_dir: run directory; required with ``resume``.
        resume: continue ``run_dir/last.pt`` exactly (same counters, data order and loss curve).
        argv: command line recorded in ``command.txt``.

    Raises:
        ConfigError: invalid config, chaining or data (before anything is trained).
    """
    info, device = ddp.init_distributed(cfg.runtime.device)
    try:
        if run_dir is None:
            if resume:
                raise ConfigError("--resume needs --run-dir")
            run_dir = ddp.broadcast_object(default_run_dir(cfg))
        if Path(run_dir).exists() and not Path(run_dir).is_dir():
            raise ConfigError(f"--run-dir {run_dir} is an existing file, not a run directory")
        return _Trainer(cfg, Path(run_dir), resume, argv, info, device).run()
    finally:
        ddp.cleanup()
