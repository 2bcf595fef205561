"""Device-independent random numbers for the simulator.

Every random quantity of a simulated sweep is a pure function of ``(seed, subject, scan, ...)``:

* small CPU-side draws (phantom shape, trajectory, imaging parameters, landmarks) use a numpy
  ``Generator`` seeded with :func:`stable_seed`;
* bulk draws (scatterer positions and amplitudes, electronic noise) use a *counter-based* integer
  hash evaluated with torch integer ops (:func:`hash_uniform`). Integer arithmetic is exact, so
  the same numbers come out on the CPU and on a GPU, in any batch order, without a stateful
  generator.

The hash is a 32-bit avalanche mixer (two xor-shift-multiply rounds) kept inside int64 so that
no operation overflows: values stay below ``2**32`` and multipliers below ``2**27``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

__all__ = [
    "stable_seed",
    "stable_key32",
    "mix32",
    "hash_uniform",
    "hash_normal",
    "hash_phasor_amplitude",
    "numpy_rng",
]

_MASK = 0xFFFFFFFF
_MUL = 0x45D9F3B


def stable_seed(*parts: object) -> int:
    """A 63-bit integer hash of ``parts`` (their ``repr``), stable across runs and platforms."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def stable_key32(*parts: object) -> int:
    """A 32-bit key derived from ``parts`` (see :func:`stable_seed`)."""
    return stable_seed(*parts) & _MASK


def numpy_rng(*parts: object) -> np.random.Generator:
    """A numpy ``Generator`` seeded from a stable hash of ``parts``."""
    return np.random.default_rng(stable_seed(*parts))


def mix32(x: torch.Tensor) -> torch.Tensor:
    """Bijective 32-bit integer mixer on int64 tensors holding values in ``[0, 2**32)``."""
    x = (((x >> 16) ^ x) * _MUL) & _MASK
    x = (((x >> 16) ^ x) * _MUL) & _MASK
    return (x >> 16) ^ x


def hash_uniform(key_a: torch.Tensor, key_b: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """Uniform numbers in the open interval ``(0, 1)``, float32, one per element.

    Args:
        key_a, key_b: int64 keys in ``[0, 2**32)`` (broadcastable to ``counter``), e.g. per brick.
        counter: int64 counters in ``[0, 2**32)`` (e.g. ``point_index * 8 + channel``).

    Returns:
        float32 tensor of the broadcast shape; 24-bit resolution, exactly reproducible on any device.
    """
    h = mix32(key_a ^ mix32(key_b ^ mix32(counter & _MASK)))
    return ((h >> 8).to(torch.float32) + 0.5) * (1.0 / 16777216.0)


def hash_normal(key_a: torch.Tensor, key_b: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """Standard normal numbers (Box-Muller on the hashed uniforms of counters ``c`` and ``c + 1``)."""
    u1 = hash_uniform(key_a, key_b, counter)
    u2 = hash_uniform(key_a, key_b, counter + 1)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * torch.pi) * u2)


def hash_phasor_amplitude(key_a: torch.Tensor, key_b: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """Real scatterer amplitudes with ``E a^2 = 1`` and ``E a^4 = 2``: Rayleigh magnitude, random sign
    (counters ``c`` and ``c + 1``).

    With these moments every scatterer's echo phasor ``a exp(-j 2 k0 r)`` has the fourth moment of a
    circular complex Gaussian, which removes most of the finite-density excess kurtosis of the
    speckle (Gaussian amplitudes have ``E a^4 = 3``)."""
    u1 = hash_uniform(key_a, key_b, counter)
    u2 = hash_uniform(key_a, key_b, counter + 1)
    return torch.sqrt(-torch.log(u1)) * torch.where(u2 < 0.5, -1.0, 1.0)
