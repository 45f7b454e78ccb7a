"""Latent-space math without fairseq: seeded draws, interpolation paths, attribute vectors."""

import math

import pytest
import torch

from fairseq_svae.generation.latent_draws import posterior_latents, prior_latents
from fairseq_svae.generation.latent_space import attribute_vector, interpolation_path, lerp, shift, slerp


def test_prior_draws_depend_on_seed_and_id_only():
    batch = prior_latents(range(10), 6, seed=3)
    assert batch.shape == (10, 6)
    # Another order, another subset, another batch: each id keeps its z.
    assert torch.equal(prior_latents([7, 2], 6, seed=3), batch[[7, 2]])
    assert torch.equal(prior_latents(range(3), 6, seed=3), batch[:3])
    other_seed = prior_latents(range(10), 6, seed=4)
    assert not torch.isclose(other_seed, batch).any()


def test_prior_draws_are_standard_normal_and_independent():
    draws = prior_latents(range(4000), 8, seed=11)  # 32,000 values
    assert abs(draws.mean().item()) < 0.03  # standard error 0.0056
    assert draws.std().item() == pytest.approx(1.0, abs=0.02)
    correlation = torch.corrcoef(draws.T)
    off_diagonal = correlation[~torch.eye(8, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 0.06  # standard error 0.016
    # Neighbouring ids are unrelated streams (a seed + id formula would correlate them).
    assert torch.corrcoef(torch.stack([draws[:-1].flatten(), draws[1:].flatten()]))[0, 1].abs() < 0.03


def test_posterior_draws_follow_mean_and_variance_per_row():
    mean = torch.tensor([[2.0, -1.0, 0.0]]).expand(3000, -1)
    logvar = torch.log(torch.tensor([[0.25, 1.0, 4.0]])).expand(3000, -1)
    draws = posterior_latents(mean, logvar, range(3000), seed=5)
    assert draws.mean(0).tolist() == pytest.approx([2.0, -1.0, 0.0], abs=0.1)
    assert draws.std(0).tolist() == pytest.approx([0.5, 1.0, 2.0], rel=0.05)
    # The noise of id i is the prior draw of id i, scaled and shifted.
    eps = prior_latents(range(5), 3, seed=5)
    assert torch.allclose(draws[:5], mean[:5] + torch.exp(0.5 * logvar[:5]) * eps)


def test_linear_path_is_evenly_spaced_with_exact_endpoints():
    start, end = torch.randn(5), torch.randn(5)
    path = interpolation_path(start, end, steps=5)
    assert torch.equal(path[0], start) and torch.equal(path[-1], end)
    assert torch.allclose(path[2], (start + end) / 2, atol=1e-6)
    steps = path[1:] - path[:-1]
    assert torch.allclose(steps, steps[0].expand_as(steps), atol=1e-6)


def test_spherical_path_keeps_the_norm_and_turns_at_a_constant_rate():
    torch.manual_seed(0)
    start = torch.randn(16)
    end = torch.randn(16)
    end = end / end.norm() * start.norm()
    path = interpolation_path(start, end, steps=7, spherical=True)
    assert torch.equal(path[0], start) and torch.equal(path[-1], end)
    assert torch.allclose(path.norm(dim=1), start.norm().expand(7), rtol=1e-5)
    cosines = torch.nn.functional.cosine_similarity(path[:-1], path[1:], dim=1)
    angles = torch.arccos(cosines.clamp(-1, 1))
    total = math.acos(float(torch.dot(start, end) / (start.norm() * end.norm())))
    assert torch.allclose(angles, torch.full((6,), total / 6), atol=1e-4)
    # Unlike the straight line, the arc does not pass near the origin.
    assert path.norm(dim=1).min() > lerp(start, end, torch.linspace(0, 1, 7)).norm(dim=1).min()


def test_spherical_path_between_parallel_codes_is_the_straight_line():
    start = torch.tensor([1.0, 2.0, 2.0])
    t = torch.linspace(0, 1, 4)
    assert torch.allclose(slerp(start, 3 * start, t), lerp(start, 3 * start, t))
    assert torch.allclose(slerp(start, -start, t), lerp(start, -start, t))


def test_paths_need_two_steps_and_matching_codes():
    with pytest.raises(ValueError, match="at least 2 steps"):
        interpolation_path(torch.zeros(3), torch.ones(3), steps=1)
    with pytest.raises(ValueError, match="one shape"):
        interpolation_path(torch.zeros(3), torch.ones(4), steps=3)


def test_attribute_vector_and_shift():
    with_attribute = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    without = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    vector = attribute_vector(with_attribute, without)
    assert vector.tolist() == [2.0, 0.0]
    codes = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    assert shift(codes, vector, 0.5).tolist() == [[1.0, 1.0], [2.0, 1.0]]
    assert shift(codes, vector, -1.0).tolist() == [[-2.0, 1.0], [-1.0, 1.0]]
    with pytest.raises(ValueError, match="at least one sentence on each side"):
        attribute_vector(with_attribute, without[:0])
