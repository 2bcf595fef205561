"""Rigid-body pose math for freehand ultrasound (SE(3)), batched, for numpy and torch.

Conventions used everywhere in dualtrack
----------------------------------------
* A 4x4 matrix ``T_{j<-i}`` maps homogeneous *column* points expressed in frame ``i`` into
  frame ``j``: ``p_j = T_{j<-i} @ p_i``. Composition: ``T_{k<-i} = T_{k<-j} @ T_{j<-i}``.
* Units: millimetres for translations, **degrees** for the angles of 6-DoF vectors.
* 6-DoF vector ``(tx, ty, tz, rx, ry, rz)``: translation in mm, then Euler angles in degrees of
  the *extrinsic* x-y-z convention (scipy's ``"xyz"``): ``R = Rz(rz) @ Ry(ry) @ Rx(rx)``.
  The vector encodes the same ``T_{j<-i}`` as its matrix: ``T = [[R, t], [0, 1]]``.
* TUS-REC image coordinates ("corner origin"): pixel ``(u, v)`` with ``u`` = column ``1..W``,
  ``v`` = row ``1..H``, image-mm point ``S @ (u, v, 0, 1)``; the origin is one pixel up and
  left of pixel (1, 1), the image plane is ``z = 0``.
* "Centre origin": the same axes translated to the image centre ``S @ ((W+1)/2, (H+1)/2, 0, 1)``.
  Networks regress poses in this better-conditioned frame; convert at the boundary with
  :func:`corner_to_centre` / :func:`centre_to_corner`.
* Tracker transforms ``tforms[i]`` map tool coordinates to camera (tracker) coordinates
  (``p_cam = T_i p_tool``); the calibration ``C`` maps image mm to tool.
* Sweep poses: **global** poses ``G`` have shape ``(N, 4, 4)`` with ``G[0] = I`` and
  ``G[i] = T_{0<-i}``; **local** poses ``L`` have shape ``(N-1, 4, 4)`` with
  ``L[i-1] = T_{i-1<-i}`` (the TUS-REC ``transformation_local`` row order).

Every function accepts numpy arrays or torch tensors with arbitrary leading batch dimensions and
returns the same type. numpy inputs are computed in float64.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)

__all__ = [
    "params_to_matrix",
    "matrix_to_params",
    "compose",
    "invert",
    "relative",
    "global_from_tforms",
    "local_from_tforms",
    "chain_local",
    "local_from_global",
    "transform_points",
    "image_centre_mm",
    "translation_matrix",
    "corner_to_centre",
    "centre_to_corner",
    "image_points",
    "is_rigid",
    "rotation_angle_deg",
    "interpolate_steps",
]


def _to_torch(x) -> tuple[torch.Tensor, bool]:
    if isinstance(x, torch.Tensor):
        return x, False
    return torch.as_tensor(np.asarray(x, dtype=np.float64)), True


def _back(x: torch.Tensor, was_numpy: bool):
    return x.cpu().numpy() if was_numpy else x


def _rot_x(a: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(a), torch.sin(a)
    o, z = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(*a.shape, 3, 3)


def _rot_y(a: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(a), torch.sin(a)
    o, z = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(*a.shape, 3, 3)


def _rot_z(a: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(a), torch.sin(a)
    o, z = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(*a.shape, 3, 3)


def params_to_matrix(params: Array) -> Array:
    """6-DoF vectors to rigid matrices.

    Args:
        params: ``(..., 6)`` = ``(tx, ty, tz [mm], rx, ry, rz [deg])``, extrinsic x-y-z Euler
            angles, ``R = Rz(rz) @ Ry(ry) @ Rx(rx)``.

    Returns:
        ``(..., 4, 4)`` homogeneous matrices ``[[R, t], [0, 1]]``.
    """
    p, was_np = _to_torch(params)
    if p.shape[-1] != 6:
        raise ValueError(f"params_to_matrix expects (..., 6), got {tuple(p.shape)}")
    ang = torch.deg2rad(p[..., 3:])
    rot = _rot_z(ang[..., 2]) @ _rot_y(ang[..., 1]) @ _rot_x(ang[..., 0])
    out = torch.zeros(*p.shape[:-1], 4, 4, dtype=p.dtype, device=p.device)
    out[..., :3, :3] = rot
    out[..., :3, 3] = p[..., :3]
    out[..., 3, 3] = 1
    return _back(out, was_np)


def matrix_to_params(matrix: Array) -> Array:
    """Rigid matrices to 6-DoF vectors (inverse of :func:`params_to_matrix`).

    Args:
        matrix: ``(..., 4, 4)`` rigid transforms.

    Returns:
        ``(..., 6)`` = ``(tx, ty, tz [mm], rx, ry, rz [deg])``, extrinsic x-y-z Euler angles with
        ``ry`` in ``[-90, 90]``. At gimbal lock (``|ry| = 90``) ``rx`` is set to 0.
    """
    m, was_np = _to_torch(matrix)
    if m.shape[-2:] != (4, 4):
        raise ValueError(f"matrix_to_params expects (..., 4, 4), got {tuple(m.shape)}")
    r = m[..., :3, :3]
    sy = torch.clamp(-r[..., 2, 0], -1.0, 1.0)
    ry = torch.asin(sy)
    cy = torch.sqrt(r[..., 2, 1] ** 2 + r[..., 2, 2] ** 2)
    eps = 1e-6 if r.dtype == torch.float32 else 1e-10
    regular = cy > eps
    rx = torch.where(regular, torch.atan2(r[..., 2, 1], r[..., 2, 2]), torch.zeros_like(ry))
    rz = torch.where(
        regular,
        torch.atan2(r[..., 1, 0], r[..., 0, 0]),
        torch.atan2(-r[..., 0, 1], r[..., 1, 1]),
    )
    ang = torch.rad2deg(torch.stack([rx, ry, rz], -1))
    return _back(torch.cat([m[..., :3, 3], ang], -1), was_np)


def compose(a: Array, b: Array) -> Array:
    """Matrix product ``a @ b``: apply ``b`` first, then ``a``. Shapes ``(..., 4, 4)``."""
    ta, was_np = _to_torch(a)
    tb, _ = _to_torch(b)
    return _back(ta @ tb.to(ta.dtype), was_np)


def invert(matrix: Array) -> Array:
    """Inverse of rigid transforms ``(..., 4, 4)`` using ``R^T`` (exact for rigid input)."""
    m, was_np = _to_torch(matrix)
    r_t = m[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(m)
    out[..., :3, :3] = r_t
    out[..., :3, 3] = -(r_t @ m[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1
    return _back(out, was_np)


def relative(tforms: Array, calibration: Array, j: int, i: int) -> Array:
    """Image-mm transform from frame ``i`` to frame ``j``: ``C^-1 T_j^-1 T_i C``.

    Args:
        tforms: ``(N, 4, 4)`` tracker transforms (tool -> camera).
        calibration: ``(4, 4)`` rigid image-mm -> tool matrix ``C``.
        j, i: frame indices.

    Returns:
        ``(4, 4)`` ``T_{j<-i}`` in image mm (corner origin).
    """
    t, was_np = _to_torch(tforms)
    c, _ = _to_torch(calibration)
    c = c.to(t.dtype)
    out = torch.linalg.inv(c) @ torch.linalg.inv(t[j]) @ t[i] @ c
    return _back(out, was_np)


def global_from_tforms(tforms: Array, calibration: Array) -> Array:
    """Ground-truth global poses ``G_i = C^-1 T_0^-1 T_i C`` (frame i -> frame 0, image mm).

    Args:
        tforms: ``(N, 4, 4)`` tracker transforms (tool -> camera).
        calibration: ``(4, 4)`` image-mm -> tool rigid matrix ``C``.

    Returns:
        ``(N, 4, 4)``, ``G[0] = I`` (up to round-off).
    """
    t, was_np = _to_torch(tforms)
    c, _ = _to_torch(calibration)
    dtype = t.dtype
    t = t.double()
    c = c.to(t)
    out = torch.linalg.inv(c) @ torch.linalg.inv(t[0]) @ t @ c
    out[0] = torch.eye(4, dtype=out.dtype, device=out.device)
    return _back(out.to(dtype), was_np)


def local_from_tforms(tforms: Array, calibration: Array) -> Array:
    """Ground-truth local poses ``L_i = C^-1 T_{i-1}^-1 T_i C`` for ``i = 1..N-1``.

    Args:
        tforms: ``(N, 4, 4)`` tracker transforms (tool -> camera).
        calibration: ``(4, 4)`` image-mm -> tool rigid matrix ``C``.

    Returns:
        ``(N-1, 4, 4)``, row ``i-1`` is ``T_{i-1<-i}``.
    """
    t, was_np = _to_torch(tforms)
    c, _ = _to_torch(calibration)
    dtype = t.dtype
    t = t.double()
    c = c.to(t)
    out = torch.linalg.inv(c) @ torch.linalg.inv(t[:-1]) @ t[1:] @ c
    return _back(out.to(dtype), was_np)


def chain_local(local: Array) -> Array:
    """Accumulate local poses into global poses: ``G_0 = I``, ``G_i = G_{i-1} @ L_i``.

    Args:
        local: ``(..., N-1, 4, 4)`` with row ``i-1`` = ``T_{i-1<-i}``.

    Returns:
        ``(..., N, 4, 4)`` global poses ``T_{0<-i}``.
    """
    m, was_np = _to_torch(local)
    n = m.shape[-3]
    eye = torch.eye(4, dtype=m.dtype, device=m.device).expand(*m.shape[:-3], 4, 4)
    outs = [eye]
    for k in range(n):
        outs.append(outs[-1] @ m[..., k, :, :])
    return _back(torch.stack(outs, -3), was_np)


def local_from_global(global_poses: Array) -> Array:
    """Inverse of :func:`chain_local`: ``L_i = G_{i-1}^-1 G_i``.

    Args:
        global_poses: ``(..., N, 4, 4)``.

    Returns:
        ``(..., N-1, 4, 4)``.
    """
    g, was_np = _to_torch(global_poses)
    return _back(invert(g[..., :-1, :, :]) @ g[..., 1:, :, :], was_np)


def transform_points(matrix: Array, points: Array) -> Array:
    """Apply transforms to 3D points.

    Args:
        matrix: ``(..., 4, 4)``.
        points: ``(..., P, 3)`` points (row vectors), broadcast against ``matrix``'s batch dims.

    Returns:
        ``(..., P, 3)`` transformed points.
    """
    m, was_np = _to_torch(matrix)
    p, _ = _to_torch(points)
    p = p.to(m.dtype)
    out = p @ m[..., :3, :3].transpose(-1, -2) + m[..., None, :3, 3]
    return _back(out, was_np)


def image_centre_mm(spacing: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    """Image centre in TUS-REC corner-origin image mm.

    Args:
        spacing: ``(sx, sy)`` mm per pixel along columns (x) and rows (y).
        shape: ``(H, W)`` frame shape.

    Returns:
        ``(3,)`` = ``(sx (W+1)/2, sy (H+1)/2, 0)``.
    """
    sx, sy = spacing
    h, w = shape
    return np.array([sx * (w + 1) / 2.0, sy * (h + 1) / 2.0, 0.0])


def translation_matrix(offset) -> np.ndarray:
    """``(4, 4)`` pure translation by ``offset`` (3,) mm."""
    out = np.eye(4)
    out[:3, 3] = np.asarray(offset, dtype=np.float64)
    return out


def _conjugate(matrix, offset, sign: float):
    m, was_np = _to_torch(matrix)
    d = torch.as_tensor(translation_matrix(sign * np.asarray(offset, dtype=np.float64)), dtype=m.dtype)
    d = d.to(m.device)
    return _back(invert(d) @ m @ d, was_np)


def corner_to_centre(matrix: Array, centre_mm) -> Array:
    """Re-express transforms from corner-origin image mm in centre-origin image mm.

    With ``D`` the translation by ``centre_mm`` (centre-origin point -> corner-origin point),
    returns ``D^-1 @ T @ D``. Shapes ``(..., 4, 4)``.
    """
    return _conjugate(matrix, centre_mm, 1.0)


def centre_to_corner(matrix: Array, centre_mm) -> Array:
    """Inverse of :func:`corner_to_centre`: ``D @ T @ D^-1``. Shapes ``(..., 4, 4)``."""
    return _conjugate(matrix, centre_mm, -1.0)


def image_points(shape: tuple[int, int], scale: np.ndarray, which: str = "five") -> np.ndarray:
    """Reference points of the image plane in corner-origin image mm.

    Args:
        shape: ``(H, W)``.
        scale: ``(4, 4)`` pixel -> mm scaling matrix ``S``.
        which: ``"corners"``: (1,1), (W,1), (1,H), (W,H) (TUS-REC order); ``"five"``: the four
            corners and the centre pixel ``((W+1)/2, (H+1)/2)``; ``"all"``: every pixel, row-major
            (index ``(v-1) W + (u-1)``), 1-based ``u, v``.

    Returns:
        ``(P, 3)`` points in mm (``z = 0``).
    """
    h, w = shape
    if which == "all":
        v, u = np.meshgrid(np.arange(1, h + 1), np.arange(1, w + 1), indexing="ij")
        uv = np.stack([u.ravel(), v.ravel()], -1).astype(np.float64)
    elif which in ("corners", "five"):
        uv = np.array([[1, 1], [w, 1], [1, h], [w, h]], dtype=np.float64)
        if which == "five":
            uv = np.concatenate([uv, [[(w + 1) / 2.0, (h + 1) / 2.0]]])
    else:
        raise ValueError(f"which must be 'all', 'corners' or 'five', got {which!r}")
    hom = np.concatenate([uv, np.zeros((len(uv), 1)), np.ones((len(uv), 1))], -1)
    return (hom @ np.asarray(scale, dtype=np.float64).T)[:, :3]


def is_rigid(matrix: Array, atol: float = 1e-3) -> Array:
    """Whether each ``(..., 4, 4)`` matrix is a proper rigid transform.

    Checks ``R^T R = I``, ``det R = +1`` and last row ``(0, 0, 0, 1)`` within ``atol``.
    Returns a boolean array of shape ``(...)``.
    """
    m, was_np = _to_torch(matrix)
    m = m.double()
    r = m[..., :3, :3]
    eye = torch.eye(3, dtype=m.dtype, device=m.device)
    orth = (r.transpose(-1, -2) @ r - eye).abs().amax((-1, -2)) <= atol
    det = (torch.linalg.det(r) - 1).abs() <= atol
    last = (m[..., 3, :] - torch.tensor([0, 0, 0, 1.0], dtype=m.dtype, device=m.device)).abs().amax(-1)
    ok = orth & det & (last <= atol) & torch.isfinite(m).all(-1).all(-1)
    return _back(ok, was_np)


def interpolate_steps(matrix: np.ndarray, steps: int) -> np.ndarray:
    """Split one rigid motion into ``steps`` equal screw-motion steps.

    Args:
        matrix: ``(4, 4)`` rigid transform ``T``.
        steps: number of steps ``k >= 1``.

    Returns:
        ``(k, 4, 4)``, each ``T^(1/k) = expm(logm(T) / k)``, so that their product is ``T``
        (rotation angles below 180 degrees).
    """
    from scipy.linalg import expm, logm

    if steps < 1:
        raise ValueError(f"interpolate_steps: steps must be >= 1, got {steps}")
    m = np.asarray(matrix, dtype=np.float64)
    if steps == 1:
        return m[None].copy()
    step = np.real(expm(np.real(logm(m)) / steps))
    step[3] = (0.0, 0.0, 0.0, 1.0)
    return np.repeat(step[None], steps, axis=0)


def rotation_angle_deg(matrix: Array) -> Array:
    """Rotation angle in degrees of each ``(..., 4, 4)`` transform (geodesic distance to I)."""
    m, was_np = _to_torch(matrix)
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    ang = torch.rad2deg(torch.acos(torch.clamp((tr - 1) / 2, -1.0, 1.0)))
    return _back(ang, was_np)

