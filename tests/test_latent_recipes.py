"""Recipes against posterior collapse: BN-VAE's normalized posterior mean and the two-stage
training of Li et al. (an autoencoder's encoder, a fresh decoder)."""

import pytest
import torch

from fairseq_svae.checkpoint_io import load_checkpoint_state
from fairseq_svae.errors import IncompatibleCheckpointError, MissingCheckpointError, OptionError
from fairseq_svae.gaussian import kl_to_standard_normal
from fairseq_svae.models.sentence_vae_encoder import PosteriorMeanNorm

from conftest import PLUGIN_DIR, json_log_records, run_command, train_args
from model_helpers import build_small_model, encode_sentences, small_dictionary

SENTENCES = ["the cat sat on a mat", "a dog ran away", "the big red house", "the dog sat",
             "a cat ran from the house", "red mat"]


def posterior(model, sentences=SENTENCES):
    src, lengths, _, _ = encode_sentences(small_dictionary(), sentences)
    return model.encoder.posterior(src, lengths)


@pytest.mark.parametrize("gamma", [0.5, 1.0])
def test_bn_vae_fixes_the_scale_of_the_posterior_means_and_so_a_kl_floor(gamma):
    model = build_small_model(posterior_mean_bn_gamma=gamma).train()
    with torch.no_grad():
        model.encoder.mean_norm.shift.fill_(0.3)
        model.encoder.to_posterior.weight.mul_(100)
    mean, logvar = posterior(model)
    # Over the batch each dimension has mean beta and (biased) standard deviation gamma ...
    torch.testing.assert_close(mean.mean(0), torch.full((6,), 0.3), atol=1e-5, rtol=0)
    torch.testing.assert_close(mean.var(0, unbiased=False), torch.full((6,), gamma**2), atol=1e-3, rtol=1e-3)
    # ... so the batch's KL of each dimension is at least (gamma^2 + beta^2) / 2.
    kl = kl_to_standard_normal(mean, logvar).mean(0)
    assert (kl >= 0.5 * (gamma**2 + 0.09) - 1e-3).all()


def test_bn_vae_encodes_a_sentence_the_same_way_in_any_batch_outside_training():
    model = build_small_model(posterior_mean_bn_gamma=1.0).train()
    for _ in range(3):
        posterior(model)  # running statistics move
    model.eval()
    alone, _ = posterior(model, SENTENCES[:1])
    together, _ = posterior(model, SENTENCES)
    torch.testing.assert_close(alone[0], together[0])
    # A training batch of one sentence has no batch statistics: the running ones are used.
    model.train()
    single, _ = posterior(model, SENTENCES[:1])
    assert torch.isfinite(single).all()


def test_bn_vae_keeps_its_floor_when_the_raw_means_barely_vary():
    # Raw means with a variance of 1e-8, far below batch norm's epsilon (1e-5): an encoder
    # pulled by the KL early in a fast annealing gets there if the code shrinks with them.
    norm = PosteriorMeanNorm(4, gamma=1.0).train()
    with torch.no_grad():
        norm.shift.fill_(0.3)
    generator = torch.Generator().manual_seed(0)
    raw = (0.5 + 1e-4 * torch.randn(32, 4, generator=generator, dtype=torch.float64)).requires_grad_()
    code = norm(raw)
    torch.testing.assert_close(code.var(0, unbiased=False), torch.ones(4, dtype=torch.float64))
    # The KL's pull on the codes' means (0.5 x code^2 summed over the batch) is constant in
    # the raw means, so no step of any optimizer can shrink the code towards the prior.
    # (Divided by sqrt(var + 1e-5), this gradient was about 10 per mean, pointing inwards.)
    (0.5 * code.pow(2)).sum().backward()
    assert raw.grad.abs().max() < 1e-6, raw.grad.abs().max()


def test_a_negative_gamma_is_refused():
    with pytest.raises(OptionError, match="--posterior-mean-bn-gamma"):
        build_small_model(posterior_mean_bn_gamma=-1.0)


def test_the_second_stage_starts_from_the_autoencoders_encoder_and_a_fresh_decoder(data_bin, tmp_path):
    autoencoder = tmp_path / "ae"
    run_command("fairseq-train", *train_args(
        data_bin, autoencoder, "--max-update", "15", "--kl-schedule", "constant", "--kl-max-weight", "0"))
    ae_state = load_checkpoint_state(autoencoder / "checkpoint_last.pt")["model"]

    vae = tmp_path / "vae"
    result = run_command("fairseq-train", *train_args(
        data_bin, vae, "--max-update", "1", "--lr", "1e-9",
        "--load-pretrained-encoder-from", autoencoder / "checkpoint_last.pt"))
    assert "encoder loaded from" in result.stdout + result.stderr
    vae_state = load_checkpoint_state(vae / "checkpoint_last.pt")["model"]
    encoder_keys = [name for name in ae_state if name.startswith("encoder.")]
    decoder_keys = [name for name in ae_state if name.startswith("decoder.")]
    assert encoder_keys and decoder_keys
    for name in encoder_keys:  # one update at lr 1e-9 moves nothing visible
        torch.testing.assert_close(vae_state[name], ae_state[name], atol=1e-6, rtol=0)
    moved = max((vae_state[name] - ae_state[name]).abs().max() for name in decoder_keys)
    assert moved > 1e-2  # the decoder was initialised afresh, not copied

    # The trained model loads without the pretraining file (as on another machine).
    (autoencoder / "checkpoint_last.pt").unlink()
    log = run_command("fairseq-validate", data_bin, "--user-dir", PLUGIN_DIR,
                      "--task", "sentence_vae", "--path", vae / "checkpoint_last.pt", "--cpu", "--batch-size", "64",
                      "--log-format", "json")
    assert json_log_records(log.stdout + log.stderr, "valid")


def test_a_missing_or_unfitting_pretrained_encoder_is_named(data_bin, trained_model, tmp_path):
    missing = run_command("fairseq-train", *train_args(
        data_bin, tmp_path / "a", "--max-update", "1",
        "--load-pretrained-encoder-from", tmp_path / "nowhere.pt"), check=False)
    assert missing.returncode == 1
    assert MissingCheckpointError.__name__ in missing.stderr and "--load-pretrained-encoder-from" in missing.stderr

    other_size = run_command("fairseq-train", *train_args(
        data_bin, tmp_path / "b", "--max-update", "1", "--latent-dim", "8",
        "--load-pretrained-encoder-from", trained_model[0] / "checkpoint_best.pt"), check=False)
    assert other_size.returncode == 1
    assert IncompatibleCheckpointError.__name__ in other_size.stderr


def length_bucketed_batches(count, generator, spread=2.0, within=1.0, size=32, dim=4):
    """Raw posterior means as fairseq batches them: each batch one 'length', whose mean is one
    of two values +-spread apart from the data's, with spread `within` inside the batch."""
    for index in range(count):
        centre = spread if index % 2 else -spread
        yield centre + within * torch.randn(size, dim, generator=generator)


@pytest.mark.parametrize("population_statistics", [False, True])
def test_scored_codes_have_the_training_scale_only_with_population_statistics(population_statistics):
    norm = PosteriorMeanNorm(4, gamma=1.0, population_statistics=population_statistics).train()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for batch in length_bucketed_batches(1000, generator):
            norm(batch)
        norm.eval()
        # The whole data: both lengths, variance 1 + 2^2 = 5 per dimension.
        scored = norm(torch.cat(list(length_bucketed_batches(100, generator))))
    variance = scored.var(dim=0)
    if population_statistics:
        # gamma^2 = 1 (up to the moving average's noise over ~100 batches), as in training.
        assert ((variance > 0.75) & (variance < 1.33)).all(), variance
    else:
        # Running averages of per-batch variances miss the spread between batches: codes of
        # scored sentences are about 5x as spread out as any training batch's.
        assert (variance > 3.0).all(), variance


def test_population_statistics_give_the_map_used_outside_training_with_batch_norms_gradient():
    norm = PosteriorMeanNorm(4, gamma=1.3, population_statistics=True).train()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for batch in length_bucketed_batches(50, generator):
            norm(batch)
    batch = next(length_bucketed_batches(1, generator)).requires_grad_()
    trained = norm(batch)
    (trained * torch.randn(trained.shape, generator=generator)).sum().backward()
    norm.eval()
    with torch.no_grad():
        torch.testing.assert_close(norm(batch), trained.detach())
    # Like batch norm, the code does not move when a dimension's raw means are shifted or
    # scaled about their batch mean, so the encoder cannot shrink the code below the floor.
    # (Exactly so but for rounding: compare with the gradient's own size.)
    centred = batch.detach() - batch.detach().mean(dim=0)
    size = (batch.grad.abs() * centred.abs()).sum(dim=0)
    assert ((batch.grad * centred).sum(dim=0).abs() < 1e-4 * size).all()
    assert (batch.grad.sum(dim=0).abs() < 1e-4 * batch.grad.abs().sum(dim=0)).all()


def test_population_statistics_need_bn_vae():
    with pytest.raises(OptionError, match="--posterior-mean-bn-gamma"):
        build_small_model(posterior_mean_bn_population_statistics=True)
