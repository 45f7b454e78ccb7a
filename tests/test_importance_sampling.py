"""The IW-NLL, MI and active-unit estimators on models whose answers are known in closed form."""

import math

import pytest
import torch
from torch.distributions import Normal

from fairseq_svae.gaussian import gaussian_log_density, reparameterize, standard_normal_log_density
from fairseq_svae.importance_sampling import (
    active_units,
    iw_nll,
    log_importance_weights,
    mixture_log_density,
    mutual_information,
    prior_proposal_draws,
    sampled_neg_elbo,
)

# A linear-Gaussian "VAE": z ~ N(0, I), x | z ~ N(z, NOISE^2 I). Then p(x) = N(0, (1 + NOISE^2) I)
# and the true posterior is N(x / (1 + NOISE^2), NOISE^2 / (1 + NOISE^2) I).
NOISE = 0.5
DIM = 4


def exact_nll(x):
    return -Normal(0.0, math.sqrt(1 + NOISE**2)).log_prob(x).sum(-1).double()


def toy_log_weights(x, posterior_mean, posterior_logvar, samples, seed=0):
    """(log w (K, B), z (K, B, D)) for the toy model, with z ~ q drawn from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    shape = (samples,) + tuple(posterior_mean.shape)
    z = reparameterize(posterior_mean.expand(shape), posterior_logvar.expand(shape), generator=generator)
    log_likelihood = gaussian_log_density(x.unsqueeze(0), z, torch.full_like(z, math.log(NOISE**2)))
    return log_importance_weights(log_likelihood, z, posterior_mean, posterior_logvar), z


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(2000, DIM, generator=generator)
    return z + NOISE * torch.randn(2000, DIM, generator=generator)


def test_with_the_true_posterior_every_weight_is_p_of_x(data):
    shrink = 1 / (1 + NOISE**2)
    mean, logvar = data * shrink, torch.full_like(data, math.log(NOISE**2 * shrink))
    log_weights, _ = toy_log_weights(data, mean, logvar, samples=7)
    assert torch.allclose(iw_nll(log_weights), exact_nll(data), atol=1e-4)
    assert torch.allclose(sampled_neg_elbo(log_weights), exact_nll(data), atol=1e-4)


def test_iw_nll_bounds_and_tightens_as_samples_grow(data):
    # A poor posterior: shrunk too much and too wide, so single samples are far from p(x).
    mean, logvar = data * 0.3, torch.zeros_like(data)
    log_weights, _ = toy_log_weights(data, mean, logvar, samples=1000)
    truth = float(exact_nll(data).mean())
    averages = []
    for samples in (1, 10, 100, 1000):
        subset = log_weights[:samples]  # the first k samples: nested estimates
        estimate = iw_nll(subset)
        # Jensen, sentence by sentence: log-mean-exp >= mean of the logs.
        assert bool((estimate <= sampled_neg_elbo(subset) + 1e-9).all())
        averages.append(float(estimate.mean()))
    assert averages[0] > averages[1] + 1.0 > averages[2] + 1.0 > averages[3] + 0.1
    # An upper bound on the true NLL (in expectation) that K = 1000 nearly reaches.
    assert averages[3] > truth
    assert averages[3] - truth < 0.05 < 0.5 < averages[0] - truth


def test_one_sample_is_the_one_sample_elbo(data):
    mean, logvar = data * 0.7, torch.full_like(data, -1.0)
    log_weights, z = toy_log_weights(data, mean, logvar, samples=1)
    # log p(x|z) + log p(z) - log q(z|x) written out with torch.distributions.
    z = z[0]
    elbo = (
        Normal(z, NOISE).log_prob(data).sum(-1)
        + Normal(0.0, 1.0).log_prob(z).sum(-1)
        - Normal(mean, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    ).double()
    assert torch.allclose(iw_nll(log_weights), -elbo, atol=1e-4)
    assert torch.equal(iw_nll(log_weights), sampled_neg_elbo(log_weights))


def defensive_log_weights(x, posterior_mean, posterior_logvar, samples, prior_draws, seed=0):
    """log w (K, B) for the toy model with the last ``prior_draws`` of the K drawn from p(z) and
    the others from q, every weight over the mixture's density."""
    generator = torch.Generator().manual_seed(seed)
    shape = (samples,) + tuple(posterior_mean.shape)
    eps = torch.randn(shape, generator=generator)
    from_q = (torch.arange(samples) < samples - prior_draws).view(-1, 1, 1)
    z = torch.where(from_q, posterior_mean + torch.exp(0.5 * posterior_logvar) * eps, eps)
    log_joint = (gaussian_log_density(x.unsqueeze(0), z, torch.full_like(z, math.log(NOISE**2)))
                 + standard_normal_log_density(z)).double()
    zeros = torch.zeros_like(posterior_mean)
    return log_joint - mixture_log_density(z, posterior_mean, posterior_logvar, zeros, zeros, prior_draws)


def test_prior_proposal_draws_rounds_the_share_and_keeps_one_draw_from_q():
    assert prior_proposal_draws(100, 0.0) == 0
    assert prior_proposal_draws(100, 0.3) == 30
    assert prior_proposal_draws(10, 0.25) == 3  # 2.5 rounds up
    assert prior_proposal_draws(1, 0.9) == 0  # the ELBO needs a draw from q
    for share in (1.0, -0.1):
        with pytest.raises(ValueError, match="must be in \\[0, 1\\)"):
            prior_proposal_draws(10, share)


def test_mixture_log_density_is_the_mixture_of_the_two_gaussians():
    generator = torch.Generator().manual_seed(3)
    q_mean, q_logvar = torch.randn(5, DIM, generator=generator), torch.randn(5, DIM, generator=generator)
    p_mean, p_logvar = torch.randn(5, DIM, generator=generator), torch.randn(5, DIM, generator=generator)
    z = torch.randn(8, 5, DIM, generator=generator)
    q = Normal(q_mean, torch.exp(0.5 * q_logvar)).log_prob(z).sum(-1).double()
    p = Normal(p_mean, torch.exp(0.5 * p_logvar)).log_prob(z).sum(-1).double()
    assert torch.allclose(mixture_log_density(z, q_mean, q_logvar, p_mean, p_logvar, 0), q, atol=1e-4)
    expected = torch.log(0.75 * q.exp() + 0.25 * p.exp())  # 2 of the 8 draws from p
    assert torch.allclose(mixture_log_density(z, q_mean, q_logvar, p_mean, p_logvar, 2), expected, atol=1e-4)


def test_a_defensive_proposal_stays_unbiased_and_is_tighter_when_q_is_too_narrow(data):
    # q centred on the true posterior but a third of its width: the ELBO's usual error.
    shrink = 1 / (1 + NOISE**2)
    mean, logvar = data * shrink, torch.full_like(data, math.log(NOISE**2 * shrink / 9))
    truth = exact_nll(data)
    plain = iw_nll(defensive_log_weights(data, mean, logvar, samples=20, prior_draws=0))
    defensive_weights = defensive_log_weights(data, mean, logvar, samples=20, prior_draws=6)
    defensive = iw_nll(defensive_weights)
    # Unbiased: the mean of the weights estimates p(x), so p_hat / p(x) averages 1 over 2,000
    # sentences (its spread is bounded: every weight is at most p(x|z) p(z) / (0.3 p(z))).
    ratio = torch.exp(truth - defensive)
    assert abs(float(ratio.mean()) - 1.0) < 4 * float(ratio.std()) / math.sqrt(len(ratio))
    # Still an upper bound on the NLL on average, and far closer to it than q's draws alone.
    assert float(defensive.mean()) > float(truth.mean()) - 0.01
    assert float(plain.mean() - truth.mean()) > 1.5 * float(defensive.mean() - truth.mean()) + 0.2


def test_log_mean_exp_is_stable_for_large_log_weights():
    log_weights = torch.tensor([[-10000.0], [-10000.0 + math.log(3.0)]], dtype=torch.float64)
    # -log((e^-10000 + 3 e^-10000) / 2) = 10000 - log 2, where exp() alone would underflow to 0.
    assert iw_nll(log_weights).item() == pytest.approx(10000.0 - math.log(2.0), abs=1e-9)


def test_log_importance_weights_checks_shapes():
    with pytest.raises(ValueError, match="latent must be"):
        log_importance_weights(torch.zeros(3, 2), torch.zeros(2, 3, 4), torch.zeros(2, 4), torch.zeros(2, 4))


def test_mutual_information_is_zero_for_a_posterior_that_ignores_x():
    generator = torch.Generator().manual_seed(2)
    mean = torch.randn(1, 8, generator=generator).expand(500, 8)
    logvar = torch.randn(1, 8, generator=generator).expand(500, 8)
    latent = reparameterize(mean, logvar, generator=generator)
    assert mutual_information(mean, logvar, latent) == pytest.approx(0.0, abs=1e-9)


def test_mutual_information_is_log_n_for_posteriors_that_never_overlap():
    mean = 100.0 * torch.arange(300, dtype=torch.float32).unsqueeze(1).expand(300, 2)
    logvar = torch.full((300, 2), -4.0)
    latent = reparameterize(mean, logvar, generator=torch.Generator().manual_seed(3))
    assert mutual_information(mean, logvar, latent) == pytest.approx(math.log(300), abs=1e-6)


def test_mutual_information_of_a_linear_gaussian_encoder():
    # x ~ N(0, I), q(z|x) = N(a x, s^2 I): I(x; z) = D/2 log(1 + a^2 / s^2).
    generator = torch.Generator().manual_seed(4)
    sentences, dim, slope, std = 3000, 2, 1.0, 0.5
    x = torch.randn(sentences, dim, generator=generator)
    mean, logvar = slope * x, torch.full((sentences, dim), math.log(std**2))
    latent = reparameterize(mean, logvar, generator=generator)
    expected = dim / 2 * math.log(1 + slope**2 / std**2)
    estimate = mutual_information(mean, logvar, latent)
    assert estimate == pytest.approx(expected, abs=0.05)
    # The N x N density matrix built a few rows at a time gives the same number.
    assert mutual_information(mean, logvar, latent, chunk_elements=1000) == pytest.approx(estimate, abs=1e-9)


def test_active_units_counts_dimensions_whose_posterior_mean_varies():
    generator = torch.Generator().manual_seed(5)
    columns = torch.randn(1000, 5, generator=generator, dtype=torch.float64)
    columns = (columns - columns.mean(0)) / columns.std(0)  # exactly unit (unbiased) variance
    scales = torch.tensor([1.0, 0.2, 0.08, 0.05, 0.0], dtype=torch.float64)
    count, variance = active_units((columns * scales).float(), threshold=0.01)
    assert count == 2  # variances 1, 0.04 | 0.0064, 0.0025, 0
    assert torch.allclose(variance, scales**2, atol=1e-6)
    assert active_units((columns * scales).float(), threshold=0.005)[0] == 3


def test_active_units_needs_two_sentences():
    with pytest.raises(ValueError, match="at least two"):
        active_units(torch.zeros(1, 4))
