"""Walking and pushing in latent space: interpolation paths and attribute vectors.

The one home of lerp / slerp and of latent arithmetic; the hub and ``svae-interpolate`` call
these and only decode the results.
"""

import torch
from torch import Tensor

from fairseq_svae.errors import OptionError

# Below this sin(angle) two codes are (anti)parallel: slerp's weights would divide by ~0, and
# the straight line is then the only well-defined path anyway.
_SLERP_MIN_SIN = 1e-6


def lerp(start: Tensor, end: Tensor, t: Tensor) -> Tensor:
    """Points (1 - t) * start + t * end for each t (shape len(t) x dim)."""
    t = t.to(start.dtype).unsqueeze(-1)
    return (1 - t) * start + t * end


def slerp(start: Tensor, end: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016 for generative models).

    Under a Gaussian prior almost all mass lies near the sphere of radius sqrt(dim); the
    straight line between two codes cuts through the low-norm interior the decoder rarely saw
    in training, the great-circle arc does not.
    """
    t = t.to(start.dtype).unsqueeze(-1)
    cosine = torch.dot(start, end) / (start.norm() * end.norm()).clamp_min(1e-12)
    angle = torch.arccos(cosine.clamp(-1.0, 1.0))
    sine = torch.sin(angle)
    if sine < _SLERP_MIN_SIN:
        return lerp(start, end, t.squeeze(-1))
    return (torch.sin((1 - t) * angle) * start + torch.sin(t * angle) * end) / sine


def interpolation_path(start: Tensor, end: Tensor, steps: int, spherical: bool = False) -> Tensor:
    """``steps`` evenly spaced codes from ``start`` to ``end``, both endpoints included exactly."""
    if steps < 2:
        raise OptionError(f"an interpolation needs at least 2 steps (its two endpoints), got {steps}")
    if start.shape != end.shape or start.dim() != 1:
        raise OptionError(f"interpolate between two codes of one shape (dim,), got {tuple(start.shape)} "
                         f"and {tuple(end.shape)}")
    t = torch.linspace(0.0, 1.0, steps)
    path = slerp(start, end, t) if spherical else lerp(start, end, t)
    # linspace and the trigonometry can leave the last digit off; the endpoints must be the codes.
    path[0], path[-1] = start, end
    return path


def attribute_vector(means_with: Tensor, means_without: Tensor) -> Tensor:
    """Mean posterior mean of sentences with an attribute minus that of sentences without it."""
    if means_with.size(0) == 0 or means_without.size(0) == 0:
        raise OptionError("an attribute vector needs at least one sentence on each side")
    return means_with.float().mean(0) - means_without.float().mean(0)


def shift(latents: Tensor, vector: Tensor, alpha: float) -> Tensor:
    """Move each code by ``alpha`` times ``vector`` (negative alpha moves away from the attribute)."""
    return latents + alpha * vector.to(latents)
