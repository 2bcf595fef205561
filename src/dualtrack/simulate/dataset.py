"""Simulated sweeps and TUS-REC-layout datasets.

* :func:`simulate_sweep` renders one scan, a pure function of ``(seed, subject, scan, preset)``.
* :func:`simulate_dataset` writes many scans in the TUS-REC train or val/test layout with the data
  layer's writers (atomic files), skipping scans already on disk, so an interrupted run resumes.

Ground truth: the renderer uses probe poses ``P_i`` (image mm -> world). With the calibration
``C`` (image mm -> tool) the tracker transforms are ``T_i = P_i C^-1`` (tool -> tracker = world), so
``C^-1 T_j^-1 T_i C = P_j^-1 P_i`` is exactly the image-to-image motion used for rendering.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from dualtrack.data import (
    SCAN_NAMES_2024,
    SCAN_NAMES_2025,
    TUSREC2024_CALIBRATION,
    Calibration,
    normalise_subject,
    parse_dataset_key,
    write_calibration,
    write_dataset_keys,
    write_landmarks,
    write_scan,
)
from dualtrack.data.calibration import CALIBRATION_FILENAME
from dualtrack.data.tusrec import (
    DATASET_KEYS_FILENAME,
    FRAMES_DIR,
    LANDMARK_DIRS,
    TRAIN_DIR,
    TRANSFS_DIR,
    read_dataset_keys,
)
from dualtrack.simulate.bmode import BModeRenderer
from dualtrack.simulate.phantom import ForearmPhantom, ScatterSpec
from dualtrack.simulate.presets import FWHM_TO_SIGMA, ImagingSpec, SimPreset, get_preset
from dualtrack.simulate.probe import ProbeGeometry
from dualtrack.simulate.rng import numpy_rng, stable_seed
from dualtrack.simulate.trajectory import make_trajectory, parse_scan
from dualtrack.utils import atomic_write, progress_bar

__all__ = [
    "SimulatedSweep",
    "simulate_sweep",
    "simulate_dataset",
    "scan_names",
    "preset_calibration",
    "scatter_spec",
    "make_phantom",
    "sweep_poses",
]

log = logging.getLogger(__name__)


@dataclass
class SimulatedSweep:
    """One simulated scan.

    Attributes:
        subject: subject id (``"000"``).
        name: scan name (``"LH_Per_C_DtP"``).
        frames: ``(N, H, W)`` uint8.
        tforms: ``(N, 4, 4)`` float32 tool -> tracker transforms (``T_i = P_i C^-1``).
        calibration: pixel -> mm scaling ``S`` and image-mm -> tool ``C``.
        landmarks: ``(K, 3)`` int64 ``(frame 1..N-1, x 1-based column, y 1-based row)``.
        poses: ``(N, 4, 4)`` float64 image-mm -> world probe poses used for rendering.
        imaging: the (randomised) imaging settings of the scan.
        preset: preset name.
    """

    subject: str
    name: str
    frames: np.ndarray
    tforms: np.ndarray
    calibration: Calibration
    landmarks: np.ndarray
    poses: np.ndarray
    imaging: ImagingSpec
    preset: str


def scan_names(protocol: str = "2024") -> tuple[str, ...]:
    """The scan names of one subject: 24 for ``"2024"``, 2 for ``"2025"``, 26 for ``"both"``."""
    if protocol == "2024":
        return SCAN_NAMES_2024
    if protocol == "2025":
        return SCAN_NAMES_2025
    if protocol == "both":
        return SCAN_NAMES_2024 + SCAN_NAMES_2025
    raise ValueError(f"protocol must be '2024', '2025' or 'both', got {protocol!r}")


def preset_calibration(preset: str | SimPreset) -> Calibration:
    """Calibration written for a preset: ``S = diag(sx, sy, 1, 1)`` and TUS-REC 2024's rigid ``C``."""
    pr = get_preset(preset)
    return Calibration(
        scale=np.diag([pr.spacing[0], pr.spacing[1], 1.0, 1.0]),
        image_to_tool=TUSREC2024_CALIBRATION.image_to_tool,
    )


def scatter_spec(preset: SimPreset) -> ScatterSpec:
    """Scatterer densities of a preset (nominal PSF used for surface brightness)."""
    im = preset.imaging
    return ScatterSpec(
        density_per_mm3=preset.density_per_mm3,
        surface_density_per_mm2=preset.surface_density_per_mm2,
        nominal_sigma_mm=(
            im.sigma_axial,
            float(np.mean(im.fwhm_lateral_mm)) * FWHM_TO_SIGMA,
            im.sigma_elevation_focus,
        ),
        brick_mm=preset.brick_mm,
        max_cached_points=preset.max_cached_points,
    )


def make_phantom(
    seed: int, subject: str | int, arm: str, preset: str | SimPreset, device: str | torch.device = "cpu"
) -> ForearmPhantom:
    """The forearm phantom of one subject's arm (reuse it for all scans of that arm)."""
    return ForearmPhantom(seed, normalise_subject(subject), arm, scatter_spec(get_preset(preset)), device)


def _num_frames(preset: SimPreset, scan: str, num_frames: int | None) -> int:
    if num_frames is not None:
        if num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {num_frames}")
        return int(num_frames)
    return preset.rotation_frames if parse_scan(scan).protocol == "2025" else preset.num_frames


def sweep_poses(
    seed: int,
    subject: str | int,
    scan: str,
    preset: str | SimPreset = "tiny",
    num_frames: int | None = None,
    phantom: ForearmPhantom | None = None,
) -> np.ndarray:
    """The probe poses ``(N, 4, 4)`` (image mm -> world, float64) of a scan, without rendering."""
    pr = get_preset(preset)
    subject = normalise_subject(subject)
    spec = parse_scan(scan)
    phantom = phantom or make_phantom(seed, subject, spec.arm, pr)
    geom_face = (pr.spacing[0] * (pr.width + 1) / 2.0, pr.probe.face_mm)
    return make_trajectory(
        phantom,
        scan,
        _num_frames(pr, scan, num_frames),
        geom_face,
        seed,
        subject,
        fps=pr.fps,
        speed_mm_per_frame=pr.speed_mm_per_frame,
    )


def _landmarks(
    phantom: ForearmPhantom, geom: ProbeGeometry, poses: np.ndarray, count: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` landmarks ``(K, 3)`` on anatomical points of frames 1..N-1: pixels whose world
    position lies on a vessel/tendon centre line or an upper bone surface, else on the deep fascia,
    else on the skin (see :meth:`ForearmPhantom.feature_distances`). One landmark per frame while
    frames last."""
    n = poses.shape[0]
    stride = max(1, int(round(0.5 / max(geom.sx, geom.sy))))
    u, v = np.meshgrid(np.arange(1, geom.width + 1, stride), np.arange(1, geom.height + 1, stride))
    u, v = u.ravel(), v.ravel()
    inside = geom.pixel_in_fov(u, v)
    u, v = u[inside], v[inside]
    local = np.stack([u * geom.sx, v * geom.sy, np.zeros_like(u, dtype=np.float64), np.ones(u.size)], 0)
    tol = 0.5 * stride * max(geom.sx, geom.sy) + 0.05
    frames = rng.permutation(np.arange(1, n))
    frames = np.concatenate([frames, rng.choice(np.arange(1, n), size=max(0, count - frames.size))])
    found: list[list[tuple[int, int, int]]] = [[], [], []]
    for i in frames:
        world = torch.as_tensor((poses[i] @ local)[:3].T).to(torch.float32).to(phantom.device)
        for dist, bucket in zip(phantom.feature_distances(world), found, strict=True):
            cand = np.flatnonzero(dist.cpu().numpy() < tol)
            if cand.size:
                j = int(rng.choice(cand))
                bucket.append((int(i), int(u[j]), int(v[j])))
                break
        if len(found[0]) >= count:
            break
    chosen = (found[0] + found[1] + found[2])[:count]
    if len(chosen) < count:
        raise RuntimeError(f"only {len(chosen)} of {count} landmarks found (probe off the arm?)")
    return np.array(sorted(chosen), dtype=np.int64)


def _scan_imaging(pr: SimPreset, seed: int, subject: str, scan: str) -> ImagingSpec:
    """The randomised imaging settings of one scan (its own random stream)."""
    return pr.scan_imaging(numpy_rng(seed, subject, scan, "imaging"))


def _sweep_landmarks(
    seed: int,
    subject: str,
    scan: str,
    pr: SimPreset,
    phantom: ForearmPhantom,
    geom: ProbeGeometry,
    poses: np.ndarray,
) -> np.ndarray:
    """The landmarks ``(K, 3)`` of one scan: the preset's count for its protocol, own random stream."""
    count = pr.landmarks_2025 if parse_scan(scan).protocol == "2025" else pr.landmarks_2024
    return _landmarks(phantom, geom, poses, count, numpy_rng(seed, subject, scan, "landmarks"))


def simulate_sweep(
    seed: int,
    subject: str | int,
    scan: str,
    preset: str | SimPreset = "tiny",
    device: str | torch.device = "cpu",
    num_frames: int | None = None,
    phantom: ForearmPhantom | None = None,
) -> SimulatedSweep:
    """Simulate one scan.

    Args:
        seed: dataset seed.
        subject: subject id (int or ``"000"``); different subjects have different anatomy.
        scan: TUS-REC scan name (``"LH_Per_C_DtP"``, ``"RH_rotation"``, ...).
        preset: ``"tiny"``, ``"small"``, ``"tusrec"`` or a :class:`SimPreset`.
        device: torch device for rendering (``"cpu"``, ``"cuda"``).
        num_frames: override the preset's frame count.
        phantom: reuse a phantom of the same (seed, subject, arm, preset) (keeps its brick cache).

    Returns:
        :class:`SimulatedSweep`. Frames, poses and landmarks depend only on (seed, subject, scan,
        preset); rendering on another device changes them at most by float rounding.
    """
    pr = get_preset(preset)
    subject = normalise_subject(subject)
    spec = parse_scan(scan)
    if phantom is None:
        phantom = make_phantom(seed, subject, spec.arm, pr, device)
    elif phantom.key[1:] != (int(seed), subject, spec.arm):
        raise ValueError(
            f"phantom {phantom.key} does not belong to seed {seed}, subject {subject}, {spec.arm}"
        )
    poses = sweep_poses(seed, subject, scan, pr, num_frames, phantom)
    n = poses.shape[0]
    imaging = _scan_imaging(pr, seed, subject, scan)
    renderer = BModeRenderer(pr, imaging, device=device)
    frames = np.empty((n, pr.height, pr.width), np.uint8)
    for a in range(0, n, pr.batch_size):
        b = min(n, a + pr.batch_size)
        keys = [stable_seed(seed, subject, scan, "noise", i) for i in range(a, b)]
        frames[a:b] = renderer.render(phantom, poses[a:b], noise_keys=keys).frames.numpy()
    calib = preset_calibration(pr)
    tforms = (poses @ np.linalg.inv(calib.image_to_tool)).astype(np.float32)
    lms = _sweep_landmarks(seed, subject, scan, pr, phantom, renderer.geom, poses)
    return SimulatedSweep(subject, scan, frames, tforms, calib, lms, poses, imaging, pr.name)


def _existing_landmarks(root: Path, subject: str) -> dict[str, np.ndarray]:
    """Landmarks already stored for a subject (kept when a later run adds other scans)."""
    out: dict[str, np.ndarray] = {}
    for folder in LANDMARK_DIRS:
        path = root / folder / f"landmark_{subject}.h5"
        if path.is_file():
            with h5py.File(path, "r") as f:
                out.update({k: np.asarray(f[k]) for k in f.keys()})
    return out


def _scan_done(root: Path, subject: str, scan: str, layout: str) -> bool:
    if layout == "train":
        return (root / TRAIN_DIR / subject / f"{scan}.h5").is_file()
    return all((root / d / subject / f"{scan}.h5").is_file() for d in (FRAMES_DIR, TRANSFS_DIR))


def _scan_landmarks(
    seed: int, subject: str, scan: str, pr: SimPreset, num_frames: int | None, phantom: ForearmPhantom
) -> np.ndarray:
    """Landmarks of a scan already on disk (recomputed from its trajectory, no rendering)."""
    poses = sweep_poses(seed, subject, scan, pr, num_frames, phantom)
    geom = ProbeGeometry(pr, _scan_imaging(pr, seed, subject, scan))
    return _sweep_landmarks(seed, subject, scan, pr, phantom, geom, poses)


RECIPE_FILENAME = "simulation.json"
"""What a simulated dataset was made with (preset, seed, frames per scan); a resumed or extended
run must use the same, since every scan and landmark is a function of them."""


def _check_recipe(root: Path, recipe: dict) -> None:
    """Refuse to resume or extend ``root`` with another preset, seed or frame count."""
    path = root / RECIPE_FILENAME
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable ({exc}); delete it only if the dataset is empty") from None
    diff = {k: (old.get(k), v) for k, v in recipe.items() if old.get(k) != v}
    if diff:
        what = ", ".join(f"{k} {a!r} (asked: {b!r})" for k, (a, b) in diff.items())
        raise ValueError(
            f"{root} holds a dataset simulated with {what}; its scans and landmarks would not match. "
            "Use the same settings to resume or extend it, or write to another folder"
        )


def simulate_dataset(
    out: str | os.PathLike,
    subjects: int | Iterable[int | str],
    preset: str | SimPreset = "tiny",
    protocol: str = "2024",
    layout: str = "train",
    seed: int = 0,
    device: str | torch.device = "cpu",
    scans: Sequence[str] | None = None,
    num_frames: int | None = None,
    progress: bool = True,
) -> Path:
    """Write a simulated dataset in the TUS-REC layout.

    Args:
        out: dataset folder (created).
        subjects: a count ``N`` (subjects ``000..N-1``) or explicit ids.
        preset: simulator preset.
        protocol: ``"2024"`` (24 scans a subject), ``"2025"`` (rotation scans) or ``"both"``.
        layout: ``"train"`` (``frames_transfs/``) or ``"test"`` (``frames/`` + ``transfs/`` +
            ``dataset_keys.h5``, the val/test layout).
        seed: dataset seed.
        device: rendering device.
        scans: restrict to these scan names.
        num_frames: override the preset's frames per scan.
        progress: show a progress bar (stderr).

    Returns:
        The dataset folder. Scans already complete on disk are skipped (every file is written
        atomically, so a killed run never leaves a complete-looking partial file); landmark files
        are rewritten per subject once all its scans exist.
    """
    if layout not in ("train", "test"):
        raise ValueError(f"layout must be 'train' or 'test', got {layout!r}")
    pr = get_preset(preset)
    root = Path(out)
    recipe = {"preset": pr.name, "seed": int(seed), "num_frames": num_frames}
    _check_recipe(root, recipe)
    root.mkdir(parents=True, exist_ok=True)
    with atomic_write(root / RECIPE_FILENAME) as tmp:
        tmp.write_text(json.dumps(recipe) + "\n")
    ids = [normalise_subject(s) for s in (range(subjects) if isinstance(subjects, int) else subjects)]
    names = list(scan_names(protocol))
    if scans is not None:
        unknown = sorted(set(scans) - set(names))
        if unknown:
            raise ValueError(f"scans {unknown} are not part of protocol {protocol!r}")
        names = [n for n in names if n in set(scans)]
    write_calibration(root / CALIBRATION_FILENAME, preset_calibration(pr))
    jobs = [(sid, name) for sid in ids for name in names]
    bar = progress_bar(total=len(jobs), desc=f"simulate ({pr.name})", unit="scan", enabled=progress)
    written = skipped = 0
    for sid in ids:
        phantoms: dict[str, ForearmPhantom] = {}
        marks: dict[str, np.ndarray] = {}
        for name in names:
            arm = parse_scan(name).arm
            if arm not in phantoms:
                phantoms[arm] = make_phantom(seed, sid, arm, pr, device)
            if _scan_done(root, sid, name, layout):
                marks[name] = _scan_landmarks(seed, sid, name, pr, num_frames, phantoms[arm])
                skipped += 1
            else:
                sweep = simulate_sweep(seed, sid, name, pr, device, num_frames, phantoms[arm])
                write_scan(root, sid, name, sweep.frames, sweep.tforms, layout=layout)
                marks[name] = sweep.landmarks
                written += 1
            bar.update(1)
            bar.set_postfix(subject=sid, written=written, skipped=skipped)
        write_landmarks(root, sid, {**_existing_landmarks(root, sid), **marks}, layout=layout)
    bar.close()
    if layout == "test":
        keys_file = root / DATASET_KEYS_FILENAME
        old = [parse_dataset_key(k) for k in read_dataset_keys(keys_file)] if keys_file.is_file() else []
        write_dataset_keys(root, sorted(set(old) | set(jobs)))
    log.info("simulated dataset %s: %d scans written, %d already present", root, written, skipped)
    return root
