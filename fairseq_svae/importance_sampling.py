"""Likelihood estimates and latent-usage statistics of a VAE, from posterior samples (pure torch).

- :func:`iw_nll`: the importance-weighted estimate of -log p(x) (Burda et al. 2016) with K
  samples from q(z|x); it is an upper bound on the true NLL that tightens as K grows, and with
  K = 1 it is the one-sample negative ELBO.
- :func:`prior_proposal_draws` and :func:`mixture_log_density` (:func:`mixture_of_log_densities`
  from the two components' log densities): a defensive proposal
  (Hesterberg 1995) that draws a share of the K samples from the prior instead of q (see there).
- :func:`mutual_information`: I(x; z) under q (He et al. 2019).
- :func:`active_units`: latent dimensions whose posterior mean varies over the data (Burda et al.
  2016, as used by He et al. 2019); :func:`posterior_mean_variance_from_sums` gives the same
  variance from sums accumulated over batches (the ``annealed_elbo`` criterion's validation log).

Every formula on q(z|x) and p(z) comes from :mod:`fairseq_svae.gaussian`. Reductions over
samples run in fp64: a log-sum-exp of K log-weights of magnitude ~100-1000 nats whose differences
matter to a hundredth of a nat leaves no margin in fp32.
"""

import math
from typing import Tuple

import torch

from fairseq_svae.errors import OptionError
from fairseq_svae.gaussian import gaussian_log_density, standard_normal_log_density


def log_importance_weights(log_likelihood: torch.Tensor, latent: torch.Tensor,
                           posterior_mean: torch.Tensor, posterior_logvar: torch.Tensor) -> torch.Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), in fp64.

    Shapes: ``log_likelihood`` (K, B), ``latent`` (K, B, D), posterior mean and log-variance
    (B, D). Returns (K, B).
    """
    if latent.dim() != 3 or latent.shape[:2] != log_likelihood.shape:
        raise ValueError(
            f"latent must be (K, B, D) matching log_likelihood (K, B), got "
            f"{tuple(latent.shape)} and {tuple(log_likelihood.shape)}"
        )
    log_prior = standard_normal_log_density(latent)
    log_posterior = gaussian_log_density(latent, posterior_mean.unsqueeze(0), posterior_logvar.unsqueeze(0))
    return log_likelihood.double() + log_prior.double() - log_posterior.double()


# The share of the K importance samples that a conditional VAE's estimate draws from its prior
# p(z|x) (see prior_proposal_draws). On Multi30k's validation set (the recipe's CVAE, K = 100)
# shares of 0.1, 0.3 and 0.5 give 32.91, 32.90 and 32.89 nats against 33.23 from q alone: the
# middle one, since a larger share wastes more draws on a model whose prior is far from q.
DEFAULT_PRIOR_SHARE = 0.3


def check_prior_share(prior_share: float, option: str = "--prior-share") -> None:
    """The one check of the prior's share of the importance samples: ``option`` names it as the
    user gave it (``python -m fairseq_svae.conditional_likelihood --prior-share``,
    ``svae-translation-eval --iw-prior-share``)."""
    if not 0.0 <= prior_share < 1.0:
        raise OptionError(f"{option} is the share of the importance samples drawn from p(z|x) "
                          f"instead of q(z|x, y): it must be in [0, 1), got {prior_share} "
                          f"(0 draws them all from q; the default is {DEFAULT_PRIOR_SHARE})")


def prior_proposal_draws(samples: int, prior_share: float) -> int:
    """How many of K importance samples a defensive proposal draws from the prior: round(share x K).

    Why a defensive proposal: q(z|x) is fitted by the ELBO, which makes it narrower than the true
    posterior, so a z in the posterior's tails, where q is tiny, gets a huge weight p(x, z) / q(z)
    that K samples rarely see, and the estimate of -log p(x) stays well above the truth until K
    is very large (a Multi30k CVAE: 30.54 nats at K = 100, 30.33 at K = 1,000). Drawing a share
    of the K from the prior, which is wider, and weighting every draw by the mixture's density
    (the balance heuristic of multiple importance sampling, Veach & Guibas 1995) bounds each
    weight by p(x|z) / share. With exactly round(share x K) draws from the prior and the rest from
    q, the mean of the weights is still an unbiased estimate of p(x), so -log of it is still an
    upper bound on the NLL in expectation (Jensen), converging to it as K grows.
    """
    check_prior_share(prior_share)
    return min(int(math.floor(prior_share * samples + 0.5)), samples - 1)


def mixture_log_density(latent: torch.Tensor, posterior_mean: torch.Tensor, posterior_logvar: torch.Tensor,
                        prior_mean: torch.Tensor, prior_logvar: torch.Tensor, prior_draws: int) -> torch.Tensor:
    """log r(z_k) of the proposal r = (1 - n/K) q + (n/K) p that draws K - n of the K samples
    from q = N(posterior_mean, exp(posterior_logvar)) and n = ``prior_draws`` from the prior
    p = N(prior_mean, exp(prior_logvar)) (see :func:`prior_proposal_draws`), in fp64.

    Shapes: ``latent`` (K, B, D); the means and log-variances (B, D). Returns (K, B); with n = 0
    it is log q(z_k).
    """
    log_q = gaussian_log_density(latent, posterior_mean.unsqueeze(0), posterior_logvar.unsqueeze(0)).double()
    if prior_draws == 0:
        return log_q
    log_p = gaussian_log_density(latent, prior_mean.unsqueeze(0), prior_logvar.unsqueeze(0)).double()
    return mixture_of_log_densities(log_q, log_p, prior_draws)


def mixture_of_log_densities(log_q: torch.Tensor, log_p: torch.Tensor, prior_draws: int) -> torch.Tensor:
    """log r(z_k) = log((1 - n/K) q(z_k) + (n/K) p(z_k)) from the components' log densities,
    (K, B) each (K = their first dimension, n = ``prior_draws``), in fp64: for callers that
    already hold log q and log p (see :func:`mixture_log_density`)."""
    log_q = log_q.double()
    if prior_draws == 0:
        return log_q
    samples = log_q.size(0)
    return torch.logaddexp(log_q + math.log((samples - prior_draws) / samples),
                           log_p.double() + math.log(prior_draws / samples))


def iw_nll(log_weights: torch.Tensor) -> torch.Tensor:
    """-log (1/K) sum_k w_k per sentence: (K, B) -> (B,), in fp64, via log-sum-exp."""
    samples = log_weights.size(0)
    return -(torch.logsumexp(log_weights.double(), dim=0) - math.log(samples))


def sampled_neg_elbo(log_weights: torch.Tensor) -> torch.Tensor:
    """-(1/K) sum_k log w_k per sentence: the negative ELBO estimated from the same samples.

    By Jensen's inequality it is never below :func:`iw_nll` of the same log-weights.
    """
    return -log_weights.double().mean(dim=0)


def mutual_information(posterior_mean: torch.Tensor, posterior_logvar: torch.Tensor,
                       latent: torch.Tensor, chunk_elements: int = 1 << 22) -> float:
    """I(x; z) = E_x E_q(z|x)[log q(z|x)] - E_q(z)[log q(z)] (He et al. 2019), in nats.

    ``posterior_mean`` and ``posterior_logvar`` are (N, D) for N sentences and ``latent`` (N, D)
    holds one z_i ~ q(z|x_i) for each. The aggregate posterior q(z) is the mixture
    (1/N) sum_j q(z|x_j) over all N sentences (He et al. take the mixture over each mini-batch;
    the whole set gives a tighter estimate, which can reach at most log N).

    He et al. compute the first term analytically (minus the entropy of q(z|x)); here both terms
    are evaluated at the same samples z_i, so their Monte Carlo noise cancels: the estimate is
    exactly 0 for a posterior that ignores x and exactly log N for posteriors so far apart that
    no z_i has density under another sentence's posterior. In expectation the two forms agree.
    """
    sentences, latent_dim = posterior_mean.shape
    if latent.shape != posterior_mean.shape or posterior_logvar.shape != posterior_mean.shape:
        raise ValueError(
            f"posterior_mean, posterior_logvar and latent must all be (N, D), got "
            f"{tuple(posterior_mean.shape)}, {tuple(posterior_logvar.shape)}, {tuple(latent.shape)}"
        )
    if sentences == 0:
        raise ValueError("mutual_information needs at least one sentence")
    # log q(z_i | x_j) is an N x N matrix; build it a block of rows at a time so that the
    # N x N x D intermediate stays within chunk_elements.
    rows_per_chunk = max(1, chunk_elements // (sentences * latent_dim))
    mean_j, logvar_j = posterior_mean.unsqueeze(0), posterior_logvar.unsqueeze(0)
    total = 0.0
    for start in range(0, sentences, rows_per_chunk):
        z_i = latent[start:start + rows_per_chunk].unsqueeze(1)  # rows x 1 x D
        log_density = gaussian_log_density(z_i, mean_j, logvar_j).double()  # rows x N
        own = torch.diagonal(log_density, offset=start)  # log q(z_i | x_i)
        log_aggregate = torch.logsumexp(log_density, dim=1) - math.log(sentences)  # log q(z_i)
        total += float((own - log_aggregate).sum())
    return total / sentences


# A latent dimension is active when the variance of its posterior mean over the data exceeds
# this (Burda et al. 2016; He et al. 2019): svae-eval's default and the training criterion's.
ACTIVE_UNIT_THRESHOLD = 0.01


def posterior_mean_variance(posterior_mean: torch.Tensor) -> torch.Tensor:
    """Var over sentences of E_q[z_d | x] for each latent dimension (unbiased, fp64): (N, D) -> (D,)."""
    if posterior_mean.size(0) < 2:
        raise ValueError("the variance of the posterior means needs at least two sentences")
    return posterior_mean.double().var(dim=0, unbiased=True)


def posterior_mean_variance_from_sums(mean_sum, mean_square_sum, sentences) -> torch.Tensor:
    """:func:`posterior_mean_variance` from running sums over the N sentences, in fp64.

    ``mean_sum`` and ``mean_square_sum`` are sum_i mu_i and sum_i mu_i^2 per dimension (D,),
    sums that can be accumulated batch by batch and across workers (the training criterion's
    validation figures). (sum mu^2 - (sum mu)^2 / N) / (N - 1) is the same unbiased variance;
    in fp64 its cancellation costs ~1e-16 of E[mu^2], far below any threshold of interest.
    """
    if sentences < 2:
        raise ValueError("the variance of the posterior means needs at least two sentences")
    mean_sum = torch.as_tensor(mean_sum, dtype=torch.float64)
    mean_square_sum = torch.as_tensor(mean_square_sum, dtype=torch.float64)
    return ((mean_square_sum - mean_sum.pow(2) / sentences) / (sentences - 1)).clamp(min=0.0)


def count_active_units(variance: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Number of dimensions whose posterior-mean variance exceeds ``threshold``."""
    return int((variance > threshold).sum())


def active_units(posterior_mean: torch.Tensor,
                 threshold: float = ACTIVE_UNIT_THRESHOLD) -> Tuple[int, torch.Tensor]:
    """(number of dimensions whose posterior-mean variance exceeds ``threshold``, those variances)."""
    variance = posterior_mean_variance(posterior_mean)
    return count_active_units(variance, threshold), variance
