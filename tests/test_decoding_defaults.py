"""The latent-space commands' decoding defaults: what is used when, and that a user's choice wins."""

import pytest
import torch

from fairseq_svae.generation.decoding_defaults import (
    CODE,
    DECODE_CODE,
    DECODE_HIGH_RATE,
    GREEDY_FROM_NATS,
    NO_UNK,
    PRIOR,
    SAMPLE_PRIOR,
    defaults_for,
    trained_rate,
    with_defaults,
)
from fairseq_svae.hub_interface import SentenceVAEHubInterface

from conftest import REPO, run_command

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_given_options_win_and_a_given_search_replaces_the_default_search():
    assert with_defaults(SAMPLE_PRIOR, {}) == SAMPLE_PRIOR
    assert with_defaults(SAMPLE_PRIOR, {"max_len_b": 30})["max_len_b"] == 30
    # Naming a search (beam search here) drops the sampling defaults but keeps the rest.
    beam = with_defaults(SAMPLE_PRIOR, {"beam": 5})
    assert beam == {"beam": 5, "no_repeat_ngram_size": 3, "unkpen": NO_UNK}
    assert with_defaults(SAMPLE_PRIOR, {"unkpen": 0})["unkpen"] == 0
    assert with_defaults(DECODE_CODE, {"sampling": True}) == {"sampling": True, "no_repeat_ngram_size": 3,
                                                              "unkpen": NO_UNK}
    # Options pinned when the model was loaded count as the user's.
    assert "sampling" not in with_defaults(SAMPLE_PRIOR, {}, pinned={"beam"})
    assert "no_repeat_ngram_size" not in with_defaults(DECODE_CODE, {}, pinned={"no_repeat_ngram_size"})


def test_the_hub_decodes_each_use_with_its_defaults(latent_hub):
    unk = latent_hub.dictionary.unk_word
    samples = latent_hub.sample(30, seed=3)
    assert latent_hub.sample(30, seed=3) == samples  # the seed covers the sampled words too
    torch.manual_seed(3)
    assert samples == latent_hub.decode_latents(latent_hub.prior_latents(30, seed=3), **SAMPLE_PRIOR)
    assert all(unk not in text.split() for text in samples)
    sentence = ["the jury said it did not know ."]
    assert latent_hub.reconstruct(sentence) == latent_hub.decode_latents(latent_hub.encode(sentence)[0],
                                                                         **DECODE_CODE)
    # A user's own search is used as it is (with the other defaults unless given too).
    plain = dict(beam=1, unkpen=0, no_repeat_ngram_size=0)
    assert latent_hub.sample(5, seed=3, **plain) == latent_hub.decode_latents(latent_hub.prior_latents(5, seed=3),
                                                                              **plain)


def test_svae_interpolate_uses_the_code_defaults(latent_hub, latent_model, short_sentences_bin):
    first, second = "the jury said it did not know .", "it was my turn ."
    printed = run_command("svae-interpolate", short_sentences_bin, "--path", latent_model, "--cpu", "--steps", "4",
                          first, second).stdout.splitlines()
    assert printed == latent_hub.interpolate(first, second, steps=4)
    assert printed == latent_hub.interpolate(first, second, steps=4, **DECODE_CODE)


def test_a_model_trained_at_a_high_rate_is_decoded_greedily_for_both_uses():
    for use in (CODE, PRIOR):
        assert defaults_for(use, GREEDY_FROM_NATS) == defaults_for(use, 80.0) == DECODE_HIGH_RATE
        assert "sampling" not in DECODE_HIGH_RATE and DECODE_HIGH_RATE["beam"] == 1
    assert defaults_for(CODE, None) == defaults_for(CODE, GREEDY_FROM_NATS - 1) == DECODE_CODE
    assert defaults_for(PRIOR, None) == defaults_for(PRIOR, 5.0) == SAMPLE_PRIOR
    with pytest.raises(ValueError):
        defaults_for("reconstruction", None)
    assert trained_rate({"criterion": {"_name": "annealed_elbo", "target_kl": 40}}) == 40.0
    assert trained_rate({"criterion": {"_name": "annealed_elbo", "target_kl": None}}) is None
    assert trained_rate({"criterion": {"_name": "cross_entropy"}}) is None and trained_rate(None) is None


def test_the_captions_model_samples_and_reconstructs_greedily_unless_told_otherwise():
    hub = SentenceVAEHubInterface.from_pretrained(str(REPO / "examples" / "captions" / "pretrained"),
                                                  checkpoint_file="model.pt")
    assert hub.trained_rate == 80.0  # its --target-kl, read from the checkpoint
    samples = hub.sample(4, seed=2)
    assert samples == hub.decode_latents(hub.prior_latents(4, seed=2), **DECODE_HIGH_RATE)
    assert hub.sample(4, seed=2, sampling=True, sampling_topp=0.9) == hub.sample(
        4, seed=2, sampling=True, sampling_topp=0.9, no_repeat_ngram_size=3, unkpen=NO_UNK)
    caption = ["a man is riding a bike down the street ."]
    assert hub.reconstruct(caption) == hub.decode_latents(hub.encode(caption)[0], **DECODE_HIGH_RATE)

    # svae-interpolate reads the rate from the checkpoint too: the hub's greedy path, printed.
    first, second = caption[0], "two dogs run on the beach ."
    printed = run_command("svae-interpolate", REPO / "examples" / "captions" / "pretrained", "--path",
                          REPO / "examples" / "captions" / "pretrained" / "model.pt", "--cpu", "--steps", "4",
                          first, second).stdout.splitlines()
    assert printed == hub.interpolate(first, second, steps=4, **DECODE_HIGH_RATE)
