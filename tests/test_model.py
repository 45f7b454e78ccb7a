"""SentenceVAE model behaviour: incremental decoding, word dropout, padding, architectures."""

import argparse

import pytest
import torch

from fairseq_svae.models.sentence_vae import (
    base_architecture,
    sentence_vae_bowman,
    sentence_vae_large,
)
from fairseq_svae.models.dropout import Dropout
from fairseq_svae.models.sentence_vae_decoder import word_dropout
from fairseq_svae.models.sentence_vae_encoder import LATENT, POSTERIOR_LOGVAR, POSTERIOR_MEAN
from model_helpers import build_small_model, encode_sentences

SENTENCES = ["the cat sat on a mat", "a dog ran away", "the big red house and the cat", ""]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"feed_latent": True},
        {"decoder_layers": 2, "encoder_layers": 2, "encoder_bidirectional": True},
        {"decoder_out_embed_dim": 16, "share_decoder_input_output_embed": True},
    ],
)
def test_step_by_step_decoding_gives_the_full_forward_log_probabilities(options):
    model = build_small_model(**options).eval()
    src, lengths, prev, _ = encode_sentences(model.decoder.dictionary, SENTENCES)
    with torch.no_grad():
        encoder_out = model.encoder(src, lengths)
        full, _ = model.decoder(prev, encoder_out=encoder_out)
        full = model.get_normalized_probs((full, None), log_probs=True)

        incremental_state = {}
        steps = []
        for t in range(prev.size(1)):
            logits, _ = model.decoder(prev[:, : t + 1], encoder_out=encoder_out,
                                      incremental_state=incremental_state)
            steps.append(model.get_normalized_probs((logits, None), log_probs=True))
        stepwise = torch.cat(steps, dim=1)
    assert stepwise.shape == full.shape
    real = prev.ne(model.decoder.dictionary.pad())
    assert torch.allclose(stepwise[real], full[real], atol=1e-5)


def test_reordering_the_incremental_state_follows_the_batch_order():
    model = build_small_model().eval()
    src, lengths, prev, _ = encode_sentences(model.decoder.dictionary, SENTENCES[:3])
    new_order = torch.tensor([2, 0, 0])
    with torch.no_grad():
        encoder_out = model.encoder(src, lengths)
        state = {}
        model.decoder(prev[:, :2], encoder_out=encoder_out, incremental_state=state)
        model.decoder.reorder_incremental_state(state, new_order)
        reordered_out = model.encoder.reorder_encoder_out(encoder_out, new_order)
        stepped, _ = model.decoder(prev[new_order, :3], encoder_out=reordered_out, incremental_state=state)

        fresh, _ = model.decoder(prev[new_order, :3], encoder_out=reordered_out)
    assert torch.allclose(stepped[:, -1], fresh[:, -1], atol=1e-5)


def test_padding_does_not_change_a_sentence_posterior():
    model = build_small_model(encoder_bidirectional=True).eval()
    dictionary = model.decoder.dictionary
    with torch.no_grad():
        batch = model.encoder(*encode_sentences(dictionary, SENTENCES)[:2])
        for row, sentence in enumerate(SENTENCES):
            alone = model.encoder(*encode_sentences(dictionary, [sentence])[:2])
            assert torch.allclose(batch[POSTERIOR_MEAN][row], alone[POSTERIOR_MEAN][0], atol=1e-5)
            assert torch.allclose(batch[POSTERIOR_LOGVAR][row], alone[POSTERIOR_LOGVAR][0], atol=1e-5)


def test_encoder_latent_is_the_mean_unless_sampling_is_asked_for():
    model = build_small_model().eval()
    src, lengths, _, _ = encode_sentences(model.decoder.dictionary, SENTENCES)
    with torch.no_grad():
        deterministic = model.encoder(src, lengths)
        sampled = model.encoder(src, lengths, sample_latent=True)
        given = model.encoder(src, lengths, latent=torch.ones(4, 6))
    assert torch.equal(deterministic[LATENT], deterministic[POSTERIOR_MEAN])
    assert not torch.allclose(sampled[LATENT], sampled[POSTERIOR_MEAN])
    assert torch.equal(given[LATENT], torch.ones(4, 6)) and given[POSTERIOR_MEAN] is None


def test_word_dropout_rate_and_protected_tokens():
    torch.manual_seed(0)
    tokens = torch.randint(4, 1000, (400, 50))
    tokens[:, 0] = 2  # </s> as the start symbol
    tokens[:, 40:] = 1  # padding
    keep = tokens.eq(2) | tokens.eq(1)
    dropped = word_dropout(tokens, probability=0.3, unk=3, keep=keep)
    words = ~keep
    rate = dropped[words].eq(3).float().mean().item()
    assert abs(rate - 0.3) < 0.01  # 15,600 words: standard error 0.0037
    assert torch.equal(dropped[keep], tokens[keep])
    assert torch.equal(word_dropout(tokens, 1.0, 3, keep)[words], torch.full_like(tokens[words], 3))
    assert torch.equal(word_dropout(tokens, 0.0, 3, keep), tokens)


def test_word_dropout_applies_only_to_the_decoder_in_training():
    model = build_small_model(word_dropout=1.0)
    src, lengths, prev, _ = encode_sentences(model.decoder.dictionary, SENTENCES[:2])
    other_prev = prev.clone()
    other_prev[prev.gt(3)] = 5  # different words in the same places
    latent = torch.zeros(2, 6)
    encoder_out = {LATENT: latent}
    model.train()
    torch.manual_seed(1)
    a, _ = model.decoder(prev, encoder_out=encoder_out)
    torch.manual_seed(1)
    b, _ = model.decoder(other_prev, encoder_out=encoder_out)
    # With P = 1 every word becomes <unk>: the decoder cannot tell the inputs apart.
    assert torch.allclose(a, b)
    model.eval()
    a, _ = model.decoder(prev, encoder_out=encoder_out)
    b, _ = model.decoder(other_prev, encoder_out=encoder_out)
    assert not torch.allclose(a, b)


def test_named_architectures_set_the_published_sizes_and_keep_user_overrides():
    bowman = argparse.Namespace()
    sentence_vae_bowman(bowman)
    assert (bowman.encoder_embed_dim, bowman.decoder_embed_dim) == (353, 353)
    assert (bowman.encoder_hidden_size, bowman.decoder_hidden_size, bowman.latent_dim) == (191, 191, 13)
    large = argparse.Namespace(latent_dim=64)
    sentence_vae_large(large)
    assert (large.decoder_embed_dim, large.decoder_hidden_size, large.latent_dim) == (512, 1024, 64)
    base = argparse.Namespace()
    base_architecture(base)
    assert base.word_dropout == 0.0 and base.decoder_out_embed_dim == base.decoder_hidden_size


def test_encoder_dropout_defaults_to_dropout_and_sets_only_the_encoder():
    old_checkpoint_args = argparse.Namespace(dropout=0.2)  # saved before --encoder-dropout existed
    base_architecture(old_checkpoint_args)
    assert old_checkpoint_args.encoder_dropout == 0.2
    model = build_small_model(dropout=0.3, encoder_dropout=0.0, encoder_layers=2)
    assert model.encoder.dropout_module.p == 0.0 and model.encoder.lstm.dropout == 0.0
    assert model.decoder.dropout_module.p == 0.3
    # Without encoder dropout a training-mode encoding is deterministic; the decoder's is not.
    src, lengths, prev, _ = encode_sentences(model.encoder.dictionary, SENTENCES[:2])
    model.train()
    first, second = (model.encoder.posterior(src, lengths)[0] for _ in range(2))
    assert torch.equal(first, second)
    with pytest.raises(ValueError, match="--encoder-dropout must be in"):
        build_small_model(encoder_dropout=1.0)


def test_tied_embeddings_need_matching_sizes():
    with pytest.raises(ValueError, match="--decoder-out-embed-dim"):
        build_small_model(share_decoder_input_output_embed=True)
    model = build_small_model(decoder_out_embed_dim=16, share_decoder_input_output_embed=True)
    assert model.decoder.output_projection is None


def test_the_cpu_dropout_keeps_1_minus_p_of_the_elements_scaled_to_the_same_expectation():
    torch.manual_seed(0)
    dropout = Dropout(0.3).train()
    x = torch.full((200, 500), 2.0, requires_grad=True)
    y = dropout(x)
    kept = y.ne(0)
    # 10^5 elements: the kept share's standard deviation is 0.0014, the bound 0.01.
    assert abs(kept.float().mean().item() - 0.7) < 0.01
    assert torch.allclose(y[kept], torch.full_like(y[kept], 2.0 / 0.7))
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(grad.ne(0), kept)  # the gradient flows through the kept elements only
    assert dropout.eval()(x) is x
