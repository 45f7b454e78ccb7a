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
    mean_cpu, logvar_cpu = mean.detach().float().cpu(), logvar.detach().float().cpu()
    draws = 1 if samples is None else samples
    rows = [
        reparameterize(mean_cpu[row].expand(draws, -1), logvar_cpu[row].expand(draws, -1), generator=generator)
        for row, generator in enumerate(sample_generators(ids, seed))
    ]
    latents = torch.stack(rows, dim=1)
    return (latents[0] if samples is None else latents).to(mean.device)


def prior_latents(ids: Iterable[int], latent_dim: int, seed: int, device=None) -> Tensor:
    """One z ~ p(z) = N(0, I) per id: the posterior draw with mean 0 and log-variance 0."""
    ids = list(ids)
    zeros = torch.zeros(len(ids), latent_dim)
    latents = posterior_latents(zeros, zeros, ids, seed)
    return latents if device is None else latents.to(device)
