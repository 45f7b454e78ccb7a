"""Completing sentences whose last words are missing, through z (hub and svae-impute)."""

import pytest
import torch

from fairseq_svae.errors import OptionError
from fairseq_svae.generation.imputation import complete_from_latents, impute_suffixes

from conftest import run_command
from generation_helpers import read_lines

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def beginnings(short_sentences_bin):
    sentences = read_lines(short_sentences_bin.parent / "train.txt")[:12]
    return [" ".join(s.split()[: max(1, int(0.6 * len(s.split())))]) for s in sentences]


def test_completions_keep_the_beginning_and_are_seeded(latent_hub, beginnings):
    completed = latent_hub.impute(beginnings, iterations=3, seed=1)
    assert len(completed) == len(beginnings)
    for beginning, sentence in zip(beginnings, completed):
        assert sentence.split()[: len(beginning.split())] == beginning.split()
    assert latent_hub.impute(beginnings, iterations=3, seed=1) == completed


def test_no_iterations_is_the_continuation_under_the_beginnings_posterior_mean(latent_hub, beginnings):
    dictionary = latent_hub.dictionary
    prefixes = [tokens[:-1] for tokens in latent_hub.sentences_to_tokens(beginnings)]
    means, _ = latent_hub.encode(beginnings)
    # max_len_b bounds the completion; the beginning comes on top of it.
    generator = latent_hub.build_generator(max_len_b=200 + max(p.numel() for p in prefixes))
    expected = complete_from_latents(latent_hub, generator, means, prefixes)
    got = impute_suffixes(latent_hub, prefixes, iterations=0)
    assert [t.tolist() for t in got] == [t.tolist() for t in expected]
    assert all(t[-1] == dictionary.eos() for t in got)
    with pytest.raises(OptionError, match="iterations must be >= 0"):
        impute_suffixes(latent_hub, prefixes, iterations=-1)
    with pytest.raises(OptionError, match="at least one observed word"):
        impute_suffixes(latent_hub, [torch.tensor([], dtype=torch.long)])


def test_svae_impute_prints_what_the_hub_gives(latent_hub, latent_model, short_sentences_bin, beginnings):
    result = run_command("svae-impute", short_sentences_bin, "--path", latent_model, "--cpu", "--seed", "2",
                         "--iterations", "3", *beginnings[:3])
    assert result.stdout.splitlines() == latent_hub.impute(beginnings[:3], iterations=3, seed=2)
    bad = run_command("svae-impute", short_sentences_bin, "--path", latent_model, "--cpu", "--iterations", "-1",
                      "a", check=False)
    assert bad.returncode == 1
    assert bad.stderr.splitlines()[-1] == "svae-impute: error: OptionError: --iterations must be >= 0, got -1"
