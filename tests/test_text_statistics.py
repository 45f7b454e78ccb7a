"""The figures of svae-report on inputs whose answers are known."""

import math

import pytest

from fairseq_svae.text_statistics import (
    distinct_n,
    has_repeated_ngram,
    homotopy_statistics,
    mean_and_spread,
    self_bleu,
    set_statistics,
    token_share,
    word_edit_distance,
)


def test_mean_and_spread():
    assert mean_and_spread([1, 3]) == {"mean": 2.0, "std": 1.0}
    assert math.isnan(mean_and_spread([])["mean"])


def test_repeated_trigrams():
    assert has_repeated_ngram("the cat of the cat of".split(), 3)
    assert not has_repeated_ngram("the cat of the cat sat".split(), 3)
    assert not has_repeated_ngram("a a".split(), 3)
    assert has_repeated_ngram("a a a".split(), 2)


def test_distinct_n_counts_distinct_ngrams_over_all_ngrams_of_the_set():
    sentences = [["a", "b", "a"], ["a", "b"]]
    assert distinct_n(sentences, 1) == pytest.approx(2 / 5)  # {a, b} of 5 words
    assert distinct_n(sentences, 2) == pytest.approx(2 / 3)  # {ab, ba} of ab, ba, ab
    assert math.isnan(distinct_n([["a"]], 2))


def test_unk_share_counts_tokens():
    assert token_share([["<unk>", "a"], ["b", "c", "<unk>", "<unk>"]], "<unk>") == pytest.approx(3 / 6)


def test_word_edit_distance():
    assert word_edit_distance("a b c".split(), "a x c".split()) == 1
    assert word_edit_distance([], "a b".split()) == 2
    assert word_edit_distance("the cat sat".split(), "cat sat down".split()) == 2
    assert word_edit_distance("a b".split(), "a b".split()) == 0


def test_self_bleu_of_copies_is_100_and_of_disjoint_sentences_0():
    copies = ["the jury said it did not know ."] * 6
    assert self_bleu(copies) == pytest.approx(100.0)
    assert self_bleu(copies, max_references=2) == pytest.approx(100.0)
    disjoint = ["a b c d e", "f g h i j", "k l m n o", "p q r s t"]
    assert self_bleu(disjoint) == pytest.approx(0.0)
    assert math.isnan(self_bleu(["alone"]))


def test_self_bleu_never_compares_a_sentence_with_itself():
    # Two distinct sentences: each is compared only with the other, which shares nothing.
    assert self_bleu(["a b c d", "e f g h"]) == pytest.approx(0.0)


def test_homotopy_statistics():
    paths = [["a b", "a b", "c d"], ["x", "y", "z"]]
    figures = homotopy_statistics(paths)
    assert figures["distinct_sentences_per_path"] == pytest.approx((2 + 3) / 2)
    assert figures["min_distinct_sentences"] == 2
    assert figures["neighbour_word_edit_distance"] == pytest.approx((0 + 2 + 1 + 1) / 4)
    # Jaccard of the word sets: {a b}~{a b} 1, {a b}~{c d} 0, x~y 0, y~z 0.
    assert figures["neighbour_word_jaccard"] == pytest.approx(1 / 4)
    assert figures["steps_with_repeated_3gram"] == 0.0
    looping = homotopy_statistics([["a b c a b c", "a b c d"]])
    assert looping["steps_with_repeated_3gram"] == 0.5
    assert looping["neighbour_word_jaccard"] == pytest.approx(3 / 4)


def test_set_statistics():
    sentences = ["a b c a b c", "<unk> d", "e f g h i j"]
    figures = set_statistics(sentences, "<unk>", length_cap=6)
    assert figures["sentences"] == 3
    assert figures["mean_length"] == pytest.approx(14 / 3)
    assert figures["hit_length_cap"] == pytest.approx(2 / 3)
    assert figures["repeated_3gram"] == pytest.approx(1 / 3)
    assert figures["unk_share"] == pytest.approx(1 / 14)
    assert figures["distinct_1"] == pytest.approx(11 / 14)
    assert set_statistics(sentences, "<unk>")["hit_length_cap"] == 0.0  # no cap given
