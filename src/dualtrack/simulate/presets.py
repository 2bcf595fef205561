"""Simulator presets: a typed registry of probe, imaging and sweep settings.

Three presets ship with the package:

* ``tiny``: 48x64 frames, small linear probe, ~32 frames a scan; for unit tests (< 1 s a scan on CPU).
* ``small``: 128x160 frames, linear probe (32 x 25.6 mm), ~200 frames; the CPU demo.
* ``tusrec``: 480x640 frames with the TUS-REC 2024 pixel spacing and a 4DC7-3/40-like convex fan
  (radius 40 mm, 68 deg sector, 90 mm depth, 6 MHz), ~500 frames (1500 for rotation scans).

Point-spread functions are given as full widths at half maximum (FWHM) of the *pulse-echo
amplitude* envelope; the Gaussian sigma is ``FWHM / 2.355``. Elevation follows a Gaussian beam
``sigma_el(r) = sigma_0 * sqrt(1 + ((r - r_f) / z_R)^2)`` capped at the near-field width, with
``z_R`` chosen so that the beam reaches the cap at the probe face.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ProbeSpec",
    "ImagingSpec",
    "Randomisation",
    "SimPreset",
    "PRESETS",
    "get_preset",
    "list_presets",
    "FWHM_TO_SIGMA",
    "SPEED_OF_SOUND_MM_PER_US",
]

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
SPEED_OF_SOUND_MM_PER_US = 1.54


@dataclass(frozen=True)
class ProbeSpec:
    """Probe geometry in image-mm coordinates (x = columns, y = rows / depth, z = elevation).

    Attributes:
        kind: ``"linear"`` (beams parallel to y, aperture = image width) or ``"convex"`` (fan).
        depth_mm: imaging depth below the transducer face, mm.
        radius_mm: convex radius of curvature, mm (convex only).
        sector_deg: full fan opening angle, degrees (convex only).
        face_mm: image-mm y coordinate of the transducer face at the image centre column.
    """

    kind: str
    depth_mm: float
    radius_mm: float = 0.0
    sector_deg: float = 0.0
    face_mm: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "convex"):
            raise ValueError(f"probe kind must be 'linear' or 'convex', got {self.kind!r}")
        if self.kind == "convex" and (self.radius_mm <= 0 or not 0 < self.sector_deg < 180):
            raise ValueError("a convex probe needs radius_mm > 0 and 0 < sector_deg < 180")


@dataclass(frozen=True)
class ImagingSpec:
    """Beam, gain and display settings of one simulated scan.

    Attributes:
        frequency_mhz: centre frequency f0 (sets the echo phase ``2 k0 r``, ``k0 = 2 pi f0 / c``).
        fwhm_axial_mm: axial FWHM of the amplitude PSF.
        fwhm_lateral_mm: lateral FWHM at the face and at ``depth_mm`` (linear in depth between).
        fwhm_elevation_focus_mm: elevational FWHM at the elevation focus.
        fwhm_elevation_max_mm: elevational FWHM cap (near field / far field).
        elevation_focus_mm: depth of the elevation (lens) focus.
        dynamic_range_db: displayed dynamic range DR of the log compression.
        gain_db: echo level (dB re fully developed speckle of unit amplitude std) shown as white.
        noise_db: electronic noise level before TGC (dB re the same reference); ``None`` = no noise.
        tgc_factor: TGC slope as a fraction of the mean soft-tissue attenuation.
        tgc_max_db: cap of the TGC gain.
        attenuation_scale: multiplies every tissue attenuation coefficient.
    """

    frequency_mhz: float
    fwhm_axial_mm: float
    fwhm_lateral_mm: tuple[float, float]
    fwhm_elevation_focus_mm: float
    fwhm_elevation_max_mm: float
    elevation_focus_mm: float
    dynamic_range_db: float
    gain_db: float
    noise_db: float | None = -45.0
    tgc_factor: float = 1.0
    tgc_max_db: float = 45.0
    attenuation_scale: float = 1.0

    @property
    def k0(self) -> float:
        """Wavenumber ``2 pi f0 / c`` in rad/mm."""
        return 2.0 * math.pi * self.frequency_mhz / SPEED_OF_SOUND_MM_PER_US

    @property
    def sigma_axial(self) -> float:
        return self.fwhm_axial_mm * FWHM_TO_SIGMA

    @property
    def sigma_elevation_focus(self) -> float:
        return self.fwhm_elevation_focus_mm * FWHM_TO_SIGMA

    @property
    def sigma_elevation_max(self) -> float:
        return max(self.fwhm_elevation_max_mm, self.fwhm_elevation_focus_mm) * FWHM_TO_SIGMA

    @property
    def rayleigh_mm(self) -> float:
        """Gaussian-beam Rayleigh range ``z_R`` reaching the cap at the face (inf if no cap)."""
        ratio = self.sigma_elevation_max / self.sigma_elevation_focus
        if ratio <= 1.0 + 1e-9 or self.elevation_focus_mm <= 0:
            return math.inf
        return self.elevation_focus_mm / math.sqrt(ratio**2 - 1.0)

    def sigma_elevation(self, r):
        """Elevational amplitude sigma (mm) at depth ``r`` (mm); numpy/torch/float."""
        s0, cap, zr = self.sigma_elevation_focus, self.sigma_elevation_max, self.rayleigh_mm
        if math.isinf(zr):
            return r * 0 + s0
        s = s0 * ((1.0 + ((r - self.elevation_focus_mm) / zr) ** 2) ** 0.5)
        return s.clamp(max=cap) if hasattr(s, "clamp") else np.minimum(s, cap)

    def elevation_curvature(self, r):
        """Two-way wavefront curvature ``kappa(r)`` (1/mm) of the elevational beam at depth ``r``:
        the echo of a scatterer at elevation ``z`` gets the phase ``-k0 kappa z^2`` on top of
        ``-2 k0 r`` (numpy/torch/float).

        For a Gaussian beam ``kappa = 1/R = D / (D^2 + z_R^2)`` with ``D = r - focus``; written in
        terms of the width law it is ``kappa = sign(D) sqrt(1/s0^2 - 1/s(r)^2) / (2 k0 s(r))``, which
        holds for any width ``s(r)`` (also where it is capped) and keeps the two-way field
        ``exp(-z^2 / 2 s^2 - j k0 kappa z^2)`` a Gaussian beam. The intensity decorrelation over an
        elevational shift ``d`` of delta-correlated scatterers is then
        ``exp(-d^2 / 2 s_eff^2)`` with ``1/s_eff^2 = 1/s^2 + 4 k0^2 kappa^2 s^2 = 1/s0^2``: the speckle
        decorrelates over the focal width at every depth (van Cittert-Zernike), faster than the
        widened beam alone (``s(r) > s0``) would make it.
        """
        s0 = self.sigma_elevation_focus
        s = self.sigma_elevation(r)
        delta = r - self.elevation_focus_mm
        inner = 1.0 / s0**2 - 1.0 / s**2
        if hasattr(inner, "clamp"):
            return delta.sign() * inner.clamp(min=0.0).sqrt() / (2.0 * self.k0 * s)
        return np.sign(delta) * np.sqrt(np.maximum(inner, 0.0)) / (2.0 * self.k0 * s)

    def sigma_lateral(self, r, depth_mm: float):
        """Lateral amplitude sigma (mm) at depth ``r`` (mm), linear between face and ``depth_mm``."""
        near, far = self.fwhm_lateral_mm
        t = r / depth_mm
        t = t.clamp(0.0, 1.0) if hasattr(t, "clamp") else np.clip(t, 0.0, 1.0)
        return (near + (far - near) * t) * FWHM_TO_SIGMA


@dataclass(frozen=True)
class Randomisation:
    """Per-scan domain randomisation ranges (uniform). Factors multiply; ``*_db`` values add."""

    frequency: tuple[float, float] = (0.85, 1.15)
    psf: tuple[float, float] = (0.9, 1.25)
    elevation: tuple[float, float] = (0.85, 1.3)
    focus: tuple[float, float] = (0.7, 1.3)
    dynamic_range_db: tuple[float, float] = (-8.0, 8.0)
    gain_db: tuple[float, float] = (-4.0, 4.0)
    noise_db: tuple[float, float] = (-8.0, 6.0)
    tgc: tuple[float, float] = (0.7, 1.3)
    attenuation: tuple[float, float] = (0.8, 1.2)

    def apply(self, spec: ImagingSpec, rng: np.random.Generator) -> ImagingSpec:
        """Draw one randomised copy of ``spec``."""

        def u(lo_hi: tuple[float, float]) -> float:
            return float(rng.uniform(*lo_hi))

        psf, el = u(self.psf), u(self.elevation)
        near, far = spec.fwhm_lateral_mm
        noise = None if spec.noise_db is None else spec.noise_db + u(self.noise_db)
        return dataclasses.replace(
            spec,
            frequency_mhz=spec.frequency_mhz * u(self.frequency),
            fwhm_axial_mm=spec.fwhm_axial_mm * psf,
            fwhm_lateral_mm=(near * psf, far * psf),
            fwhm_elevation_focus_mm=spec.fwhm_elevation_focus_mm * el,
            fwhm_elevation_max_mm=spec.fwhm_elevation_max_mm * el,
            elevation_focus_mm=spec.elevation_focus_mm * u(self.focus),
            dynamic_range_db=spec.dynamic_range_db + u(self.dynamic_range_db),
            gain_db=spec.gain_db + u(self.gain_db),
            noise_db=noise,
            tgc_factor=spec.tgc_factor * u(self.tgc),
            attenuation_scale=spec.attenuation_scale * u(self.attenuation),
        )


@dataclass(frozen=True)
class SimPreset:
    """Everything a simulated dataset needs besides (seed, subject, scan).

    Attributes:
        name: registry name.
        height, width: frame size in pixels (rows, columns).
        spacing: ``(sx, sy)`` mm per pixel along columns and rows (the calibration scaling S).
        probe: probe geometry.
        imaging: nominal imaging settings (randomised per scan when ``randomise``).
        scatterers_per_cell: scatterer density per nominal resolution cell (product of the three
            FWHM at the elevation focus, lateral FWHM averaged over depth).
        surface_density_per_mm2: density of coherent scatterers on specular surfaces.
        num_frames: frames of a TUS-REC 2024-like scan.
        rotation_frames: frames of a TUS-REC 2025-like rotation scan.
        speed_mm_per_frame: mean probe speed along the path.
        fps: frame rate (sets the time axis of hand motion and tremor).
        brick_mm: edge of the cubic scatterer bricks.
        batch_size: frames rendered together.
        max_cached_points: LRU budget of the brick cache (points).
        randomise: draw per-scan imaging parameters from ``randomisation``.
        randomisation: the ranges.
        landmarks_2024, landmarks_2025: landmarks per scan.
        grid_oversampling: IQ-grid samples per PSF sigma (>= 2).
        attenuation_grid: ``(beams, samples)`` of the coarse per-frame attenuation/shadow grid.
    """

    name: str
    height: int
    width: int
    spacing: tuple[float, float]
    probe: ProbeSpec
    imaging: ImagingSpec
    scatterers_per_cell: float = 20.0
    surface_density_per_mm2: float = 30.0
    num_frames: int = 500
    rotation_frames: int = 1500
    speed_mm_per_frame: float = 0.3
    fps: float = 20.0
    brick_mm: float = 4.0
    batch_size: int = 16
    max_cached_points: int = 60_000_000
    randomise: bool = True
    randomisation: Randomisation = field(default_factory=Randomisation)
    landmarks_2024: int = 20
    landmarks_2025: int = 100
    grid_oversampling: float = 2.0
    attenuation_grid: tuple[int, int] = (64, 128)

    @property
    def density_per_mm3(self) -> float:
        """Volumetric scatterer density (1/mm^3) giving ``scatterers_per_cell`` at nominal PSF."""
        im = self.imaging
        cell = im.fwhm_axial_mm * float(np.mean(im.fwhm_lateral_mm)) * im.fwhm_elevation_focus_mm
        return self.scatterers_per_cell / cell

    def scan_imaging(self, rng: np.random.Generator) -> ImagingSpec:
        """Imaging settings of one scan: randomised if ``randomise`` else the nominal ones."""
        return self.randomisation.apply(self.imaging, rng) if self.randomise else self.imaging


PRESETS: dict[str, SimPreset] = {
    "tiny": SimPreset(
        name="tiny",
        height=48,
        width=64,
        spacing=(0.3, 0.3),
        probe=ProbeSpec(kind="linear", depth_mm=14.8),
        imaging=ImagingSpec(
            frequency_mhz=5.0,
            fwhm_axial_mm=0.45,
            fwhm_lateral_mm=(0.8, 0.9),
            fwhm_elevation_focus_mm=1.5,
            fwhm_elevation_max_mm=2.4,
            elevation_focus_mm=8.0,
            dynamic_range_db=60.0,
            gain_db=30.0,
        ),
        scatterers_per_cell=10.0,
        surface_density_per_mm2=20.0,
        num_frames=32,
        rotation_frames=48,
        brick_mm=2.0,
        max_cached_points=5_000_000,
        attenuation_grid=(24, 48),
    ),
    "small": SimPreset(
        name="small",
        height=128,
        width=160,
        spacing=(0.2, 0.2),
        probe=ProbeSpec(kind="linear", depth_mm=26.0),
        imaging=ImagingSpec(
            frequency_mhz=6.0,
            fwhm_axial_mm=0.4,
            fwhm_lateral_mm=(0.7, 0.9),
            fwhm_elevation_focus_mm=1.4,
            fwhm_elevation_max_mm=2.2,
            elevation_focus_mm=14.0,
            dynamic_range_db=60.0,
            gain_db=30.0,
        ),
        scatterers_per_cell=12.0,
        surface_density_per_mm2=25.0,
        num_frames=200,
        rotation_frames=400,
        brick_mm=2.0,
        max_cached_points=20_000_000,
        attenuation_grid=(40, 96),
    ),
    "tusrec": SimPreset(
        name="tusrec",
        height=480,
        width=640,
        spacing=(0.229389190673828, 0.220979690551758),
        probe=ProbeSpec(kind="convex", depth_mm=90.0, radius_mm=40.0, sector_deg=68.0, face_mm=1.0),
        imaging=ImagingSpec(
            frequency_mhz=6.0,
            fwhm_axial_mm=0.35,
            fwhm_lateral_mm=(0.6, 1.5),
            fwhm_elevation_focus_mm=1.5,
            fwhm_elevation_max_mm=4.0,
            elevation_focus_mm=40.0,
            dynamic_range_db=83.0,
            gain_db=45.0,
            noise_db=-68.0,
            tgc_max_db=40.0,
        ),
        scatterers_per_cell=20.0,
        surface_density_per_mm2=30.0,
        num_frames=500,
        rotation_frames=1500,
        brick_mm=3.0,
        batch_size=32,
        max_cached_points=120_000_000,
        attenuation_grid=(96, 240),
    ),
}


def list_presets() -> list[str]:
    """Names of the registered presets."""
    return sorted(PRESETS)


def get_preset(preset: str | SimPreset) -> SimPreset:
    """Look up a preset by name (or pass a :class:`SimPreset` through)."""
    if isinstance(preset, SimPreset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown simulator preset {preset!r}; choose one of {list_presets()}") from None
