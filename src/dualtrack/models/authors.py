"""Import the DualTrack authors' released checkpoints into this package's ``dualtrack_tusrec*`` models.

The authors (ImFusion / Queen's University) released weights of their DualTrack trained on TUS-REC
under CC BY-NC-SA 4.0; nothing of their code or weights is part of this package, the user brings
the checkpoint. Their parameter names and shapes (facts) map one to one onto the registered
``dualtrack_tusrec2024`` / ``dualtrack_tusrec2025`` architectures (:mod:`dualtrack.models.dualtrack`),
which are this package's own DualTrack classes configured with the authors' layout:

========================================================  ==========================================
theirs                                                    ours
========================================================  ==========================================
``local_encoder.0.backbone.module.backbone.module``       ``local_encoder.cnn`` (3D ResNet-18)
``.backbone.{stem,layerN}``
``local_encoder.0.backbone.module.vit``                   ``local_encoder.pool`` (query/key/value
                                                          concatenated into ``in_proj``)
``local_encoder.0.temporal_encoder.encoder``              ``local_encoder.temporal`` (BERT, relative)
``local_encoder.1``                                       ``fusion.local_proj``
``global_encoder.backbone.0.backbone``                    ``global_encoder.backbone`` (their
                                                          ``1 x k x k`` video kernels as 2D kernels)
``global_encoder.{pos_emb,proj,bert}``                    ``global_encoder.{positions,proj,temporal}``
``fusion_module.module``                                  ``fusion.decoder`` (BERT with
                                                          cross-attention)
``head.fc``                                               ``head.linear``
``*.fc`` of the three pretraining stages                  dropped (unused by the fused model)
========================================================  ==========================================

Every key of the checkpoint must map, every parameter and buffer of ours must be filled, and every
shape must agree; anything else is a :class:`CheckpointMismatch` naming the file and the keys. The
target statistics are the identity (the authors' network outputs millimetres and degrees).
:func:`import_weights` writes the result as a normal export folder
(:func:`dualtrack.models.weights.write_export`), which every command accepts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from dualtrack.models.registry import TrajectoryModel, create_model
from dualtrack.models.weights import write_export

__all__ = [
    "AUTHORS_ARCHITECTURES",
    "IMPORTABLE",
    "CheckpointMismatch",
    "authors_key",
    "read_authors_checkpoint",
    "convert_authors_state",
    "import_weights",
]

log = logging.getLogger(__name__)

AUTHORS_ARCHITECTURES = ("dualtrack_tusrec2024", "dualtrack_tusrec2025")
"""Registered architectures of the authors' released checkpoints."""

IMPORTABLE = (*AUTHORS_ARCHITECTURES, *(f"{a}_tiny" for a in AUTHORS_ARCHITECTURES))
"""What :func:`import_weights` accepts as ``arch``: those and their ``*_tiny`` test sizes."""

LICENCE = (
    "DualTrack weights by the DualTrack authors (ImFusion GmbH / Queen's University), CC BY-NC-SA 4.0: "
    "non-commercial use, share alike, attribution; see https://github.com/ImFusionGmbH/DualTrack"
)


class CheckpointMismatch(ValueError):
    """The checkpoint does not fit the architecture (unmapped, missing or mis-shaped keys)."""


_QKV = {"query": 0, "key": 1, "value": 2}
_BLOCK = {
    "conv1.0": "conv1",
    "conv1.1": "bn1",
    "conv2.0": "conv2",
    "conv2.1": "bn2",
    "downsample.0": "shortcut.0",
    "downsample.1": "shortcut.1",
}
_BERT = {
    "attention.self.query": "attn.query",
    "attention.self.key": "attn.key",
    "attention.self.value": "attn.value",
    "attention.self.distance_embedding": "attn.distance",
    "attention.output.dense": "attn.out",
    "attention.output.LayerNorm": "norm1",
    "crossattention.self.query": "cross.query",
    "crossattention.self.key": "cross.key",
    "crossattention.self.value": "cross.value",
    "crossattention.output.dense": "cross.out",
    "crossattention.output.LayerNorm": "norm2",
    "intermediate.dense": "ffn1",
    "output.dense": "ffn2",
    "output.LayerNorm": "norm3",
}
_VIT = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "self_attn.out_proj",
    "intermediate.dense": "linear1",
    "output.dense": "linear2",
}
_DROPPED = re.compile(
    r"(global_encoder\.fc|local_encoder\.0\.backbone\.module\.fc|local_encoder\.0\.temporal_encoder\.fc)"
    r"\.(weight|bias)"
)
_LEAF = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


def _resnet(rest: str, ours: str) -> str | None:
    """A VideoResNet key below its root (``stem.3.weight``, ``layer2.0.conv1.1.bias``) as ours."""
    if m := re.fullmatch(rf"stem\.([0-9])\.{_LEAF}", rest):
        return f"{ours}.stem.{m[1]}.{m[2]}"
    if m := re.fullmatch(rf"layer([1-4])\.([0-9]+)\.((?:conv[12]|downsample)\.[01])\.{_LEAF}", rest):
        return f"{ours}.stages.{int(m[1]) - 1}.{m[2]}.{_BLOCK[m[3]]}.{m[4]}"
    return None


def _bert(rest: str, ours: str) -> str | None:
    """A Hugging Face BERT encoder key below its root (``layer.3.attention.self.query.weight``)."""
    if (m := re.fullmatch(r"layer\.([0-9]+)\.(.+)\.(weight|bias)", rest)) and m[2] in _BERT:
        return f"{ours}.layers.{m[1]}.{_BERT[m[2]]}.{m[3]}"
    return None


def _vit(rest: str) -> tuple[str, int | None] | None:
    """A Hugging Face ViT key below ``vit.`` as ``(our key, q/k/v slot of in_proj or None)``."""
    fixed = {
        "embeddings.cls_token": "cls",
        "embeddings.position_embeddings": "pos",
        "embeddings.patch_embeddings.projection.weight": "embed.weight",
        "embeddings.patch_embeddings.projection.bias": "embed.bias",
        "layernorm.weight": "encoder.layers.norm.weight",
        "layernorm.bias": "encoder.layers.norm.bias",
    }
    if rest in fixed:
        return f"local_encoder.pool.{fixed[rest]}", None
    m = re.fullmatch(r"encoder\.layer\.([0-9]+)\.(.+)\.(weight|bias)", rest)
    if m is None:
        return None
    layer = f"local_encoder.pool.encoder.layers.layers.{m[1]}"
    if (q := re.fullmatch(r"attention\.attention\.(query|key|value)", m[2])) is not None:
        return f"{layer}.self_attn.in_proj_{m[3]}", _QKV[q[1]]
    if m[2] in _VIT:
        return f"{layer}.{_VIT[m[2]]}.{m[3]}", None
    return None


_PREFIXES: tuple[tuple[str, Callable[[str], str | tuple[str, int | None] | None]], ...] = (
    ("local_encoder.0.backbone.module.backbone.module.backbone.", lambda r: _resnet(r, "local_encoder.cnn")),
    ("local_encoder.0.backbone.module.vit.", _vit),
    ("local_encoder.0.temporal_encoder.encoder.", lambda r: _bert(r, "local_encoder.temporal")),
    ("global_encoder.backbone.0.backbone.", lambda r: _resnet(r, "global_encoder.backbone")),
    ("global_encoder.bert.", lambda r: _bert(r, "global_encoder.temporal")),
    ("fusion_module.module.", lambda r: _bert(r, "fusion.decoder")),
)
_FIXED = {
    "local_encoder.1.weight": "fusion.local_proj.weight",
    "global_encoder.pos_emb.weight": "global_encoder.positions.weight",
    "global_encoder.proj.weight": "global_encoder.proj.weight",
    "global_encoder.proj.bias": "global_encoder.proj.bias",
    "head.fc.weight": "head.linear.weight",
    "head.fc.bias": "head.linear.bias",
}
_NOT_IMPORTED = ("target_mean", "target_std")
"""Our buffers that the authors' checkpoints do not hold (set to the identity)."""


def authors_key(key: str) -> tuple[str, int | None] | None:
    """Our state-dict key for one of the authors' keys: ``(key, slot)`` where ``slot`` is the
    query/key/value position inside a fused ``in_proj`` tensor (else ``None``); ``None`` for the
    pretraining heads the fused model does not use.

    Raises:
        KeyError: a key that is not part of the authors' released layout.
    """
    if _DROPPED.fullmatch(key):
        return None
    if key in _FIXED:
        return _FIXED[key], None
    for prefix, rule in _PREFIXES:
        if key.startswith(prefix):
            mapped = rule(key[len(prefix) :])
            if mapped is None:
                break
            return mapped if isinstance(mapped, tuple) else (mapped, None)
    raise KeyError(key)


def read_authors_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of an authors' checkpoint file: a bare ``state_dict`` (their released
    ``dualtrack_final.pt``) or their training checkpoint (a dict with a ``model`` entry), read with
    ``torch.load(weights_only=True)`` (no code is unpickled). A ``module.`` prefix on every key
    (distributed training) is removed.

    Raises:
        FileNotFoundError / ValueError: a missing file, or one that holds no tensor mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several error types for bad files
        raise ValueError(
            f"{path}: cannot read it as a torch checkpoint with weights_only=True "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(
            f"{path}: holds no state_dict (a mapping of names to tensors), nor a training "
            "checkpoint with one under 'model'"
        )
    if all(k.startswith("module.") for k in data):
        data = {k.removeprefix("module."): v for k, v in data.items()}
    return data


def _fit(theirs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Their tensor shaped like ours: their per-frame video kernels ``(O, I, 1, k, k)`` as 2D."""
    if theirs.ndim == 5 and target.ndim == 4 and theirs.shape[2] == 1:
        return theirs[:, :, 0]
    return theirs


def convert_authors_state(
    state: Mapping[str, torch.Tensor], model: TrajectoryModel, where: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """The authors' ``state`` as a complete, strictly loadable ``state_dict`` of ``model``.

    Works on shapes only, so ``model`` and ``state`` may live on the meta device.

    Raises:
        CheckpointMismatch: keys of theirs that do not map, keys of ours left unfilled, or shapes
            that differ (the message names ``where`` and up to five keys of each kind).
    """
    ours = model.state_dict()
    parts: dict[str, dict[int | None, torch.Tensor]] = {}
    unmapped, dropped = [], 0
    for key, value in state.items():
        try:
            mapped = authors_key(key)
        except KeyError:
            unmapped.append(key)
            continue
        if mapped is None:
            dropped += 1
            continue
        name, slot = mapped
        if name not in ours:
            unmapped.append(f"{key} (-> {name}, which {model.model_name} does not have)")
            continue
        parts.setdefault(name, {})[slot] = value
    out, bad = {}, []
    for name, pieces in parts.items():
        if None in pieces:
            value = _fit(pieces[None], ours[name])
        elif sorted(pieces) == [0, 1, 2]:
            value = torch.cat([pieces[0], pieces[1], pieces[2]])
        else:
            bad.append(f"{name}: only parts {sorted(pieces)} of query/key/value")
            continue
        if tuple(value.shape) != tuple(ours[name].shape):
            bad.append(f"{name}: checkpoint {tuple(value.shape)} vs model {tuple(ours[name].shape)}")
            continue
        out[name] = value
    for name in _NOT_IMPORTED:
        out[name] = torch.zeros_like(ours[name]) if name == "target_mean" else torch.ones_like(ours[name])
    missing = sorted(set(ours) - set(out) - {b.split(":")[0] for b in bad})

    def listing(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")

    problems = []
    if unmapped:
        problems.append(
            f"{len(unmapped)} keys of the checkpoint do not map to {model.model_name}: {listing(unmapped)}"
        )
    if missing:
        problems.append(
            f"{len(missing)} keys of {model.model_name} are not in the checkpoint: {listing(missing)}"
        )
    if bad:
        problems.append(f"{len(bad)} shapes differ: {listing(bad)}")
    if problems:
        raise CheckpointMismatch(
            f"{where}: not an authors' {model.model_name} checkpoint; " + "; ".join(problems)
        )
    log.info(
        "%s: %d tensors mapped, %d unused pretraining-head tensors dropped", where, len(out) - 2, dropped
    )
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_weights(
    checkpoint: str | os.PathLike, arch: str, out_dir: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Convert an authors' checkpoint into an export folder of the registered ``arch``.

    Args:
        checkpoint: their ``.pt`` file (bare ``state_dict`` or training checkpoint).
        arch: ``dualtrack_tusrec2024``, ``dualtrack_tusrec2025`` (or a ``*_tiny`` test variant).
        out_dir: the export folder to write (``model.safetensors`` + ``config.json``, atomically).
        overwrite: replace an existing non-empty ``out_dir``.

    Returns:
        the export folder, which ``dualtrack predict``/``reconstruct``/``evaluate``/``benchmark``,
        ``predict_ddfs`` and training's ``init_from`` accept.

    Raises:
        ValueError: an architecture that is not one of the authors'; CheckpointMismatch: the
            checkpoint does not fit it; FileNotFoundError / FileExistsError as for any export.
    """
    if arch not in IMPORTABLE:
        raise ValueError(
            f"--arch must be one of {list(AUTHORS_ARCHITECTURES)} (or a *_tiny test variant), got {arch!r}"
        )
    path = Path(checkpoint)
    state = read_authors_checkpoint(path)
    model = create_model(arch)
    model.load_state_dict(convert_authors_state(state, model, str(path)), strict=True)
    extra = {
        "imported_from": {"file": path.name, "sha256": _sha256(path), "layout": "authors", "licence": LICENCE}
    }
    return write_export(model, arch, {}, out_dir, source=str(path), overwrite=overwrite, extra=extra)
