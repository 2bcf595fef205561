"""Freehand probe trajectories on the forearm phantom: TUS-REC 2024 and 2025-like protocols.

A trajectory is a sequence of probe poses ``P_i`` (``(N, 4, 4)`` float64) mapping image mm
(TUS-REC corner origin, image plane ``z = 0``, see :mod:`dualtrack.simulate.probe`) to world mm.
The transducer face centre ``(x_c, face_mm, 0)`` touches the skin; the depth axis (image +y)
points along the inward skin normal.

TUS-REC 2024 scans ``{LH|RH}_{Per|Par}_{L|C|S}_{DtP|PtD}``:

* the contact point follows a path on the skin, ``Y(xi) = Y0 + A shape(xi)`` along the arm
  (L: small drift, C: half sine, S: full sine), distal -> proximal (DtP, decreasing X) or back;
* speed ``v(t) = v_mean (1 + 0.25 n(t)) ramp(t)`` with smooth random ``n`` (spline knots every
  1-2 s), raised-cosine ramps at both ends and occasional short pauses; ``v_mean`` about
  0.3 mm/frame at 20 fps (randomised +-20 %);
* "Per": the elevation axis follows the path tangent (image plane perpendicular to the path);
  "Par": the lateral axis follows it. Yaw therefore follows C and S paths;
* hand motion: smooth random rocking (about the lateral axis), fanning (about the elevational
  axis) and yaw, a few degrees, time scale 1-3 s; contact-pressure offset; tremor as a sum of
  random sinusoids at 6-12 Hz (0.02-0.06 mm, 0.03-0.1 deg RMS), sampled at the frame times
  (aliased, as on a real scanner).

TUS-REC 2025-like rotation scans ``{LH|RH}_rotation``: a fixed contact point near the elbow;
fanning (tilt about the lateral axis, +-15-25 deg), rocking (about the elevational axis), a
~90 deg rotation about the depth axis, then fanning and rocking again; plus hand motion and tremor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline

from dualtrack.simulate.phantom import ForearmPhantom
from dualtrack.simulate.rng import numpy_rng

__all__ = ["ScanSpec", "parse_scan", "make_trajectory", "rotation_matrix"]


@dataclass(frozen=True)
class ScanSpec:
    """Parsed scan name: ``arm`` LH/RH, ``protocol`` 2024/2025, and for 2024 the orientation
    (Per/Par), path shape (L/C/S) and direction (DtP/PtD)."""

    name: str
    arm: str
    protocol: str
    orientation: str = ""
    shape: str = ""
    direction: str = ""


def parse_scan(name: str) -> ScanSpec:
    """Parse a TUS-REC scan name (``"LH_Per_C_DtP"`` or ``"RH_rotation"``)."""
    parts = name.split("_")
    if len(parts) == 2 and parts[0] in ("LH", "RH") and parts[1] == "rotation":
        return ScanSpec(name, parts[0], "2025")
    if (
        len(parts) == 4
        and parts[0] in ("LH", "RH")
        and parts[1] in ("Per", "Par")
        and parts[2] in ("L", "C", "S")
        and parts[3] in ("DtP", "PtD")
    ):
        return ScanSpec(name, parts[0], "2024", parts[1], parts[2], parts[3])
    raise ValueError(
        f"unknown scan name {name!r}: expected {{LH|RH}}_{{Per|Par}}_{{L|C|S}}_{{DtP|PtD}} "
        "or {LH|RH}_rotation"
    )


def rotation_matrix(axis: int, angle_rad: np.ndarray) -> np.ndarray:
    """``(N, 3, 3)`` rotations by ``angle_rad`` ``(N,)`` about coordinate axis 0, 1 or 2."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    o, z = np.ones_like(c), np.zeros_like(c)
    if axis == 0:
        m = [o, z, z, z, c, -s, z, s, c]
    elif axis == 1:
        m = [c, z, s, z, o, z, -s, z, c]
    else:
        m = [c, -s, z, s, c, z, z, z, o]
    return np.stack(m, -1).reshape(*np.shape(angle_rad), 3, 3)


def _spline_noise(rng: np.random.Generator, t: np.ndarray, knot_s: float) -> np.ndarray:
    """Smooth unit-variance noise: a cubic spline through N(0, 1) knots every ``knot_s`` seconds."""
    t0, t1 = float(t.min()), float(t.max())
    n = max(4, int(math.ceil((t1 - t0) / knot_s)) + 3)
    knots = t0 - knot_s + knot_s * np.arange(n)
    return CubicSpline(knots, rng.normal(size=n))(t)


def _tremor(rng: np.random.Generator, t: np.ndarray, rms: float, size: int = 3) -> np.ndarray:
    """``(N, size)`` sums of 6 random sinusoids at 6-12 Hz with the given RMS per component."""
    out = np.zeros((t.size, size))
    for k in range(size):
        f = rng.uniform(6.0, 12.0, 6)
        ph = rng.uniform(0, 2 * np.pi, 6)
        a = rng.uniform(0.5, 1.0, 6)
        a *= rms * math.sqrt(2.0) / np.linalg.norm(a)
        out[:, k] = (a[None] * np.sin(2 * np.pi * f[None] * t[:, None] + ph[None])).sum(1)
    return out


def _hand_motion(
    rng: np.random.Generator, t: np.ndarray, tilt_deg: float, yaw_deg: float, pressure_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth hand perturbation + tremor: rotations (N, 3, 3) and translations (N, 3) in image mm
    about the contact point (axes: x lateral, y depth, z elevation)."""
    ang = np.stack(
        [
            np.deg2rad(tilt_deg * rng.uniform(0.5, 1.0)) * _spline_noise(rng, t, rng.uniform(1.0, 3.0)),
            np.deg2rad(yaw_deg * rng.uniform(0.5, 1.0)) * _spline_noise(rng, t, rng.uniform(1.0, 3.0)),
            np.deg2rad(tilt_deg * rng.uniform(0.5, 1.0)) * _spline_noise(rng, t, rng.uniform(1.0, 3.0)),
        ],
        1,
    )
    ang = ang + np.deg2rad(_tremor(rng, t, rng.uniform(0.03, 0.1)))
    trans = _tremor(rng, t, rng.uniform(0.02, 0.06))
    trans[:, 1] += pressure_mm * rng.uniform(0.3, 1.0) * _spline_noise(rng, t, rng.uniform(1.0, 3.0))
    rot = rotation_matrix(0, ang[:, 0]) @ rotation_matrix(2, ang[:, 2]) @ rotation_matrix(1, ang[:, 1])
    return rot, trans


def _compose_poses(
    contact: np.ndarray,
    axes: np.ndarray,
    face: np.ndarray,
    press: np.ndarray,
    rot: np.ndarray,
    trans: np.ndarray,
) -> np.ndarray:
    """Probe poses from contact points (N,3), base axes (N,3,3) (columns = image x, y, z in world),
    the face centre in image mm (3,), pressure (N,), and perturbations about the face centre."""
    n = contact.shape[0]
    poses = np.tile(np.eye(4), (n, 1, 1))
    r = axes @ rot
    poses[:, :3, :3] = r
    # face centre (image mm) + trans (image mm) -> contact + press along the depth axis
    face_world = contact + press[:, None] * axes[:, :, 1]
    poses[:, :3, 3] = face_world - np.einsum("nij,j->ni", r, face) + np.einsum("nij,nj->ni", axes, trans)
    return poses


def _frame_axes(normal_out: np.ndarray, tangent: np.ndarray, orientation: str) -> np.ndarray:
    """Base probe axes (N, 3, 3), columns = image x (lateral), y (depth), z (elevation) in world."""
    y = -normal_out
    t = tangent - (tangent * y).sum(-1, keepdims=True) * y
    t /= np.linalg.norm(t, axis=-1, keepdims=True)
    if orientation == "Per":
        z = t
        x = np.cross(y, z)
    else:
        x = t
        z = np.cross(x, y)
    return np.stack([x, y, z], -1)


def _speed_profile(rng: np.random.Generator, n: int, fps: float, v_mean: float) -> np.ndarray:
    """Per-frame travelled distance (mm), starting at 0: smooth random speed, ramps, pauses."""
    t = np.arange(n) / fps
    v = v_mean * fps * np.clip(1.0 + 0.25 * _spline_noise(rng, t, rng.uniform(1.0, 2.0)), 0.2, None)
    ramp_s = min(1.0, 0.15 * n / fps)
    if ramp_s > 0:
        up = np.clip(t / ramp_s, 0, 1)
        down = np.clip((t[-1] - t) / ramp_s, 0, 1)
        v = v * (0.5 - 0.5 * np.cos(np.pi * up)) ** 0.5 * (0.5 - 0.5 * np.cos(np.pi * down)) ** 0.5
        v = np.maximum(v, 0.15 * v_mean * fps)
    if n / fps > 4 and rng.uniform() < 0.1:
        t0, dur = rng.uniform(0.2, 0.8) * t[-1], rng.uniform(0.2, 1.0)
        v = v * (1 - 0.95 * np.exp(-0.5 * ((t - t0) / (dur / 2)) ** 2))
    dist = np.concatenate([[0.0], np.cumsum(0.5 * (v[1:] + v[:-1]) / fps)])
    return dist


def make_trajectory(
    phantom: ForearmPhantom,
    scan: str,
    num_frames: int,
    face_mm: tuple[float, float],
    seed: int,
    subject: str | int,
    fps: float = 20.0,
    speed_mm_per_frame: float = 0.3,
) -> np.ndarray:
    """Probe poses of one scan.

    Args:
        phantom: the arm being scanned (its ``arm`` must match the scan name).
        scan: TUS-REC scan name.
        num_frames: N.
        face_mm: ``(x_c, y_face)``, the transducer face centre in image mm.
        seed, subject: randomness owner (the trajectory is a pure function of (seed, subject, scan)).
        fps: frame rate.
        speed_mm_per_frame: mean speed along the path (2024 protocol).

    Returns:
        ``(N, 4, 4)`` float64 image-mm -> world poses.
    """
    spec = parse_scan(scan)
    rng = numpy_rng(seed, str(subject), scan, "trajectory")
    t = np.arange(num_frames) / fps
    face = np.array([face_mm[0], face_mm[1], 0.0])
    length = phantom.length
    if spec.protocol == "2024":
        v_mean = speed_mm_per_frame * rng.uniform(0.8, 1.2)
        dist = _speed_profile(rng, num_frames, fps, v_mean)
        travel = max(float(dist[-1]), 1e-3)
        travel_x = min(travel, 0.85 * length)
        lo = 0.07 * length + 0.5 * travel_x
        x_mid = rng.uniform(lo, length - lo) if lo < length - lo else 0.5 * length
        sign = -1.0 if spec.direction == "DtP" else 1.0
        scale = min(1.0, travel / 167.0) ** 2  # short sweeps keep the full-length path curvature
        amp = {"L": rng.uniform(-3, 3), "C": rng.uniform(8, 20), "S": rng.uniform(8, 15)}[spec.shape] * scale
        amp *= rng.choice([-1.0, 1.0])
        xi = np.linspace(0.0, 1.0, 2001)
        shape = {"L": xi, "C": np.sin(np.pi * xi), "S": np.sin(2 * np.pi * xi)}[spec.shape]
        a_mid = float(phantom.table(np.array([x_mid]), "a")[0])
        y0 = rng.uniform(-0.15, 0.15) * a_mid
        px = x_mid + sign * travel_x * (xi - 0.5)
        py = y0 + amp * shape
        a_here = phantom.table(px, "a")
        py = np.clip(py, -0.45 * a_here, 0.45 * a_here)
        pz = phantom.skin_top(px, py)
        seg = np.sqrt(np.diff(px) ** 2 + np.diff(py) ** 2 + np.diff(pz) ** 2)
        arc = np.concatenate([[0.0], np.cumsum(seg)])
        d = dist / travel * arc[-1]
        cx, cy = np.interp(d, arc, px), np.interp(d, arc, py)
        h = 0.5
        tx = np.interp(np.clip(d + h, 0, arc[-1]), arc, px) - np.interp(np.clip(d - h, 0, arc[-1]), arc, px)
        ty = np.interp(np.clip(d + h, 0, arc[-1]), arc, py) - np.interp(np.clip(d - h, 0, arc[-1]), arc, py)
        tangent = np.stack([tx, ty, np.zeros_like(tx)], -1)
        tangent /= np.linalg.norm(tangent, axis=-1, keepdims=True)
        contact = np.stack([cx, cy, phantom.skin_top(cx, cy)], -1)
        axes = _frame_axes(phantom.skin_normal(cx, cy), tangent, spec.orientation)
        rot, trans = _hand_motion(
            rng,
            t,
            tilt_deg=rng.uniform(1.5, 4.0),
            yaw_deg=rng.uniform(1.5, 3.0),
            pressure_mm=rng.uniform(0.2, 0.6),
        )
    else:
        cx0 = rng.uniform(0.15, 0.3) * length
        a0 = float(phantom.table(np.array([cx0]), "a")[0])
        cy0 = rng.uniform(-0.1, 0.1) * a0
        drift = np.stack([_spline_noise(rng, t, 3.0), _spline_noise(rng, t, 3.0)], 1) * rng.uniform(0.3, 1.0)
        cx, cy = cx0 + drift[:, 0], cy0 + drift[:, 1]
        contact = np.stack([cx, cy, phantom.skin_top(cx, cy)], -1)
        tangent = np.tile(np.array([1.0, 0.0, 0.0]), (num_frames, 1))
        axes = _frame_axes(phantom.skin_normal(cx, cy), tangent, "Per")
        rot_p, trans = _hand_motion(
            rng,
            t,
            tilt_deg=rng.uniform(1.0, 2.5),
            yaw_deg=rng.uniform(1.0, 2.0),
            pressure_mm=rng.uniform(0.2, 0.5),
        )
        rot = _rotation_protocol(rng, num_frames) @ rot_p
    return _compose_poses(contact, axes, face, np.full(num_frames, 0.6), rot, trans)


def _rotation_protocol(rng: np.random.Generator, n: int) -> np.ndarray:
    """The 2025 fanning / rocking / 90-degree rotation pattern as rotations (N, 3, 3) in image
    axes about the contact point."""
    tau = np.linspace(0.0, 1.0, n)
    bounds = np.array([0.0, 0.25, 0.45, 0.55, 0.8, 1.0]) + np.r_[0, rng.uniform(-0.03, 0.03, 4), 0]

    def burst(lo, hi, amp_deg, cycles):
        u = np.clip((tau - lo) / (hi - lo), 0, 1)
        win = np.sin(np.pi * u) ** 2
        return np.deg2rad(amp_deg) * win * np.sin(2 * np.pi * cycles * u + rng.uniform(0, 2 * np.pi))

    fan = burst(bounds[0], bounds[1], rng.uniform(15, 25), rng.uniform(1.2, 2.2)) + burst(
        bounds[3], bounds[4], rng.uniform(15, 25), rng.uniform(1.2, 2.2)
    )
    rock = burst(bounds[1], bounds[2], rng.uniform(10, 20), rng.uniform(1.0, 2.0)) + burst(
        bounds[4], bounds[5], rng.uniform(10, 20), rng.uniform(1.0, 2.0)
    )
    u = np.clip((tau - bounds[2]) / (bounds[3] - bounds[2]), 0, 1)
    yaw = np.deg2rad(rng.uniform(80, 100)) * (u * u * (3 - 2 * u)) * rng.choice([-1.0, 1.0])
    return rotation_matrix(1, yaw) @ rotation_matrix(0, fan) @ rotation_matrix(2, rock)
