"""Probe geometry: beam coordinates, the IQ grid, scan conversion and depth-dependent PSF.

All coordinates are *image mm* (TUS-REC corner origin): ``x = sx * u`` along columns, ``y = sy * v``
along rows (depth increases downwards), ``z`` elevational (the image plane is ``z = 0``; ``(x, y, z)``
is right-handed). The transducer face is centred at ``(x_c, face_mm)`` with ``x_c = sx (W + 1) / 2``.

Beam coordinates ``(r, l)``: ``r`` is the depth below the face along the beam (mm); ``l`` is the
lateral beam coordinate, ``x`` in mm for a linear probe, the beam angle ``theta`` in radians for
a convex probe whose centre of curvature is ``(x_c, face_mm - R)``:
``r = |(x - x_c, y - face_mm + R)| - R``, ``theta = atan2(x - x_c, y - face_mm + R)``.

The IQ grid samples ``(r, l)`` at a pitch of ``sigma / grid_oversampling`` (axial sigma along ``r``,
the smallest lateral sigma along ``l``), with margins of 4 sigma so that scatterers just outside the
field of view still contribute to border pixels.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dualtrack.simulate.presets import ImagingSpec, SimPreset

__all__ = ["ProbeGeometry"]

ELEVATION_SLAB_SIGMAS = 4.3
"""Half thickness of the gathered elevational slab, in units of the largest elevational sigma
(the Gaussian weight at the slab edge is < 1e-4: no popping)."""


class ProbeGeometry:
    """Geometry and grids of one probe + imaging setting.

    Args:
        preset: frame size, spacing and probe.
        imaging: the (possibly randomised) imaging settings of the scan.
    """

    def __init__(self, preset: SimPreset, imaging: ImagingSpec) -> None:
        self.preset, self.imaging, self.probe = preset, imaging, preset.probe
        self.height, self.width = preset.height, preset.width
        self.sx, self.sy = preset.spacing
        self.convex = self.probe.kind == "convex"
        self.xc = self.sx * (self.width + 1) / 2.0
        self.y0 = self.probe.face_mm
        self.radius = self.probe.radius_mm
        depth = self.probe.depth_mm
        self.depth = depth
        os_ = max(preset.grid_oversampling, 1.0)
        sig_ax = imaging.sigma_axial
        r_s = np.linspace(0.0, depth, 256)
        sig_lat = imaging.sigma_lateral(r_s, depth)
        if self.convex:
            half = math.radians(self.probe.sector_deg) / 2.0
            sig_l = sig_lat / (self.radius + r_s)
            self.fov_lateral = (-half, half)
        else:
            sig_l = sig_lat
            self.fov_lateral = (self.sx * 1.0, self.sx * self.width)
        self.dr = sig_ax / os_
        self.dl = float(sig_l.min()) / os_
        lat_margin = 4.0 * float(sig_l.max())
        self.r0 = 0.0
        self.nr = int(math.ceil((depth + 4.0 * sig_ax) / self.dr)) + 2
        self.l0 = self.fov_lateral[0] - lat_margin
        self.nl = int(math.ceil((self.fov_lateral[1] + lat_margin - self.l0) / self.dl)) + 2
        self.r_grid = self.r0 + self.dr * np.arange(self.nr)
        self.l_grid = self.l0 + self.dl * np.arange(self.nl)
        self.elevation_half = ELEVATION_SLAB_SIGMAS * imaging.sigma_elevation_max

    # ------------------------------------------------------------------ coordinates

    def beam_coords(self, x, y):
        """Image-mm ``(x, y)`` -> beam ``(r, l)`` (torch or numpy, elementwise)."""
        lib = torch if isinstance(x, torch.Tensor) else np
        if self.convex:
            dx, dy = x - self.xc, y - (self.y0 - self.radius)
            return lib.sqrt(dx * dx + dy * dy) - self.radius, lib.arctan2(dx, dy)
        return y - self.y0, x

    def image_coords(self, r, l):
        """Beam ``(r, l)`` -> image-mm ``(x, y)`` (numpy)."""
        if self.convex:
            rho = self.radius + r
            return self.xc + rho * np.sin(l), self.y0 - self.radius + rho * np.cos(l)
        return l, self.y0 + r

    def local_box(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned box ``(lo (3,), hi (3,))`` in image mm holding every scatterer that can
        contribute to the IQ grid (field of view + PSF margins + elevational slab)."""
        r_max = self.r_grid[-1]
        lat = np.linspace(self.l_grid[0], self.l_grid[-1], 64)
        xs, ys = [], []
        for r in (self.r_grid[0], r_max):
            x, y = self.image_coords(np.full_like(lat, r), lat)
            xs.append(x)
            ys.append(y)
        xs, ys = np.concatenate(xs), np.concatenate(ys)
        lo = np.array([xs.min(), ys.min(), -self.elevation_half])
        hi = np.array([xs.max(), ys.max(), self.elevation_half])
        return lo, hi

    # ------------------------------------------------------------------ per-row quantities

    def row_sigma_lateral_cells(self) -> np.ndarray:
        """``(nr,)`` lateral amplitude sigma in grid cells, per IQ row."""
        sig = self.imaging.sigma_lateral(self.r_grid, self.depth)
        if self.convex:
            sig = sig / (self.radius + np.maximum(self.r_grid, 0.0))
        return sig / self.dl

    def reference_amplitude(self, density_per_mm3: float) -> np.ndarray:
        """``(nr,)`` rms echo amplitude of unit-std fully developed speckle, per IQ row:
        ``sqrt(n pi^1.5 sigma_ax sigma_lat(r) sigma_el(r))``."""
        im = self.imaging
        r = np.maximum(self.r_grid, 0.0)
        return np.sqrt(
            density_per_mm3
            * math.pi**1.5
            * im.sigma_axial
            * im.sigma_lateral(r, self.depth)
            * im.sigma_elevation(r)
        )

    # ------------------------------------------------------------------ scan conversion

    def pixel_grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``grid_sample`` coordinates ``(H, W, 2)`` of every pixel into the IQ grid
        (align_corners=True) and the field-of-view mask ``(H, W)`` bool."""
        u = np.arange(1, self.width + 1) * self.sx
        v = np.arange(1, self.height + 1) * self.sy
        x, y = np.meshgrid(u, v)
        r, l = self.beam_coords(x, y)
        gx = 2.0 * (l - self.l0) / (self.dl * (self.nl - 1)) - 1.0
        gy = 2.0 * (r - self.r0) / (self.dr * (self.nr - 1)) - 1.0
        mask = (r >= 0) & (r <= self.depth) & (l >= self.fov_lateral[0]) & (l <= self.fov_lateral[1])
        grid = torch.tensor(np.stack([gx, gy], -1), dtype=torch.float32)
        return grid, torch.tensor(mask)

    def pixel_in_fov(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Whether 1-based pixel coordinates ``(u, v)`` lie inside the imaged field of view."""
        r, l = self.beam_coords(np.asarray(u) * self.sx, np.asarray(v) * self.sy)
        return (r >= 0) & (r <= self.depth) & (l >= self.fov_lateral[0]) & (l <= self.fov_lateral[1])
