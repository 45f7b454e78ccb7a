"""The KL term, sampling and densities of q(z|x), checked against Monte Carlo and closed forms."""

import math

import torch

from fairseq_svae.gaussian import (
    LOGVAR_MAX,
    LOGVAR_MIN,
    clamp_logvar,
    gaussian_log_density,
    kl_to_standard_normal,
    reparameterize,
    standard_normal_log_density,
)


def test_analytic_kl_matches_monte_carlo_estimate():
    generator = torch.Generator().manual_seed(0)
    mean = torch.tensor([[0.5, -1.0, 2.0, 0.0]], dtype=torch.float64)
    logvar = torch.tensor([[-1.0, 0.5, -2.0, 0.0]], dtype=torch.float64)
    analytic = kl_to_standard_normal(mean, logvar).sum().item()

    samples = 400_000
    std = torch.exp(0.5 * logvar)
    z = mean + std * torch.randn(samples, 4, generator=generator, dtype=torch.float64)
    log_q = gaussian_log_density(z, mean.expand_as(z), logvar.expand_as(z))
    log_p = standard_normal_log_density(z)
    monte_carlo = (log_q - log_p).mean().item()

    # sum of 0.5 * (mean^2 + var - 1 - logvar) = 3.45097 nats; the MC standard error is ~0.004.
    assert abs(analytic - 3.45097) < 1e-4
    assert abs(monte_carlo - analytic) < 0.02


def test_kl_is_zero_exactly_at_the_prior_and_positive_elsewhere():
    zeros = torch.zeros(3, 5)
    assert torch.equal(kl_to_standard_normal(zeros, zeros), torch.zeros(3, 5))
    assert (kl_to_standard_normal(torch.full((3, 5), 0.1), zeros) > 0).all()
    assert (kl_to_standard_normal(zeros, torch.full((3, 5), -0.1)) > 0).all()


def test_kl_is_computed_in_fp32_for_half_inputs():
    mean = torch.full((2, 3), 200.0, dtype=torch.float16)  # mean^2 = 40000 per dim
    logvar = torch.zeros(2, 3, dtype=torch.float16)
    kl = kl_to_standard_normal(mean, logvar)
    assert kl.dtype == torch.float32
    # Summed in half precision this would overflow (6 * 20000 > 65504).
    assert kl.sum().item() == 120000.0


def test_clamped_logvar_cannot_overflow_half_precision_exp():
    wild = torch.tensor([-1e4, -30.0, 0.0, 30.0, 1e4])
    clamped = clamp_logvar(wild)
    assert clamped.min().item() == LOGVAR_MIN and clamped.max().item() == LOGVAR_MAX
    assert torch.isfinite(clamped.half().exp()).all()


def test_reparameterized_samples_have_the_posterior_moments_and_carry_gradients():
    torch.manual_seed(0)
    mean = torch.tensor([1.0, -2.0], requires_grad=True)
    logvar = torch.tensor([0.0, math.log(0.25)], requires_grad=True)
    z = reparameterize(mean.expand(200_000, 2), logvar.expand(200_000, 2))
    assert torch.allclose(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.01)
    assert torch.allclose(z.std(0), torch.tensor([1.0, 0.5]), atol=0.01)
    z.sum().backward()
    assert mean.grad is not None and logvar.grad is not None


def test_log_densities_match_torch_distributions():
    z = torch.randn(7, 4)
    mean, logvar = torch.randn(7, 4), torch.randn(7, 4)
    expected = torch.distributions.Normal(mean, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    assert torch.allclose(gaussian_log_density(z, mean, logvar), expected, atol=1e-5)
    expected_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    assert torch.allclose(standard_normal_log_density(z), expected_prior, atol=1e-5)
