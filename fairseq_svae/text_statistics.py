"""Statistics of decoded text that tell a degenerate decoder from one a user would keep.

Each takes sentences as lists of words (what the dictionary sees: unknown words are ``<unk>``).
Low perplexity alone rewards loops, so these stand beside it: how often outputs run to the
length cap, repeat a 3-gram, or say ``<unk>``; how varied the words and word pairs are over a
set (distinct-n, Li et al. 2016); how much each output shares with the others (self-BLEU, Zhu et
al. 2018); and, for homotopies, how many different sentences a path passes through and how far
apart its neighbouring steps are.
"""

import math
import random
from typing import Dict, List, Sequence

Words = Sequence[str]


def mean_and_spread(values: Sequence[float]) -> Dict[str, float]:
    """Mean and (population) standard deviation."""
    if not values:
        return {"mean": math.nan, "std": math.nan}
    mean = sum(values) / len(values)
    return {"mean": mean, "std": math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))}


def has_repeated_ngram(words: Words, n: int = 3) -> bool:
    ngrams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(ngrams) != len(set(ngrams))


def share(flags: Sequence[bool]) -> float:
    return sum(map(bool, flags)) / len(flags) if flags else math.nan


def token_share(sentences: Sequence[Words], word: str) -> float:
    """The share of all words that are ``word`` (e.g. ``<unk>``)."""
    total = sum(len(words) for words in sentences)
    return sum(words.count(word) for words in sentences) / total if total else math.nan


def distinct_n(sentences: Sequence[Words], n: int) -> float:
    """Distinct n-grams over all n-grams in the set (Li et al. 2016)."""
    ngrams = [tuple(words[i:i + n]) for words in sentences for i in range(len(words) - n + 1)]
    return len(set(ngrams)) / len(ngrams) if ngrams else math.nan


def bleu(hypotheses: Sequence[str], reference_streams: Sequence[Sequence[str]]) -> float:
    """sacreBLEU (its default 13a tokenization) of text that is already in the model's tokens:
    these figures measure text as the dictionary sees it, so sacreBLEU's warning about
    tokenized input is answered with ``force``; the score is the same."""
    import sacrebleu

    return sacrebleu.corpus_bleu(list(hypotheses), [list(stream) for stream in reference_streams], force=True).score


def self_bleu(sentences: Sequence[str], max_references: int = 0, seed: int = 1) -> float:
    """sacreBLEU of each sentence against the other sentences of the set, over the whole set.

    ``max_references`` > 0 compares each sentence with that many others chosen at random
    (seeded) instead of all of them: with N sentences the full figure extracts N x (N - 1)
    references.
    """
    count = len(sentences)
    if count < 2:
        return math.nan
    others = count - 1 if max_references <= 0 else min(max_references, count - 1)
    # Reference stream j gives sentence i the sentence (i + offset_j) mod N, offsets distinct
    # and non-zero, so no sentence is ever its own reference.
    offsets = list(range(1, count)) if others == count - 1 else random.Random(seed).sample(range(1, count), others)
    streams = [[sentences[(i + offset) % count] for i in range(count)] for offset in offsets]
    return bleu(sentences, streams)


def word_edit_distance(first: Words, second: Words) -> int:
    """Levenshtein distance in words (insertions, deletions and substitutions cost 1)."""
    previous = list(range(len(second) + 1))
    for i, word in enumerate(first, start=1):
        current = [i]
        for j, other in enumerate(second, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other)))
        previous = current
    return previous[-1]


def word_jaccard(first: Sequence[str], second: Sequence[str]) -> float:
    """Shared words over all words of two sentences (as sets); 1 for two empty sentences."""
    a, b = set(first), set(second)
    return len(a & b) / len(a | b) if a | b else 1.0


def homotopy_statistics(paths: Sequence[Sequence[str]]) -> Dict[str, float]:
    """Distinct sentences per path, and between neighbouring steps the word edit distance and the
    word Jaccard similarity (means); the share of steps with a repeated 3-gram."""
    distinct = [len(set(path)) for path in paths]
    pairs = [(a.split(), b.split()) for path in paths for a, b in zip(path, path[1:])]
    return {
        "distinct_sentences_per_path": mean_and_spread(distinct)["mean"],
        "min_distinct_sentences": min(distinct) if distinct else math.nan,
        "neighbour_word_edit_distance": mean_and_spread([word_edit_distance(a, b) for a, b in pairs])["mean"],
        "neighbour_word_jaccard": mean_and_spread([word_jaccard(a, b) for a, b in pairs])["mean"],
        "steps_with_repeated_3gram": share([has_repeated_ngram(step.split(), 3) for path in paths for step in path]),
    }


def set_statistics(sentences: Sequence[str], unk_word: str, length_cap: int = 0,
                   self_bleu_references: int = 0, seed: int = 1) -> Dict[str, float]:
    """The figures of one set of sentences (plain strings of space-separated words).

    ``length_cap`` > 0: the number of words at which generation was cut off; a sentence of that
    many words hit the cap.
    """
    words: List[List[str]] = [sentence.split() for sentence in sentences]
    lengths = [len(w) for w in words]
    spread = mean_and_spread(lengths)
    return {
        "sentences": len(words),
        "mean_length": spread["mean"],
        "length_std": spread["std"],
        "hit_length_cap": share([n >= length_cap for n in lengths]) if length_cap > 0 else 0.0,
        "repeated_3gram": share([has_repeated_ngram(w, 3) for w in words]),
        "unk_share": token_share(words, unk_word),
        "distinct_1": distinct_n(words, 1),
        "distinct_2": distinct_n(words, 2),
        "self_bleu": self_bleu(sentences, self_bleu_references, seed),
    }
