"""Diagonal-Gaussian math for the latent variable: the one home of every formula on q(z|x).

Everything here is plain torch, so it can be tested without fairseq, and every function
computes in fp32 whatever dtype it is given: under ``--fp16`` a KL summed over a batch or
an ``exp`` of a log-variance would overflow or lose its small terms in half precision.
"""

import math

import torch

# exp(LOGVAR_MAX) = 22026 stays below fp16's largest value (65504), so a variance (and the
# std exp(logvar / 2)) can be formed in half precision; exp(LOGVAR_MIN) still has a
# standard deviation of 4.5e-5, far below any scale the decoder can resolve.
LOGVAR_MIN = -20.0
LOGVAR_MAX = 10.0

LOG_2PI = math.log(2.0 * math.pi)


def clamp_logvar(logvar: torch.Tensor) -> torch.Tensor:
    """Log-variance in fp32, clamped so that ``exp`` cannot overflow in any precision."""
    return logvar.float().clamp(min=LOGVAR_MIN, max=LOGVAR_MAX)


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, generator=None) -> torch.Tensor:
    """Draw z = mean + std * eps with eps ~ N(0, I) (Kingma & Welling's trick), in fp32."""
    mean = mean.float()
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + torch.exp(0.5 * logvar.float()) * eps


def kl_between_gaussians(mean_q: torch.Tensor, logvar_q: torch.Tensor,
                         mean_p: torch.Tensor, logvar_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mean_q, exp(logvar_q)) || N(mean_p, exp(logvar_p))) per latent dimension, in nats.

    Analytic form: 0.5 * (logvar_p - logvar_q + (exp(logvar_q) + (mean_q - mean_p)^2) / exp(logvar_p) - 1).
    The KL of a conditional VAE, whose prior p(z|x) is learned; the arguments broadcast, so a
    scalar 0 stands for N(0, I) (:func:`kl_to_standard_normal`). Sum over the last dimension
    for the KL of one sentence.
    """
    mean_q, logvar_q = mean_q.float(), logvar_q.float()
    mean_p, logvar_p = mean_p.float(), logvar_p.float()
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mean_q - mean_p).pow(2)) * torch.exp(-logvar_p) - 1.0)


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per latent dimension (same shape as ``mean``), in nats.

    :func:`kl_between_gaussians` with the prior's mean and log-variance 0, i.e.
    0.5 * (mean^2 + exp(logvar) - 1 - logvar).
    """
    zero = torch.zeros((), dtype=torch.float32, device=mean.device)
    return kl_between_gaussians(mean, logvar, zero, zero)


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, exp(logvar)), summed over the last (latent) dimension, in fp32."""
    z, mean, logvar = z.float(), mean.float(), logvar.float()
    per_dim = -0.5 * (LOG_2PI + logvar + (z - mean).pow(2) * torch.exp(-logvar))
    return per_dim.sum(-1)


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last (latent) dimension, in fp32."""
    z = z.float()
    return (-0.5 * (LOG_2PI + z.pow(2))).sum(-1)
