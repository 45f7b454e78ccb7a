"""The fitted prior: a Gaussian mixture over a trained model's codes (svae-fit-prior), sampled by
fairseq-generate --fitted-prior, the hub and svae-report."""

import json

import numpy as np
import pytest
import torch

from fairseq_svae.errors import IncompatibleCheckpointError, MissingCheckpointError, OptionError
from fairseq_svae.fitted_prior import (
    FittedPrior,
    fit_gaussian_mixture,
    fitted_prior_path,
    load_fitted_prior,
    standard_normal_log_density,
)

from conftest import run_command
from generation_helpers import generate


def clustered_codes(seed=0, per_cluster=400):
    """Codes around three centres far from the origin, where N(0, I) puts almost no mass."""
    rng = np.random.default_rng(seed)
    centres = np.array([[6.0, 0.0, 0.0], [0.0, -6.0, 0.0], [0.0, 0.0, 6.0]])
    return np.concatenate([centre + 0.3 * rng.standard_normal((per_cluster, 3)) for centre in centres]), centres


def test_mixture_samples_lie_where_the_codes_are():
    codes, centres = clustered_codes()
    prior = fit_gaussian_mixture(codes, components=3, seed=1)
    samples = prior.latents(range(600), seed=5)
    distance_to_nearest_centre = torch.cdist(samples, torch.from_numpy(centres).float()).min(1).values
    assert (distance_to_nearest_centre < 2.0).all()  # 0.3 spread: 2.0 is over 6 standard deviations
    # Every cluster is sampled, about in its share (a third each).
    nearest = torch.cdist(samples, torch.from_numpy(centres).float()).argmin(1)
    shares = torch.bincount(nearest, minlength=3).float() / len(samples)
    assert ((shares > 0.2) & (shares < 0.47)).all(), shares
    # Codes far from the prior: the mixture gives them a far higher density than N(0, I).
    some = torch.from_numpy(codes[:50])
    assert float(prior.log_density(some).mean()) > float(standard_normal_log_density(some).mean()) + 15


def test_draws_follow_the_sample_id_not_the_batch():
    prior = fit_gaussian_mixture(clustered_codes()[0], components=3, seed=1)
    assert torch.equal(prior.latents(range(10), seed=3), prior.latents(range(25), seed=3)[:10])
    assert torch.equal(prior.latents([7], seed=3)[0], prior.latents(range(10), seed=3)[7])
    assert not torch.equal(prior.latents(range(10), seed=3), prior.latents(range(10), seed=4))


def test_saved_prior_loads_with_weights_only_and_is_checked(tmp_path):
    prior = fit_gaussian_mixture(clustered_codes()[0], components=3, seed=1)
    path = str(tmp_path / "model.prior.pt")
    prior.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.prior.pt"]  # no temporary file left
    torch.load(path, weights_only=True)  # nothing but tensors and plain values
    loaded = load_fitted_prior(path, latent_dim=3)
    assert torch.equal(loaded.latents(range(5), seed=2), prior.latents(range(5), seed=2))
    with pytest.raises(IncompatibleCheckpointError, match="3-dimensional codes.*16 dimensions"):
        load_fitted_prior(path, latent_dim=16)
    with pytest.raises(MissingCheckpointError, match="svae-fit-prior"):
        FittedPrior.load(str(tmp_path / "missing.prior.pt"))
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(IncompatibleCheckpointError, match="not a fitted prior"):
        FittedPrior.load(str(tmp_path / "other.pt"))


def test_too_few_codes_for_the_components_is_refused():
    with pytest.raises(OptionError, match="--components"):
        fit_gaussian_mixture(np.zeros((10, 3)), components=8)


def test_default_file_sits_beside_the_checkpoint():
    assert fitted_prior_path("runs/x/checkpoint_best.pt") == "runs/x/checkpoint_best.prior.pt"


@pytest.fixture(scope="module")
def fitted(short_sentences_bin, latent_model, tmp_path_factory):
    """svae-fit-prior on the test model whose codes tell sentences apart; returns the prior's path."""
    output = tmp_path_factory.mktemp("fitted-prior") / "latent.prior.pt"
    result = run_command("svae-fit-prior", short_sentences_bin, "--path", latent_model, "--cpu",
                         "--components", "4", "--output", output)
    assert "under the fitted prior" in result.stdout
    return output


def test_fit_prior_command_writes_a_prior_of_the_models_size(fitted, latent_hub):
    prior = FittedPrior.load(str(fitted))
    assert prior.components == 4 and prior.latent_dim == latent_hub.latent_dim
    assert prior.info["codes"] == 300  # every training sentence (fewer than --fit-sentences)
    # The fitted prior describes the codes better than N(0, I) does.
    assert prior.info["held_out_log_density_fitted"] > prior.info["held_out_log_density_standard_normal"]


def test_fairseq_generate_and_the_hub_draw_the_same_codes_from_the_fitted_prior(
        fitted, short_sentences_bin, latent_model, latent_hub):
    printed = generate(short_sentences_bin, latent_model, "--sample-from-prior", "--prior-samples", "12",
                       "--beam", "1", "--seed", "3", "--fitted-prior", fitted)
    standard = generate(short_sentences_bin, latent_model, "--sample-from-prior", "--prior-samples", "12",
                        "--beam", "1", "--seed", "3")
    assert printed.in_order() != standard.in_order()
    # The hub loaded with the same prior: the same codes, decoded the same way.
    from fairseq_svae import SentenceVAEModel

    hub = SentenceVAEModel.from_pretrained(latent_model.parent, checkpoint_file=latent_model.name,
                                           data_name_or_path=str(short_sentences_bin), fitted_prior=str(fitted))
    assert hub.sample(12, seed=3, beam=1) == printed.in_order()
    assert hub.sample(12, seed=3, beam=1, prior="standard") == standard.in_order()
    with pytest.raises(OptionError, match="fitted_prior"):
        latent_hub.sample(2, seed=1, prior="fitted")  # loaded without one


def test_report_shows_both_priors_side_by_side(fitted, short_sentences_bin, latent_model, tmp_path):
    report_json = tmp_path / "report.json"
    result = run_command("svae-report", short_sentences_bin, "--path", latent_model, "--fitted-prior", fitted,
                         "--gen-subset", "valid", "--cpu", "--prior-samples", "20", "--reconstructions", "5",
                         "--homotopies", "0", "--imputations", "0", "--json", report_json)
    assert "prior samples, N(0, I)" in result.stdout and "prior samples, fitted prior" in result.stdout
    report = json.loads(report_json.read_text())
    assert report["fitted_prior_samples"]["sentences"] == report["prior_samples"]["sentences"] == 20
    assert len(report["outputs"]["fitted_prior_samples"]) == 20
