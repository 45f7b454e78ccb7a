"""--bag-of-words-loss (Zhao et al. 2017): z predicts the sentence's words; an extra training term."""

import math

import pytest
import torch

from fairseq_svae.errors import OptionError
from fairseq_svae.models.bag_of_words import BAG_OF_WORDS_NLL

from conftest import json_log_records, run_command, train_args
from model_helpers import build_small_model, encode_sentences


def test_the_head_scores_each_word_of_the_sentence_but_padding_and_end_of_sentence():
    model = build_small_model(bag_of_words_loss=0.5).train()
    dictionary = model.decoder.dictionary
    src, lengths, prev, _ = encode_sentences(dictionary, ["the cat sat", "a dog"])
    # With z = the posterior mean (sample_latent=False) the NLL is a sum we can write out.
    _, extra = model(src, lengths, prev, sample_latent=False, features_only=True)
    log_probs = torch.log_softmax(model.bag_of_words.projection(extra["posterior_mean"]), dim=-1)
    expected = 0.0
    for row, length in enumerate(lengths):
        words = src[row, : length - 1]  # without </s>
        expected -= log_probs[row, words].sum()
    torch.testing.assert_close(extra[BAG_OF_WORDS_NLL], expected)
    extra[BAG_OF_WORDS_NLL].backward()
    # It trains the encoder: its gradient reaches the LSTM that reads the sentence.
    assert model.encoder.lstm.weight_ih_l0.grad.abs().sum() > 0
    assert model.bag_of_words_weight == 0.5


def test_without_the_option_there_is_no_head_and_no_term():
    model = build_small_model().train()
    src, lengths, prev, _ = encode_sentences(model.decoder.dictionary, ["the cat sat"])
    _, extra = model(src, lengths, prev, features_only=True)
    assert getattr(model, "bag_of_words", None) is None and BAG_OF_WORDS_NLL not in extra


def test_a_negative_weight_is_refused():
    with pytest.raises(OptionError, match="--bag-of-words-loss"):
        build_small_model(bag_of_words_loss=-1.0)


def test_fairseq_train_adds_the_weighted_term_to_the_training_loss_only(data_bin, tmp_path):
    weight = 2.0
    result = run_command("fairseq-train", *train_args(
        data_bin, tmp_path / "bow", "--max-update", "6", "--log-interval", "1", "--kl-schedule", "constant",
        "--bag-of-words-loss", str(weight), "--validate-interval-updates", "6"))
    log = result.stdout + result.stderr
    inner = json_log_records(log, "train_inner")
    assert inner, log[-2000:]
    for record in inner:
        # loss = nll + weight x KL (constant schedule, no free bits) + W x bag-of-words NLL.
        expected = float(record["nll"]) + float(record["kl_weight"]) * float(record["kl"]) + weight * float(record["bow_nll"])
        assert float(record["loss"]) == pytest.approx(expected, rel=2e-3, abs=0.02)
        # A uniform guess over the vocabulary costs log V per word: the term is of that order.
        assert 0 < float(record["bow_nll"])
    valid = json_log_records(log, "valid")[-1]
    # Validation's loss is the negative ELBO, without the extra term.
    assert float(valid["valid_loss"]) == pytest.approx(float(valid["valid_neg_elbo"]), rel=1e-3)
    assert float(valid["valid_bow_nll"]) > 0
    assert math.isfinite(float(valid["valid_loss"]))
