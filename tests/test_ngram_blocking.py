"""--no-repeat-ngram-size on every path (beam, greedy fast path, sampling, the hub, svae-interpolate),
on a model that repeats by construction, and the blocking rule against a plain reference."""

import math
import random

import pytest
import torch
from fairseq.sequence_generator import SequenceGenerator

from fairseq_svae import SentenceVAEModel
from fairseq_svae.checkpoint_io import load_checkpoint_state
from fairseq_svae.generation import LatentSequenceGenerator, latent_batch
from fairseq_svae.generation.ngram_blocking import PrefixNGramRepeatBlock, block_repeated_ngrams

from conftest import run_command
from generation_helpers import generate, read_lines

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blocked_words_reference(prefix, n):
    """The words that would complete an n-gram already in ``prefix``, written out."""
    if len(prefix) < n:
        return set()
    current = prefix[len(prefix) - n + 1:] if n > 1 else []
    return {prefix[i + n - 1] for i in range(len(prefix) - n + 1) if prefix[i:i + n - 1] == current}


@pytest.mark.parametrize("ngram_size", [2, 3, 4])
def test_blocking_bans_exactly_the_words_that_would_repeat_an_ngram(ngram_size):
    rng = random.Random(ngram_size)
    prefixes = [[2] + [rng.randrange(4, 9) for _ in range(length)] for length in range(0, 25)]
    width = max(map(len, prefixes))
    for prefix in prefixes:  # one row per call: rows of a batch share the length
        scores = torch.zeros(1, 12)
        block_repeated_ngrams(torch.tensor([prefix]), scores, ngram_size)
        banned = {int(word) for word in torch.nonzero(scores[0] == -math.inf)}
        assert banned == blocked_words_reference(prefix, ngram_size), prefix
    # A batch of rows, each against its own prefix.
    batch = torch.tensor([[2] + [rng.randrange(4, 7) for _ in range(width)] for _ in range(16)])
    scores = torch.zeros(16, 12)
    block_repeated_ngrams(batch, scores, ngram_size)
    for row in range(16):
        banned = {int(word) for word in torch.nonzero(scores[row] == -math.inf)}
        assert banned == blocked_words_reference(batch[row].tolist(), ngram_size)


def repeated_ngram(words, n=3):
    ngrams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(ngrams) != len(set(ngrams))


@pytest.fixture(scope="module")
def repeating_model(latent_model, short_sentences_bin, tmp_path_factory):
    """The latent model with an output layer that ignores its input and always prefers the same
    three words (and never ends a sentence): it repeats whatever z, search or seed."""
    state = load_checkpoint_state(latent_model)
    weight = state["model"]["decoder.output_projection.weight"]
    bias = state["model"]["decoder.output_projection.bias"]
    weight.zero_()
    bias.fill_(0.0)
    dictionary_lines = (short_sentences_bin / "dict.txt").read_text(encoding="utf-8").splitlines()
    favourites = [4 + index for index in range(3)]  # the three most frequent words of dict.txt
    for favourite, logit in zip(favourites, (12.0, 11.0, 10.0)):
        bias[favourite] = logit
    bias[0] = bias[2] = -30.0  # <s> (which fairseq's string() would hide) and </s>
    path = tmp_path_factory.mktemp("repeating") / "checkpoint.pt"
    torch.save(state, path)
    words = [dictionary_lines[index - 4].split()[0] for index in favourites]
    return path, words


PRIOR = ("--sample-from-prior", "--prior-samples", "12", "--max-len-b", "30", "--seed", "1")
SEARCHES = {
    "beam 5": ("--beam", "5"),
    "greedy": ("--beam", "1"),
    "sampling": ("--beam", "1", "--sampling", "--sampling-topk", "3"),
}


@pytest.mark.parametrize("search", sorted(SEARCHES))
def test_fairseq_generate_blocks_repeated_trigrams_in_every_search(search, repeating_model, short_sentences_bin):
    checkpoint, favourites = repeating_model
    plain = generate(short_sentences_bin, checkpoint, *PRIOR, *SEARCHES[search])
    blocked = generate(short_sentences_bin, checkpoint, *PRIOR, *SEARCHES[search], "--no-repeat-ngram-size", "3")
    assert sorted(blocked.hypotheses) == list(range(12))
    # Without blocking every sample loops on the favourite words; with it none repeats a trigram.
    assert all(repeated_ngram(text.split()) for text in plain.hypotheses.values())
    assert not any(repeated_ngram(text.split()) for text in blocked.hypotheses.values())
    assert all(len(text.split()) == 30 for text in blocked.hypotheses.values())  # no </s>: the cap
    assert all(text.split()[0] in favourites for text in blocked.hypotheses.values())


def test_the_hub_and_svae_interpolate_block_repeated_trigrams(repeating_model, short_sentences_bin):
    checkpoint, _ = repeating_model
    hub = SentenceVAEModel.from_pretrained(checkpoint.parent, checkpoint_file=checkpoint.name,
                                           data_name_or_path=str(short_sentences_bin))
    sentences = read_lines(short_sentences_bin.parent / "train.txt")[:5]
    for texts in (hub.sample(5, seed=1, max_len_b=30, no_repeat_ngram_size=3),
                  hub.reconstruct(sentences, max_len_b=30, no_repeat_ngram_size=3, beam=4)):
        assert not any(repeated_ngram(text.split()) for text in texts)
    assert all(repeated_ngram(text.split()) for text in hub.sample(5, seed=1, max_len_b=30, no_repeat_ngram_size=0))

    result = run_command("svae-interpolate", short_sentences_bin, "--path", checkpoint, "--cpu", "--steps", "3",
                         "--max-len-b", "30", "--no-repeat-ngram-size", "3", sentences[0], sentences[1])
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and not any(repeated_ngram(line.split()) for line in lines)


def test_the_greedy_fast_path_blocks_exactly_like_fairseqs_search_with_the_fixed_blocker(latent_hub):
    model = latent_hub.model
    dictionary = model.decoder.dictionary
    torch.manual_seed(0)
    sample = latent_batch(torch.arange(23), dictionary.eos(), torch.randn(23, model.latent_dim) * 2)

    def hypotheses(generator_class):
        generator = generator_class([model], dictionary, beam_size=1, max_len_b=40, no_repeat_ngram_size=2)
        if generator_class is SequenceGenerator:
            generator.repeat_ngram_blocker = PrefixNGramRepeatBlock(2)  # fairseq's search, working blocker
        with torch.no_grad():
            return generator.generate([model], sample)

    fast, reference = hypotheses(LatentSequenceGenerator), hypotheses(SequenceGenerator)
    for ours, theirs in zip(fast, reference):
        assert ours[0]["tokens"].tolist() == theirs[0]["tokens"].tolist()
        assert torch.allclose(ours[0]["positional_scores"], theirs[0]["positional_scores"], atol=1e-4)
        assert not repeated_ngram(ours[0]["tokens"].tolist(), 2)


def test_a_forced_word_is_never_blocked():
    # Only one word is possible (a forced prefix word, or </s> at the length limit): it stays,
    # even where it repeats a trigram; rows with alternatives are blocked as usual.
    prefix = torch.tensor([[2, 5, 6, 7, 5, 6], [2, 5, 6, 7, 5, 6]])
    scores = torch.zeros(2, 10)
    scores[0, :] = -math.inf
    scores[0, 7] = -1.5
    block_repeated_ngrams(prefix, scores, 3)
    assert scores[0, 7] == -1.5 and torch.isinf(scores[0, :7]).all()
    assert scores[1, 7] == -math.inf and torch.isfinite(scores[1, torch.arange(10) != 7]).all()
