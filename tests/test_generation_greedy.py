"""The fast greedy path gives exactly what fairseq's own SequenceGenerator gives with --beam 1."""

import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.sequence_generator import SequenceGenerator

from fairseq_svae.generation import LatentSequenceGenerator, latent_batch
from fairseq_svae.generation.greedy_search import supports_fast_greedy


@pytest.fixture(scope="module")
def trained(latent_model, short_sentences_bin):
    """A model that uses z and ends its sentences: prior samples of many lengths."""
    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(latent_model)], arg_overrides={"data": str(short_sentences_bin)})
    model = models[0].eval()
    task.load_dataset("valid")
    return model, task


def generate(generator_class, model, task, sample, **options):
    generator = generator_class([model], task.target_dictionary, beam_size=1, **options)
    with torch.no_grad():
        return generator.generate([model], sample)


def assert_same_hypotheses(fast, reference):
    assert len(fast) == len(reference)
    for ours, theirs in zip(fast, reference):
        assert torch.equal(ours[0]["tokens"], theirs[0]["tokens"])
        # fairseq keeps running sums and differences them; we keep each step's log-probability.
        assert torch.allclose(ours[0]["positional_scores"], theirs[0]["positional_scores"], atol=1e-4)
        assert float(ours[0]["score"]) == pytest.approx(float(theirs[0]["score"]), rel=1e-5, abs=1e-4)


@pytest.mark.parametrize(
    "options",
    [
        {"max_len_b": 200},
        {"max_len_b": 7},  # many sentences hit the length limit and get a forced </s>
        {"max_len_b": 200, "min_len": 4, "unk_penalty": 2.0},
        {"max_len_b": 200, "temperature": 0.7, "len_penalty": 0.5},
        {"max_len_b": 200, "normalize_scores": False},
    ],
)
def test_fast_greedy_prior_samples_equal_fairseqs_search(trained, options):
    model, task = trained
    torch.manual_seed(0)
    latent = torch.randn(37, model.latent_dim)
    sample = latent_batch(torch.arange(37), task.target_dictionary.eos(), latent)
    fast = generate(LatentSequenceGenerator, model, task, sample, **options)
    reference = generate(SequenceGenerator, model, task, sample, **options)
    assert_same_hypotheses(fast, reference)
    lengths = {len(h[0]["tokens"]) for h in fast}
    assert len(lengths) > 1  # sentences of several lengths left the batch at different steps


def test_fast_greedy_reconstructions_equal_fairseqs_search(trained):
    model, task = trained
    dataset = task.dataset("valid")
    sample = dataset.collater([dataset[i] for i in range(len(dataset))])
    fast = generate(LatentSequenceGenerator, model, task, sample, max_len_b=200)
    reference = generate(SequenceGenerator, model, task, sample, max_len_b=200)
    assert_same_hypotheses(fast, reference)


def test_other_searches_keep_fairseqs_generator(trained):
    model, task = trained
    dictionary = task.target_dictionary
    plain = LatentSequenceGenerator([model], dictionary, beam_size=1)
    assert supports_fast_greedy(plain, None, None, None)
    assert not supports_fast_greedy(LatentSequenceGenerator([model], dictionary, beam_size=5), None, None, None)
    assert not supports_fast_greedy(plain, torch.tensor([[4]]), None, None)  # prefix tokens
    # n-gram blocking is part of the fast path (tests/test_ngram_blocking.py checks it against fairseq's).
    assert supports_fast_greedy(
        LatentSequenceGenerator([model], dictionary, beam_size=1, no_repeat_ngram_size=2), None, None, None)
