"""Greedy decoding (``--beam 1``, no sampling) in two passes over the vocabulary scores per step.

fairseq's SequenceGenerator runs even a beam of one through its beam machinery: a log-softmax
written out over batch x vocabulary, a NaN scrub, a top-2 and several score bookkeeping passes,
which at Brown's 19k types cost more than the output projection itself. Greedy search needs only
the best token and its log-probability: the arg-max of the logits and their log-sum-exp. This
module does exactly fairseq's greedy search with that (same masks, length limits, length
penalty and hypothesis format; ``tests/test_generation_greedy.py`` checks it against fairseq's
own search) and drops finished sentences from the batch as fairseq does.
"""

import math
from typing import Dict, List

import torch
from torch import Tensor

from fairseq_svae.errors import OptionError
from fairseq_svae.generation.ngram_blocking import block_repeated_ngrams


def supports_fast_greedy(generator, prefix_tokens, constraints, bos_token) -> bool:
    """Whether ``generator`` (a SequenceGenerator) is set up for plain greedy search."""
    from fairseq.search import BeamSearch

    return (
        generator.beam_size == 1
        and type(generator.search) is BeamSearch  # not sampling, diverse or constrained search
        and generator.model.models_size == 1
        and prefix_tokens is None
        and constraints is None
        and bos_token is None
        and generator.lm_model is None
        and not generator.match_source_len
        and getattr(generator, "token_indices_to_suppress", None) is None
    )


@torch.no_grad()
def greedy_search(generator, sample: Dict) -> List[List[Dict[str, Tensor]]]:
    """fairseq's greedy search over ``generator``'s single model; hypotheses in its format."""
    ensemble = generator.model
    decoder = ensemble.single_model.decoder
    net_input = sample["net_input"]
    src_tokens = net_input["src_tokens"]
    batch, src_len = src_tokens.shape[:2]
    max_len = min(int(generator.max_len_a * src_len + generator.max_len_b), generator.max_len - 1)
    if generator.min_len > max_len:
        raise OptionError(
            f"--min-len {generator.min_len} is more than the longest output allowed here "
            f"({max_len} tokens, from --max-len-a/--max-len-b); lower --min-len or raise --max-len-b")
    eos, pad, unk = generator.eos, generator.pad, generator.unk

    encoder_outs = ensemble.forward_encoder(net_input)
    incremental_states = [{}]
    device = src_tokens.device
    tokens = torch.full((batch, max_len + 2), pad, dtype=torch.long, device=device)
    tokens[:, 0] = eos
    positional_scores = torch.zeros(batch, max_len + 1, device=device)
    active = torch.arange(batch, device=device)  # original rows still being decoded
    finalized: List[List[Dict[str, Tensor]]] = [[] for _ in range(batch)]

    for step in range(max_len + 1):
        # The decoder reads only the newest token; its LSTM state holds the prefix.
        logits, _ = decoder(tokens[active, step : step + 1], encoder_out=encoder_outs[0],
                            incremental_state=incremental_states[0])
        logits = logits[:, -1, :].float()
        if generator.temperature != 1.0:
            logits = logits / generator.temperature
        # fairseq masks after normalising: the log-sum-exp is over the unmasked scores.
        log_normalizer = torch.logsumexp(logits, dim=-1)
        if step >= max_len:
            best = torch.full_like(log_normalizer, eos, dtype=torch.long)
        else:
            logits[:, pad] = -math.inf
            if generator.unk_penalty:
                logits[:, unk] -= generator.unk_penalty
            if step < generator.min_len:
                logits[:, eos] = -math.inf
            if generator.repeat_ngram_blocker is not None:
                block_repeated_ngrams(tokens[active, : step + 1], logits,
                                      generator.repeat_ngram_blocker.no_repeat_ngram_size)
            best = logits.argmax(dim=-1)
        tokens[active, step + 1] = best
        positional_scores[active, step] = logits.gather(1, best.unsqueeze(1)).squeeze(1) - log_normalizer

        ended = best.eq(eos)
        if ended.any():
            for row in active[ended].tolist():
                finalized[row].append(_hypothesis(tokens[row, 1 : step + 2], positional_scores[row, : step + 1],
                                                  generator))
            keep = (~ended).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            active = active[keep]
            ensemble.reorder_incremental_state(incremental_states, keep)
            encoder_outs = ensemble.reorder_encoder_out(encoder_outs, keep)
    return finalized


def _hypothesis(tokens: Tensor, positional_scores: Tensor, generator) -> Dict[str, Tensor]:
    score = positional_scores.sum()
    if generator.normalize_scores:
        score = score / tokens.numel() ** generator.len_penalty
    return {
        "tokens": tokens.clone(),
        "score": score,
        "attention": torch.empty(0),
        "alignment": torch.empty(0),
        "positional_scores": positional_scores.clone(),
    }
