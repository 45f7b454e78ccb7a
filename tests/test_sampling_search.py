"""--sampling through InverseCdfSampling draws from fairseq's distribution, with fairseq's scores."""

import pytest
import torch
from fairseq.data import Dictionary
from fairseq.search import Sampling

from fairseq_svae import SentenceVAEModel
from fairseq_svae.generation import LatentSequenceGenerator
from fairseq_svae.generation.decoding_defaults import NO_UNK
from fairseq_svae.generation.sampling_search import InverseCdfSampling, draw_categorical

from generation_helpers import generate


def test_draws_follow_the_weights_and_never_pick_a_zero_weight():
    weights = torch.tensor([[0.0, 1.0, 2.0, 0.0, 7.0], [5.0, 0.0, 0.0, 5.0, 0.0]])
    torch.manual_seed(0)
    draws = draw_categorical(weights, draws=100_000)
    assert draws.shape == (2, 100_000)
    for row in range(2):
        frequencies = torch.bincount(draws[row], minlength=5).double() / draws.size(1)
        expected = weights[row].double() / weights[row].sum()
        assert frequencies[expected == 0].sum() == 0
        # The standard error of a frequency is below 0.0015 here: 0.006 is four of them.
        assert torch.allclose(frequencies, expected, atol=0.006), (frequencies, expected)


def test_draws_are_reproducible_from_the_seed():
    weights = torch.rand(50, 300)
    torch.manual_seed(7)
    first = draw_categorical(weights, draws=3)
    torch.manual_seed(7)
    again = draw_categorical(weights, draws=3)
    torch.manual_seed(8)
    other = draw_categorical(weights, draws=3)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def search_pair(topk=-1, topp=-1.0):
    dictionary = Dictionary()
    for word in "a b c d e f g h i j k l".split():
        dictionary.add_symbol(word)
    return (InverseCdfSampling(dictionary, sampling_topk=topk, sampling_topp=topp),
            Sampling(dictionary, sampling_topk=topk, sampling_topp=topp))


def step_inputs(bsz=3, beam=2, vocab=16, step=2, seed=0, sharpness=3.0):
    generator = torch.Generator().manual_seed(seed)
    lprobs = torch.log_softmax(sharpness * torch.randn(bsz, beam, vocab, generator=generator), dim=-1)
    scores = -torch.rand(bsz, beam, step + 1, generator=generator)
    return lprobs, scores


@pytest.mark.parametrize("options", [{}, {"topk": 4}, {"topp": 0.8}])
@pytest.mark.parametrize("step", [0, 2])
def test_step_returns_what_fairseq_sampling_returns_for_the_drawn_words(options, step):
    ours, fairseqs = search_pair(**options)
    lprobs, scores = step_inputs(step=step)
    torch.manual_seed(1)
    step_scores, tokens, beams = ours.step(step, lprobs.clone(), scores)
    reference_scores, reference_tokens, reference_beams = fairseqs.step(step, lprobs.clone(), scores)
    assert step_scores.shape == reference_scores.shape and tokens.shape == reference_tokens.shape
    assert torch.equal(beams, reference_beams)
    # A word's score is its log-probability, plus the hypothesis's score so far after step 0.
    first_beam = lprobs[:, :1].expand_as(lprobs) if step == 0 else lprobs
    expected = first_beam.gather(2, tokens.unsqueeze(-1)).squeeze(-1)
    if step > 0:
        expected = expected + scores[:, :, step - 1]
    assert torch.allclose(step_scores, expected, atol=1e-5)


@pytest.mark.parametrize("options", [{"topk": 4}, {"topp": 0.8}, {"topp": 0.8, "candidates": 2},
                                     {"topp": 0.3, "candidates": 8}])
def test_step_draws_only_from_fairseqs_top_k_or_top_p_set(options):
    options = dict(options)
    candidates = options.pop("candidates", None)
    ours, fairseqs = search_pair(**options)
    if candidates:  # the top-p set searched among the most likely words first (with fallback)
        ours.topp_candidates = candidates
    # Mild scores, so that 400 draws reach every word of the set.
    lprobs, scores = step_inputs(bsz=4, beam=1, vocab=16, step=1, sharpness=0.5)
    if "topk" in options:
        allowed = lprobs.topk(options["topk"]).indices
    else:
        trimmed, indices = fairseqs._sample_topp(lprobs.clone())
        allowed = indices.masked_fill(trimmed == 0, -1)
    seen = torch.zeros(4, 16, dtype=torch.bool)
    torch.manual_seed(2)
    for _ in range(400):
        _, tokens, _ = ours.step(1, lprobs.clone(), scores)
        seen[torch.arange(4), tokens[:, 0]] = True
    for row in range(4):
        allowed_row = set(allowed[row, 0].tolist()) - {-1}
        assert set(seen[row].nonzero().flatten().tolist()) == allowed_row


def test_sampling_with_top_1_is_greedy_search(latent_hub):
    greedy = latent_hub.sample(12, seed=3, beam=1)
    assert latent_hub.sample(12, seed=3, sampling=True, sampling_topk=1) == greedy
    assert latent_hub.sample(12, seed=3, sampling=True, sampling_topp=1e-6) == greedy


def test_the_generator_samples_through_inverse_cdf_sampling(latent_hub):
    generator = latent_hub.build_generator(sampling=True, sampling_topp=0.9)
    assert isinstance(generator, LatentSequenceGenerator)
    assert type(generator.search) is InverseCdfSampling
    assert generator.search.sampling_topp == 0.9


@pytest.mark.parametrize("topp", [0.3, 0.8, 0.95])
@pytest.mark.parametrize("candidates", [2, 8, 256])
def test_top_p_set_equals_fairseqs(topp, candidates):
    ours, fairseqs = search_pair(topp=topp)
    ours.topp_candidates = candidates
    for seed in range(10):
        lprobs, _ = step_inputs(bsz=5, beam=1, vocab=40, seed=seed, sharpness=2.0)
        probs, words = ours._sample_topp(lprobs.clone())
        reference_probs, reference_words = fairseqs._sample_topp(lprobs.clone())
        assert probs.shape == reference_probs.shape
        assert torch.allclose(probs, reference_probs)
        assert torch.equal(words.masked_fill(probs == 0, -1), reference_words.masked_fill(reference_probs == 0, -1))


def test_shared_noise_draws_the_same_word_for_the_same_distribution():
    from fairseq_svae.generation.sampling_search import shared_uniforms

    assert torch.equal(shared_uniforms(1, 3, 2), shared_uniforms(1, 3, 2))
    assert not torch.equal(shared_uniforms(1, 3, 2), shared_uniforms(1, 4, 2))
    assert not torch.equal(shared_uniforms(1, 3, 2), shared_uniforms(2, 3, 2))
    weights = torch.rand(1, 50).expand(6, 50).contiguous()
    torch.manual_seed(0)
    independent = draw_categorical(weights, draws=1)
    shared = draw_categorical(weights, draws=1, uniforms=shared_uniforms(1, 0, 1))
    assert shared.unique().numel() == 1  # one number for every row: one word for one distribution
    # The draw is inverse-CDF sampling at that number.
    u = float(shared_uniforms(1, 0, 1)[0])
    cdf = weights[0].double().cumsum(0)
    assert int(shared[0, 0]) == int((cdf <= u * cdf[-1]).sum())
    assert independent.shape == shared.shape


def test_shared_noise_makes_a_code_decode_to_one_sentence_in_any_batch(latent_hub, short_sentences_bin,
                                                                       latent_model):
    options = dict(sampling=True, sampling_topp=0.9, shared_sampling_noise=True)
    codes = latent_hub.prior_latents(20, seed=4)
    together = latent_hub.decode_latents(codes, **options)
    assert [latent_hub.decode_latents(codes[i:i + 1], **options)[0] for i in (0, 7, 19)] == [
        together[0], together[7], together[19]]
    assert latent_hub.decode_latents(codes.flip(0), **options) == together[::-1]
    # fairseq-generate with the same options and seed decodes the same codes to the same sentences.
    printed = generate(short_sentences_bin, latent_model, "--sample-from-prior", "--prior-samples", "20",
                       "--seed", "4", "--beam", "1", "--sampling", "--sampling-topp", "0.9",
                       "--shared-sampling-noise", "--no-repeat-ngram-size", "3", "--unkpen", str(NO_UNK),
                       "--batch-size", "6")
    seeded = SentenceVAEModel.from_pretrained(latent_model.parent, checkpoint_file=latent_model.name,
                                              data_name_or_path=str(short_sentences_bin), seed=4)
    assert printed.in_order() == seeded.decode_latents(codes, **options)
    # A path's endpoints are the two reconstructions, whatever else is in the batch.
    sentences = ["the jury said it did not know .", "it was my turn ."]
    path = latent_hub.interpolate(*sentences, steps=5, **options)
    assert [path[0], path[-1]] == latent_hub.reconstruct(sentences, **options)
