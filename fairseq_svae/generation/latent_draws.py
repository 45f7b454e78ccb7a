"""Seeded draws of z, one independent random stream per sample id.

The one home of seeded draws: fairseq-generate, the hub and svae-eval's importance samples all
take their codes from here. Sample ``i`` under seed ``s`` gets the same z whatever the batch size, the batch order, the
search (greedy, beam, sampling) or the number of samples asked for: ``--prior-samples 10`` gives
the first ten sentences of ``--prior-samples 1000``, and the hub's ``sample(n, seed=s)`` gives
what ``fairseq-generate --sample-from-prior --seed s`` prints. Drawing from the global RNG in
batch order would tie every sample to the batching.
"""

from typing import Iterable, List, Optional

import numpy as np
import torch
from torch import Tensor

from fairseq_svae.gaussian import reparameterize


def sample_generators(ids: Iterable[int], seed: int) -> List[torch.Generator]:
    """A torch generator for each sample id, seeded from (seed, id).

    numpy's SeedSequence hashes the pair, so the streams of (seed, id) and (seed', id') are
    unrelated for every other pair (a formula such as seed * N + id would collide).
    """
    generators = []
    for sample_id in ids:
        state = np.random.SeedSequence([int(seed), int(sample_id)]).generate_state(1, np.uint64)[0]
        generators.append(torch.Generator().manual_seed(int(state)))
    return generators


def posterior_latents(mean: Tensor, logvar: Tensor, ids: Iterable[int], seed: int,
                      samples: Optional[int] = None) -> Tensor:
    """z ~ q(z|x) = N(mean, exp(logvar)) for each row, drawn from the stream of ids[row].

    One draw per row (rows x dim), or with ``samples`` = K the first K draws of each row's
    stream (K x rows x dim); the single draw is the first of the K. Drawn on the CPU, so the
    codes are the same whatever the device (svae-eval's figures on a GPU match the CPU's).
    """
    draws = 1 if samples is None else samples
    latents = _stream_draws(mean.unsqueeze(0).expand(draws, -1, -1), logvar.unsqueeze(0).expand(draws, -1, -1),
                            ids, seed)
    return latents[0] if samples is None else latents


def mixture_latents(first_mean: Tensor, first_logvar: Tensor, second_mean: Tensor, second_logvar: Tensor,
                    ids: Iterable[int], seed: int, samples: int, second_draws: int) -> Tensor:
    """K = ``samples`` draws a row (K x rows x dim) from the row's stream: the first K - n from
    N(first_mean, exp(first_logvar)), the last n = ``second_draws`` from the second Gaussian.

    The k-th draw uses the k-th eps of the stream whichever Gaussian it comes from, so with
    n = 0 these are :func:`posterior_latents`' draws of the first Gaussian.
    """
    if not 0 <= second_draws <= samples:
        raise ValueError(f"second_draws must be in [0, {samples}], got {second_draws}")
    from_first = (torch.arange(samples, device=first_mean.device) < samples - second_draws).view(-1, 1, 1)
    mean = torch.where(from_first, first_mean.unsqueeze(0), second_mean.unsqueeze(0))
    logvar = torch.where(from_first, first_logvar.unsqueeze(0), second_logvar.unsqueeze(0))
    return _stream_draws(mean, logvar, ids, seed)


def _stream_draws(mean: Tensor, logvar: Tensor, ids: Iterable[int], seed: int) -> Tensor:
    """z[k, row] = mean[k, row] + std[k, row] * eps_k, eps_k the k-th of ids[row]'s stream (K x rows x dim)."""
    mean_cpu, logvar_cpu = mean.detach().float().cpu(), logvar.detach().float().cpu()
    rows = [reparameterize(mean_cpu[:, row], logvar_cpu[:, row], generator=generator)
            for row, generator in enumerate(sample_generators(ids, seed))]
    return torch.stack(rows, dim=1).to(mean.device)


def prior_latents(ids: Iterable[int], latent_dim: int, seed: int, device=None) -> Tensor:
    """One z ~ p(z) = N(0, I) per id: the posterior draw with mean 0 and log-variance 0."""
    ids = list(ids)
    zeros = torch.zeros(len(ids), latent_dim)
    latents = posterior_latents(zeros, zeros, ids, seed)
    return latents if device is None else latents.to(device)
