"""The Python API: SentenceVAEModel.from_pretrained(...) on a real checkpoint, raw text in and out."""

import logging

import pytest
import sacrebleu
import torch
from fairseq.data import data_utils

from fairseq_svae import SentenceVAEModel
from fairseq_svae.errors import OptionError, SentenceInputError
from fairseq_svae.hub_interface import SentenceVAEHubInterface

from generation_helpers import generate, read_lines

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PLAIN_GREEDY = dict(beam=1, no_repeat_ngram_size=0, unkpen=0)


@pytest.fixture(scope="module")
def sentences(short_sentences_bin):
    return read_lines(short_sentences_bin.parent / "train.txt")


def test_from_pretrained_reads_raw_text_exactly_as_fairseq_preprocess_did(latent_hub, short_sentences_bin,
                                                                          sentences):
    assert isinstance(latent_hub, SentenceVAEHubInterface)
    binarized = data_utils.load_indexed_dataset(str(short_sentences_bin / "train"), latent_hub.dictionary)
    assert len(binarized) == len(sentences)
    for index, sentence in enumerate(sentences):
        tokens = latent_hub.text_to_tokens(sentence)
        assert tokens.tolist() == binarized[index].tolist()
        assert latent_hub.tokens_to_text(tokens) == sentence  # raw text round trip


def test_reconstruct_gives_what_fairseq_generate_prints(latent_hub, sentences, greedy_reconstruction):
    # fairseq-generate --beam 1 is plain greedy search: the hub's defaults switched off.
    assert latent_hub.reconstruct(sentences, **PLAIN_GREEDY) == greedy_reconstruction.in_order()
    assert latent_hub.reconstruct(sentences[7], **PLAIN_GREEDY) == [greedy_reconstruction.hypotheses[7]]
    assert latent_hub.reconstruct(sentences[:4], beam=5) == [
        latent_hub.reconstruct(sentence, beam=5)[0] for sentence in sentences[:4]
    ]


def test_encode_returns_each_sentence_posterior_whatever_the_batch(latent_hub, sentences):
    means, logvars = latent_hub.encode(sentences)
    assert means.shape == logvars.shape == (len(sentences), latent_hub.latent_dim)
    # Batched by length inside encode; each row must still belong to its sentence.
    for index in (0, 17, 123, 299):
        alone_mean, alone_logvar = latent_hub.encode(sentences[index])
        assert torch.allclose(means[index], alone_mean[0], atol=1e-5)
        assert torch.allclose(logvars[index], alone_logvar[0], atol=1e-5)
    assert means.std(0).min() > 0.05  # the posterior means differ between sentences


def test_prior_codes_are_fairseq_generates_and_samples_are_seeded(latent_hub, short_sentences_bin, latent_model):
    printed = generate(short_sentences_bin, latent_model, "--sample-from-prior", "--prior-samples", "25",
                       "--beam", "1", "--seed", "7")
    codes = latent_hub.prior_latents(25, seed=7)
    assert latent_hub.decode_latents(codes, **PLAIN_GREEDY) == printed.in_order()
    assert torch.equal(latent_hub.prior_latents(5, seed=7), codes[:5])
    samples = latent_hub.sample(25, seed=7)
    assert latent_hub.sample(25, seed=7) == samples
    assert latent_hub.sample(25, seed=8) != samples
    torch.manual_seed(0)
    unseeded = latent_hub.sample(10)
    torch.manual_seed(0)
    assert latent_hub.sample(10) == unseeded  # no seed: drawn from torch's generator


def test_posterior_samples_stay_near_their_sentence(latent_hub, sentences):
    chosen = sentences[:30]
    neighbours = [latent_hub.posterior_samples(sentence, 3, seed=1, beam=1) for sentence in chosen]
    assert all(len(group) == 3 for group in neighbours)
    assert latent_hub.posterior_samples(chosen[0], 3, seed=1, beam=1) == neighbours[0]
    references = [sentence for sentence in chosen for _ in range(3)]
    near = sacrebleu.corpus_bleu([text for group in neighbours for text in group], [references]).score
    prior = sacrebleu.corpus_bleu(latent_hub.sample(len(references), seed=1), [references]).score
    assert near > prior + 10


def test_interpolate_starts_and_ends_at_the_reconstructions(latent_hub, sentences):
    path = latent_hub.interpolate(sentences[3], sentences[10], steps=6)
    assert len(path) == 6
    assert [path[0], path[-1]] == latent_hub.reconstruct([sentences[3], sentences[10]])
    spherical = latent_hub.interpolate(sentences[3], sentences[10], steps=6, spherical=True)
    assert [spherical[0], spherical[-1]] == [path[0], path[-1]]


def test_attribute_vector_pushes_sentences_towards_the_attribute(latent_hub, sentences):
    quoted = [s for s in sentences if "``" in s]
    plain = [s for s in sentences if "``" not in s]
    vector = latent_hub.attribute_vector(quoted, plain)
    expected = latent_hub.encode(quoted)[0].mean(0) - latent_hub.encode(plain)[0].mean(0)
    assert torch.allclose(vector, expected, atol=1e-5)

    # Far from the training codes the decoder may ramble; 40 tokens are enough to see quotes.
    # Greedy: the test is about the vector, not the decoding.
    reconstructions = latent_hub.reconstruct(plain, max_len_b=40, beam=1)
    assert latent_hub.shift(plain, vector, alpha=0.0, max_len_b=40, beam=1) == reconstructions
    quoting = lambda texts: sum("``" in text for text in texts) / len(texts)  # noqa: E731
    assert quoting(reconstructions) < 0.1
    assert quoting(latent_hub.shift(plain, vector, alpha=2.0, max_len_b=40, beam=1)) > 0.5


def test_unknown_words_read_as_unk_with_one_warning_per_call(latent_hub, caplog):
    with caplog.at_level(logging.WARNING):
        tokens = latent_hub.text_to_tokens("the zqxjk jury said .")
    assert tokens[1] == latent_hub.dictionary.unk()
    assert "'zqxjk'" in caplog.text and "<unk>" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        sentences = [f"the zqxjk{index % 10} jury said ." for index in range(50)]
        assert len(latent_hub.reconstruct(sentences)) == 50
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "50 word(s) in 50 sentence(s)" in warnings[0].getMessage()
    assert "'zqxjk0'" in warnings[0].getMessage() and ", ..." in warnings[0].getMessage()


def test_empty_and_too_long_sentences_are_refused_clearly(latent_hub, latent_model, short_sentences_bin):
    with pytest.raises(SentenceInputError, match=r"the second sentence is empty \('  '\)"):
        latent_hub.encode(["the jury said .", "  "])
    long_sentence = " ".join(["the"] * 205)
    with pytest.raises(SentenceInputError, match="the first sentence has 205 tokens, more than this model's "
                                                 "max_sentence_length of 200.*max_sentence_length=205"):
        latent_hub.reconstruct(long_sentence)
    # The message's remedy works.
    allowing = SentenceVAEModel.from_pretrained(latent_model.parent, checkpoint_file=latent_model.name,
                                                data_name_or_path=str(short_sentences_bin),
                                                max_sentence_length=205)
    assert len(allowing.reconstruct(long_sentence)) == 1


def test_generation_options_are_checked(latent_hub):
    with pytest.raises(OptionError, match="unknown generation option 'beam_size'.*beam=5"):
        latent_hub.sample(2, seed=1, beam_size=5)
    with pytest.raises(OptionError, match="latents must be n x 16"):
        latent_hub.decode_latents(torch.zeros(3, 4))
    with pytest.raises(OptionError, match="n must be at least 1"):
        latent_hub.sample(0)
    with pytest.raises(SentenceInputError, match="the third sentence is not a string but int 3"):
        latent_hub.encode(["a", "b", 3])
