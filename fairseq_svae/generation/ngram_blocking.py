"""``--no-repeat-ngram-size N`` that works on every device and every search.

fairseq 0.12's ``NGramRepeatBlock`` has a CUDA kernel and a Python fallback. The generator passes
the whole token buffer (the prefix followed by padding up to the maximum length) and the
fallback takes the buffer's last N - 1 entries as the n-gram to continue: padding, which never
matches, so on a CPU nothing is ever blocked (``--no-repeat-ngram-size 3`` leaves "the <unk> of
the <unk> of" as it is). Here the prefix is cut at the current step and every row is handled
at once with tensor operations, on any device, for beam search, sampling and the greedy fast
path alike.
"""

import math

import torch
from torch import Tensor, nn


def block_repeated_ngrams(prefix: Tensor, scores: Tensor, ngram_size: int) -> Tensor:
    """Set to -inf, in place, each word of ``scores`` that would repeat an n-gram of ``prefix``.

    ``prefix`` (rows, length) holds each row's tokens so far (fairseq's leading ``</s>``
    included); ``scores`` (rows, vocabulary) the next word's scores. A word w is blocked for a
    row when the row's last ``ngram_size - 1`` tokens followed by w already occur in its prefix.
    """
    rows, length = prefix.shape
    if ngram_size < 1 or length < ngram_size:
        return scores
    if ngram_size == 1:  # every word seen so far (after the leading </s>) is a repeated 1-gram
        row = torch.arange(rows, device=prefix.device).repeat_interleave(length - 1)
        words = prefix[:, 1:].reshape(-1)
    else:
        windows = prefix.unfold(1, ngram_size - 1, 1)  # rows x (length - n + 2) x (n - 1)
        current = windows[:, -1:, :]  # the n - 1 tokens the next word would extend
        earlier_match = (windows[:, :-1, :] == current).all(dim=-1)  # rows x (length - n + 1)
        row, start = earlier_match.nonzero(as_tuple=True)
        words = prefix[row, start + ngram_size - 1]
    if row.numel() == 0:
        return scores
    saved = scores[row, words].clone()
    scores[row, words] = -math.inf
    # A row left with no word at all had only forced choices (a word of a forced prefix, the
    # </s> at the length limit): blocking must not kill the hypothesis, so those stay.
    dead = ~torch.isfinite(scores).any(dim=-1)
    if bool(dead.any()):
        restore = dead[row]
        scores[row[restore], words[restore]] = saved[restore]
    return scores


def replace_fairseqs_blocker(generator) -> None:
    """Give a fairseq SequenceGenerator built with ``no_repeat_ngram_size`` a blocker that works
    (other generators, such as --score-reference's scorer, have none and are left as they are)."""
    if getattr(generator, "repeat_ngram_blocker", None) is not None:
        generator.repeat_ngram_blocker = PrefixNGramRepeatBlock(generator.repeat_ngram_blocker.no_repeat_ngram_size)


class PrefixNGramRepeatBlock(nn.Module):
    """Drop-in for fairseq's ``NGramRepeatBlock`` (same call) that reads only the prefix."""

    def __init__(self, ngram_size: int):
        super().__init__()
        self.no_repeat_ngram_size = ngram_size

    def forward(self, tokens: Tensor, lprobs: Tensor, bsz: int, beam_size: int, step: int) -> Tensor:
        # At step t, tokens[:, : t + 1] is the prefix: the leading </s> and t words.
        return block_repeated_ngrams(tokens[:, : step + 1], lprobs, self.no_repeat_ngram_size)
