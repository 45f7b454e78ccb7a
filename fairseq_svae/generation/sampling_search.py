"""fairseq's ``--sampling`` search with words drawn by inverse CDF instead of ``torch.multinomial``.

On CPU, ``torch.multinomial`` draws one exponential random variate for every vocabulary entry of
every row (the exponential-race method): at a batch of 200 and Brown's 19k types that is about
4 million variates per step, half the time of a whole generation step, more than the output
projection. Inverse-CDF sampling draws from the same categorical distribution with one uniform
variate per draw, a cumulative sum and a binary search. What is sampled from (temperature,
``--sampling-topk``, ``--sampling-topp``) and the scores reported are fairseq's
``search.Sampling``: this class changes how the draw is made and, for top-p, finds the same set
of words without sorting the whole vocabulary at every step.
"""

from typing import Optional, Tuple

import numpy as np
import torch
from fairseq.search import Sampling
from torch import Tensor


def draw_categorical(weights: Tensor, draws: int = 1, uniforms: Optional[Tensor] = None) -> Tensor:
    """``draws`` indices per row of ``weights`` (rows x n), each with probability proportional
    to its weight (non-negative, not necessarily normalized), independently, with replacement.
    Uses torch's global generator, so fairseq's ``--seed`` makes the draws reproducible, unless
    ``uniforms`` (``draws`` numbers in [0, 1), shared by every row) are given."""
    # Float64 sums keep the cumulative distribution exact enough for every weight to count.
    cdf = weights.cumsum(dim=-1, dtype=torch.float64)
    if uniforms is None:
        uniforms = torch.rand(cdf.size(0), draws, dtype=torch.float64, device=weights.device)
    else:
        uniforms = uniforms.to(device=weights.device, dtype=torch.float64).view(1, draws)
    targets = uniforms * cdf[:, -1:]
    # The first index whose cumulative weight exceeds the target: a zero weight never qualifies.
    # A target that rounds up to the total (probability ~1e-16) would point past the end.
    return torch.searchsorted(cdf, targets, right=True).clamp_(max=weights.size(-1) - 1)


def shared_uniforms(seed: int, step: int, draws: int) -> Tensor:
    """The ``draws`` uniform numbers of decoding step ``step`` under ``seed``, the same for every
    sentence (numpy's SeedSequence hashes the pair, as for the latent draws)."""
    state = np.random.SeedSequence([int(seed), 104729, int(step)]).generate_state(1, np.uint64)[0]
    return torch.rand(draws, dtype=torch.float64, generator=torch.Generator().manual_seed(int(state)))


class InverseCdfSampling(Sampling):
    """``search.Sampling`` with :func:`draw_categorical` as its draw.

    With ``shared_noise_seed``, every sentence draws its word at step t with the same uniform
    number u_t (common random numbers): a code then always decodes to the same sentence, whatever
    the batch it is in, and two nearby codes, whose next-word distributions differ a little, pick
    the same words until the point where their distributions place u_t differently. That makes
    sampled reconstructions reproducible and homotopies change gradually.
    """

    def __init__(self, tgt_dict, sampling_topk: int = -1, sampling_topp: float = -1.0,
                 shared_noise_seed: Optional[int] = None):
        super().__init__(tgt_dict, sampling_topk, sampling_topp)
        self.shared_noise_seed = shared_noise_seed

    # --sampling-topp looks for its set among this many most likely words first; only the rows where
    # they hold less than p of the mass sort the whole vocabulary (fairseq sorts every row).
    topp_candidates = 256

    def _sample_topp(self, lprobs: Tensor) -> Tuple[Tensor, Tensor]:
        """fairseq's top-p set (the most likely words until their mass exceeds p, the word that
        crosses p included) as (probabilities, word ids), zero-padded to the widest row's set."""
        shape = lprobs.shape
        probs = lprobs.exp().view(-1, shape[-1])
        width = min(self.topp_candidates, shape[-1])
        sorted_probs, words = probs.topk(width)  # descending
        mass_so_far = sorted_probs.cumsum(-1)
        short = mass_so_far[:, -1] < self.sampling_topp  # rows whose set reaches past `width` words
        if width < shape[-1] and bool(short.any()):
            wide_probs, wide_words = probs[short].sort(descending=True)
            sorted_probs = torch.cat([sorted_probs, sorted_probs.new_zeros(len(probs), shape[-1] - width)], -1)
            words = torch.cat([words, words.new_zeros(len(probs), shape[-1] - width)], -1)
            sorted_probs[short], words[short] = wide_probs, wide_words
            mass_so_far = sorted_probs.cumsum(-1)
        kept = (mass_so_far < self.sampling_topp).sum(-1, keepdim=True) + 1
        kept.clamp_(max=sorted_probs.size(-1))
        set_width = int(kept.max())
        sorted_probs, words = sorted_probs[:, :set_width], words[:, :set_width]
        outside = torch.arange(set_width, device=kept.device) >= kept
        return (sorted_probs.masked_fill(outside, 0.0).view(*shape[:-1], set_width),
                words.view(*shape[:-1], set_width))

    def _weights_and_words(self, lprobs: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """What to sample from: (weights, their word ids), or (weights over the vocabulary, None)."""
        if self.sampling_topp > 0:
            return self._sample_topp(lprobs)
        if self.sampling_topk > 0:
            top_lprobs, words = lprobs.topk(self.sampling_topk)
            return top_lprobs.exp_(), words
        return lprobs.exp_(), None

    def step(self, step: int, lprobs: Tensor, scores: Tensor, prev_output_tokens: Optional[Tensor] = None,
             original_batch_idxs: Optional[Tensor] = None):
        bsz, beam_size, _ = lprobs.size()
        if step == 0:
            # Every beam of a sentence is still the same (empty) hypothesis: draw all the beams'
            # first words from the first one.
            lprobs = lprobs[:, :1, :].contiguous()
        # Before the weights: plain sampling exponentiates lprobs in place, as fairseq's does.
        best_lprob, best_word = lprobs.reshape(-1, lprobs.size(-1)).max(dim=-1)
        weights, words = self._weights_and_words(lprobs)
        rows = weights.view(-1, weights.size(-1))
        # A row whose every candidate underflowed to probability 0 (a forced word of a given
        # beginning that the model finds very unlikely) would draw a word of probability 0 and end
        # its hypothesis at -inf: it takes its most likely candidate instead.
        stuck = rows.sum(dim=-1) <= 0
        if bool(stuck.any()):
            rows[stuck] = 0.0
            rows[stuck, best_word[stuck] if words is None else 0] = 1.0  # top-k/top-p lists come sorted
        draws = beam_size if step == 0 else 1
        uniforms = None if self.shared_noise_seed is None else shared_uniforms(self.shared_noise_seed, step, draws)
        choice = draw_categorical(rows, draws=draws, uniforms=uniforms).view(bsz, beam_size, 1)
        if step == 0:
            weights = weights.expand(bsz, beam_size, -1)
            words = None if words is None else words.expand(bsz, beam_size, -1)
        step_scores = weights.gather(2, choice).log_().view(bsz, beam_size)
        if bool(stuck.any()):
            rows_per_sentence = 1 if step == 0 else beam_size
            stuck_scores = best_lprob.view(bsz, rows_per_sentence).expand(bsz, beam_size)
            stuck = stuck.view(bsz, rows_per_sentence).expand(bsz, beam_size)
            step_scores = torch.where(stuck, stuck_scores, step_scores)
        tokens = choice.view(bsz, beam_size) if words is None else words.gather(2, choice).view(bsz, beam_size)
        if step == 0:
            beams = torch.zeros_like(tokens)  # all drawn from beam 0
        else:
            # Each beam continues its own hypothesis; scores are cumulative, as in fairseq.
            beams = torch.arange(beam_size, device=tokens.device).repeat(bsz, 1)
            step_scores.add_(scores[:, :, step - 1])
        return step_scores, tokens, beams
