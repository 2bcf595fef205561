"""B-mode formation: the exact-phase point-scatterer convolution model, batched in torch.

For a batch of probe poses (image mm -> world), per frame:

1. gather the scatterer bricks that intersect the frame's slab (field of view + PSF margins,
   elevational half thickness ``4.3 sigma_el,max``);
2. transform the scatterers to image-mm coordinates, then to beam coordinates ``(r, l)``;
3. weight by the complex elevational beam ``exp(-z^2 / 2 sigma_el(r)^2 - j k0 kappa(r) z^2)``
   (width and wavefront curvature of a Gaussian beam focused at ``elevation_focus_mm``,
   :meth:`~dualtrack.simulate.presets.ImagingSpec.elevation_curvature`) and apply the exact echo
   phase ``exp(-j 2 k0 r)`` of each scatterer. The curvature makes the speckle decorrelate over the
   focal width at every depth, as a real focused beam does, not over the widened beam;
4. splat the complex values bilinearly onto the IQ grid (``index_add_``);
5. (optional) electronic noise: random complex point sources on a second IQ grid, blurred with
   the same PSF and added after the attenuation gain and before TGC (flat before TGC, amplified
   by TGC, independent per frame);
6. separable in-plane PSF: Gaussian along ``r`` (convolution), per-row Gaussian along ``l``
   (FFT; exact depth-dependent lateral width, also in ``theta`` for the fan);
7. envelope ``|IQ|``, times the gain ``G_att(r, l) TGC(r) / A_ref(r)``, where ``G_att`` is the
   round-trip attenuation ``exp(-2 int alpha dr)`` along each beam, evaluated per frame from the
   phantom on a coarse beam grid (acoustic shadows, posterior enhancement);
8. log compression with the dynamic range, scan conversion (bilinear ``grid_sample``), fan mask,
   uint8.

Nothing depends on the position of the probe relative to any grid of the world (there is none):
scatterers are world-fixed random points and every quantity is evaluated at their exact positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dualtrack.simulate.phantom import BrickPhantom
from dualtrack.simulate.presets import ImagingSpec, SimPreset
from dualtrack.simulate.probe import ProbeGeometry
from dualtrack.simulate.rng import hash_uniform, stable_key32

__all__ = ["BModeRenderer", "RenderOutput"]

_NOISE_POINTS_PER_CELL = 0.3
_MEAN_TISSUE_ALPHA_DB = 0.85  # dB / (cm MHz), reference for the TGC slope


@dataclass
class RenderOutput:
    """Rendered batch.

    Attributes:
        frames: ``(B, H, W)`` uint8 B-mode frames (on the CPU).
        envelope: ``(B, nr, nl)`` float32 envelope on the IQ grid after gain (before log), or None.
        points: number of scatterers that entered the splat, per frame.
    """

    frames: torch.Tensor
    envelope: torch.Tensor | None
    points: list[int]


class BModeRenderer:
    """Renders frames of one scan (fixed probe and imaging settings).

    Args:
        preset: frame size, spacing, probe and densities.
        imaging: imaging settings of the scan (see :meth:`SimPreset.scan_imaging`).
        device: torch device for all heavy work.
        density_per_mm3: scatterer density of the phantom (default: the preset's), used to
            normalise the echo level so that unit-std tissue has unit rms amplitude at all depths.
    """

    def __init__(
        self,
        preset: SimPreset,
        imaging: ImagingSpec,
        device: str | torch.device = "cpu",
        density_per_mm3: float | None = None,
    ) -> None:
        self.preset, self.imaging = preset, imaging
        self.device = torch.device(device)
        self.geom = g = ProbeGeometry(preset, imaging)
        dev = self.device
        density = preset.density_per_mm3 if density_per_mm3 is None else density_per_mm3
        self.k0 = imaging.k0
        # elevational beam per depth, evaluated per scatterer
        self._el_s0 = imaging.sigma_elevation_focus
        self._el_cap = imaging.sigma_elevation_max
        self._el_zr = imaging.rayleigh_mm
        # axial PSF kernel (peak 1) in rows
        s_r = imaging.sigma_axial / g.dr
        half = int(math.ceil(4 * s_r))
        m = torch.arange(-half, half + 1, dtype=torch.float32)
        self._k_ax = torch.exp(-0.5 * (m / s_r) ** 2).tolist()
        self._pad_ax = half
        # lateral PSF per row, in the Fourier domain (peak-1 Gaussian of width sigma_l(row))
        s_l = g.row_sigma_lateral_cells()
        self._nfft = _fft_size(g.nl + 2 * int(math.ceil(4 * s_l.max())))
        w = 2 * np.pi * np.fft.fftfreq(self._nfft)
        mask = s_l[:, None] * math.sqrt(2 * math.pi) * np.exp(-0.5 * (w[None] * s_l[:, None]) ** 2)
        self._lat_mask = torch.tensor(mask, dtype=torch.float32, device=dev)
        self._sigma_rows = torch.tensor(s_r * s_l, dtype=torch.float32, device=dev)  # for noise power
        # depth gain: TGC / reference amplitude
        a_ref = g.reference_amplitude(density)
        np_per_db = 1.0 / (20.0 * math.log10(math.e))
        alpha_tgc = imaging.tgc_factor * _MEAN_TISSUE_ALPHA_DB * imaging.frequency_mhz / 86.86
        tgc = np.exp(np.minimum(2 * alpha_tgc * np.maximum(g.r_grid, 0), imaging.tgc_max_db * np_per_db))
        self._tgc = torch.tensor(tgc, dtype=torch.float32, device=dev)
        self._inv_a_ref = torch.tensor(1.0 / a_ref, dtype=torch.float32, device=dev)
        # coarse attenuation grid in beam coordinates (image mm, z = 0)
        nl_c, nr_c = preset.attenuation_grid
        rc = np.linspace(g.r_grid[0], g.r_grid[-1], nr_c)
        lc = np.linspace(g.l_grid[0], g.l_grid[-1], nl_c)
        rr, ll = np.meshgrid(rc, lc, indexing="ij")
        xx, yy = g.image_coords(rr, ll)
        pts = np.stack([xx, yy, np.zeros_like(xx), np.ones_like(xx)], -1).reshape(-1, 4)
        self._att_local = torch.tensor(pts, dtype=torch.float64)
        self._att_shape = (nr_c, nl_c)
        self._att_dr = float(rc[1] - rc[0])
        # scan conversion
        grid, fov = g.pixel_grid()
        self._pix_grid = grid.to(dev)
        self._fov = fov.to(dev)
        lo, hi = g.local_box()
        self._box_c = torch.tensor((lo + hi) / 2, dtype=torch.float64)
        self._box_h = torch.tensor((hi - lo) / 2, dtype=torch.float64)

    # ------------------------------------------------------------------ helpers

    def sigma_elevation(self, r: torch.Tensor) -> torch.Tensor:
        if math.isinf(self._el_zr):
            return torch.full_like(r, self._el_s0)
        return (
            self._el_s0 * torch.sqrt(1 + ((r - self.imaging.elevation_focus_mm) / self._el_zr) ** 2)
        ).clamp(max=self._el_cap)

    def _select_bricks(self, phantom: BrickPhantom, poses: torch.Tensor):
        """Bricks intersecting each frame's slab: (ijk (K,3), mask (B,K))."""
        b = phantom.spec.brick_mm
        corners = torch.tensor(
            [[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=torch.float64
        )
        lo = self._box_c - self._box_h
        pts = lo + corners * (2 * self._box_h)
        world = torch.einsum("bij,kj->bki", poses[:, :3, :3], pts) + poses[:, None, :3, 3]
        wlo = world.reshape(-1, 3).min(0).values
        whi = world.reshape(-1, 3).max(0).values
        ilo = torch.floor(wlo / b).to(torch.int64) - 1
        ihi = torch.floor(whi / b).to(torch.int64) + 1
        axes = [torch.arange(int(ilo[a]), int(ihi[a]) + 1) for a in range(3)]
        ijk = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        centres = (ijk.to(torch.float64) + 0.5) * b
        local = torch.einsum("bji,bkj->bki", poses[:, :3, :3], centres[None] - poses[:, None, :3, 3])
        # separating axes of the slab: a cube's half extent along local axis a is b/2 sum_j |R_ja|;
        # the margin covers surface scatterers projected slightly outside their brick
        reach = 0.5 * b * poses[:, :3, :3].abs().sum(1) + 0.3
        mask = ((local - self._box_c).abs() <= self._box_h + reach[:, None]).all(-1)
        keep = mask.any(0)
        return ijk[keep], mask[:, keep]

    def _attenuation_gain(self, phantom: BrickPhantom, poses: torch.Tensor) -> torch.Tensor:
        """Round-trip attenuation gain on the coarse beam grid, ``(B, 1, nr_c, nl_c)``."""
        world = torch.einsum("bij,nj->bni", poses, self._att_local)[..., :3]
        nr_c, nl_c = self._att_shape
        alpha = phantom.attenuation_db(world.reshape(-1, 3).to(torch.float32).to(self.device))
        alpha = alpha.view(-1, nr_c, nl_c) * (
            self.imaging.attenuation_scale * self.imaging.frequency_mhz / 86.86
        )
        cum = torch.cumsum(alpha, 1) - 0.5 * (alpha + alpha[:, :1])
        return torch.exp(-2.0 * cum * self._att_dr).unsqueeze(1)

    # ------------------------------------------------------------------ main entry

    @torch.no_grad()
    def render(
        self, phantom: BrickPhantom, poses, noise_keys: list[int] | None = None, return_envelope: bool = False
    ) -> RenderOutput:
        """Render a batch of frames.

        Args:
            phantom: the scatterer field (its device must equal the renderer's).
            poses: ``(B, 4, 4)`` image-mm -> world transforms (float64 numpy or tensor).
            noise_keys: one integer per frame seeding its electronic noise (required when the
                imaging settings have noise).
            return_envelope: also return the envelope on the IQ grid (for validation).

        Returns:
            :class:`RenderOutput` with ``frames`` ``(B, H, W)`` uint8 on the CPU.
        """
        g, dev = self.geom, self.device
        poses = torch.as_tensor(np.asarray(poses, dtype=np.float64))
        bsz = poses.shape[0]
        nr, nl = g.nr, g.nl
        ijk, mask = self._select_bricks(phantom, poses)
        bricks = phantom.bricks(ijk)
        lengths = torch.tensor([p.shape[0] for p, _ in bricks], dtype=torch.int64)
        if len(bricks):
            all_pts = torch.cat([p for p, _ in bricks])
            all_amp = torch.cat([a for _, a in bricks])
        else:
            all_pts = torch.zeros(0, 3, device=dev)
            all_amp = torch.zeros(0, device=dev)
        starts = torch.cumsum(lengths, 0) - lengths
        gain_c = self._attenuation_gain(phantom, poses)
        buf = torch.zeros(2, bsz * nr * nl, device=dev)
        counts: list[int] = []
        for b in range(bsz):
            sel = torch.nonzero(mask[b]).flatten()
            ln = lengths[sel]
            total = int(ln.sum())
            if total == 0:
                counts.append(0)
                continue
            idx = torch.repeat_interleave(starts[sel] - (torch.cumsum(ln, 0) - ln), ln) + torch.arange(total)
            idx = idx.to(dev)
            rot = poses[b, :3, :3].to(torch.float32).to(dev)
            org = poses[b, :3, 3].to(torch.float32).to(dev)
            local = (all_pts.index_select(0, idx) - org) @ rot
            amp = all_amp.index_select(0, idx)
            n = self._splat(buf, b, local, amp)
            counts.append(n)
        noise = self.imaging.noise_db is not None
        if noise:
            if noise_keys is None or len(noise_keys) != bsz:
                raise ValueError("render: noise is on, so one noise key per frame is required")
            buf = torch.cat([buf, self._noise_sources(noise_keys)])
        iq = self._psf(buf.view(-1, bsz, nr, nl))
        gain = F.interpolate(gain_c.to(dev), size=(nr, nl), mode="bilinear", align_corners=True)[:, 0]
        gain = gain * self._inv_a_ref[None, :, None]
        re, im = iq[0] * gain, iq[1] * gain
        if noise:  # electronic noise: after attenuation, before TGC
            re, im = re + iq[2], im + iq[3]
        env = torch.sqrt(re * re + im * im) * self._tgc[None, :, None]
        frames = self._display(env)
        return RenderOutput(frames=frames.cpu(), envelope=env if return_envelope else None, points=counts)

    def _splat(self, buf: torch.Tensor, b: int, local: torch.Tensor, amp: torch.Tensor) -> int:
        g = self.geom
        keep = torch.nonzero(local[:, 2].abs() < g.elevation_half).flatten()
        local, amp = local.index_select(0, keep), amp.index_select(0, keep)
        z = local[:, 2]
        r, lat = g.beam_coords(local[:, 0], local[:, 1])
        gr = (r - g.r0) / g.dr
        gl = (lat - g.l0) / g.dl
        keep = (gr >= 0) & (gr < g.nr - 1) & (gl >= 0) & (gl < g.nl - 1)
        gr, gl, r, z, amp = gr[keep], gl[keep], r[keep], z[keep], amp[keep]
        s_el = self.sigma_elevation(r)
        w = amp * torch.exp(-0.5 * (z / s_el) ** 2)
        phase = (-2.0 * self.k0) * r - self.k0 * self.imaging.elevation_curvature(r) * z * z
        vals = torch.stack([w * torch.cos(phase), w * torch.sin(phase)])
        _bilinear_add(buf, b, gr, gl, vals, g.nr, g.nl)
        return int(r.numel())

    def _noise_sources(self, noise_keys: list[int]) -> torch.Tensor:
        """Electronic noise as random complex point sources splatted on the IQ grid, scaled so that
        after the PSF its rms is ``10^(noise_db / 20)`` (the unit being unit-std tissue before
        attenuation). Returns ``(2, B * nr * nl)``."""
        g, dev = self.geom, self.device
        bsz = len(noise_keys)
        n = int(_NOISE_POINTS_PER_CELL * g.nr * g.nl)
        ka = torch.tensor([stable_key32(k, "a") for k in noise_keys], dtype=torch.int64, device=dev)[:, None]
        kb = torch.tensor([stable_key32(k, "b") for k in noise_keys], dtype=torch.int64, device=dev)[:, None]
        ctr = torch.arange(n, device=dev, dtype=torch.int64)[None] * 4
        u = [hash_uniform(ka, kb, ctr + c) for c in range(4)]
        gr = u[0] * (g.nr - 1 - 1e-3)
        gl = u[1] * (g.nl - 1 - 1e-3)
        rad = torch.sqrt(-torch.log(u[2]))  # |complex normal| with E|n|^2 = 1
        ph = (2 * math.pi) * u[3]
        row = gr.round().to(torch.int64)
        level = 10 ** (self.imaging.noise_db / 20.0)
        mag = rad * level / torch.sqrt(_NOISE_POINTS_PER_CELL * math.pi * self._sigma_rows[row])
        vals = torch.stack([mag * torch.cos(ph), mag * torch.sin(ph)])
        out = torch.zeros(2, bsz * g.nr * g.nl, device=dev)
        fid = torch.arange(bsz, device=dev)[:, None].expand(bsz, n)
        _bilinear_add(out, fid.reshape(-1), gr.reshape(-1), gl.reshape(-1), vals.reshape(2, -1), g.nr, g.nl)
        return out

    def _psf(self, x: torch.Tensor) -> torch.Tensor:
        """Axial convolution + per-row lateral Gaussian (FFT). ``(C, B, nr, nl)`` -> same shape,
        ``C`` = 2 (re, im) or 4 (signal and noise)."""
        nr, nl, h = self.geom.nr, self.geom.nl, self._pad_ax
        xp = F.pad(x, (0, 0, h, h))
        y = self._k_ax[h] * x
        for m in range(h):  # symmetric kernel: shift-and-add (fast on CPU and GPU)
            y = y + self._k_ax[m] * (xp[:, :, m : m + nr] + xp[:, :, 2 * h - m : 2 * h - m + nr])
        c = torch.complex(y[0::2], y[1::2])
        out = torch.fft.ifft(torch.fft.fft(c, n=self._nfft, dim=-1) * self._lat_mask, dim=-1)[..., :nl]
        return torch.stack([out.real, out.imag], 1).reshape(x.shape)

    def _display(self, env: torch.Tensor) -> torch.Tensor:
        """Log compression, scan conversion and quantisation: ``(B, nr, nl)`` -> ``(B, H, W)`` uint8."""
        im = self.imaging
        db = 20.0 * torch.log10(env.clamp(min=1e-10))
        grey = ((db - (im.gain_db - im.dynamic_range_db)) / im.dynamic_range_db).clamp(0, 1)
        grid = self._pix_grid[None].expand(env.shape[0], -1, -1, -1)
        out = F.grid_sample(grey[:, None], grid, mode="bilinear", align_corners=True)[:, 0]
        out = out * self._fov
        return torch.round(out * 255.0).to(torch.uint8)


def _bilinear_add(buf, b, gr, gl, vals, nr: int, nl: int) -> None:
    """Bilinear splat of ``vals`` ``(2, P)`` at fractional grid positions into ``buf`` ``(2, B*nr*nl)``."""
    ir = gr.floor()
    il = gl.floor()
    fr = gr - ir
    fl = gl - il
    ir = ir.to(torch.int64)
    il = il.to(torch.int64)
    base = (b * nr + ir) * nl + il
    idx = torch.cat([base, base + 1, base + nl, base + nl + 1])
    w = torch.cat([(1 - fr) * (1 - fl), (1 - fr) * fl, fr * (1 - fl), fr * fl])
    buf.index_add_(1, idx, vals.repeat(1, 4) * w)


def _fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (fast FFT length)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1
