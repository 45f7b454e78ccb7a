"""Completing sentences whose last words are missing (Bowman et al. 2016, section 5.1).

Through the latent code, as in the paper (after Rezende et al. 2014's imputation by iterating a
VAE): start from the decoder's continuation of the observed words under the posterior mean of
the observed part alone, then repeat: encode the current completed sentence, draw z from its
posterior, and decode again with the observed words forced as the prefix. The chain moves z
towards codes whose sentences agree with the observed words, so the completion can use what the
whole sentence implies rather than only the words just before the gap.

The baseline is a language model's beam-search continuation of the same words
(:func:`language_model_completions`).
"""

from typing import List, Optional

import torch
from fairseq.sequence_generator import SequenceGenerator
from torch import Tensor

from fairseq_svae.errors import OptionError
from fairseq_svae.generation.latent_draws import posterior_latents
from fairseq_svae.generation.latent_sequence_generator import latent_batch
from fairseq_svae.generation.ngram_blocking import replace_fairseqs_blocker


def prefix_batch(prefixes: List[Tensor], pad: int) -> Tensor:
    """Observed words (no ``</s>``), right-padded into one (rows, longest) tensor."""
    width = max(prefix.numel() for prefix in prefixes)
    batch = torch.full((len(prefixes), max(width, 1)), pad, dtype=torch.long)
    for row, prefix in enumerate(prefixes):
        batch[row, : prefix.numel()] = prefix
    return batch


def complete_from_latents(hub, generator, latents: Tensor, prefixes: List[Tensor]) -> List[Tensor]:
    """Each row's sentence decoded from its z with its observed words forced first (ends in </s>)."""
    dictionary = hub.dictionary
    sample = latent_batch(torch.arange(len(prefixes), device=hub.device), dictionary.eos(), latents.to(hub.device))
    prefix_tokens = prefix_batch(prefixes, dictionary.pad()).to(hub.device)
    hypos = hub.task.inference_step(generator, hub.models, sample, prefix_tokens=prefix_tokens)
    return [hypo[0]["tokens"].cpu() for hypo in hypos]


@torch.no_grad()
def impute_suffixes(hub, prefixes: List[Tensor], iterations: int = 10, seed: int = 1,
                    **generation) -> List[Tensor]:
    """Complete each prefix (word ids, no ``</s>``) through the latent code; returns full sentences
    (prefix, completion, ``</s>``) as ids."""
    if iterations < 0:
        raise OptionError(f"iterations must be >= 0, got {iterations}")
    if any(prefix.numel() == 0 for prefix in prefixes):
        raise OptionError("every sentence to complete needs at least one observed word")
    eos = hub.dictionary.eos()
    # --max-len-b bounds the completion of the longest beginning (fairseq's length limit is one
    # for the whole batch): the forced words come on top of it.
    generation = dict(generation)
    generation["max_len_b"] = int(generation.get("max_len_b") or hub.cfg.generation.max_len_b) + max(
        prefix.numel() for prefix in prefixes)
    generator = hub.build_generator(**generation)
    observed = [torch.cat([prefix, prefix.new_tensor([eos])]) for prefix in prefixes]
    means, _ = hub.encode_tokens(observed)
    sentences = complete_from_latents(hub, generator, means, prefixes)
    ids = range(len(prefixes))
    for iteration in range(iterations):
        means, logvars = hub.encode_tokens(sentences)
        # One stream per (seed, iteration), one draw per sentence: reproducible and batch-free.
        latents = posterior_latents(means, logvars, ids, seed * 1009 + iteration)
        sentences = complete_from_latents(hub, generator, latents, prefixes)
    return sentences


@torch.no_grad()
def language_model_completions(model, dictionary, prefixes: List[Tensor], beam: int = 5,
                               max_len_b: int = 200, batch_size: int = 64,
                               no_repeat_ngram_size: int = 0, unk_penalty: float = 0.0) -> List[Tensor]:
    """A fairseq language model's beam-search continuation of each prefix (full sentences as ids).

    The model reads ``</s>`` first, as it did in training with ``--sample-break-mode eos``.
    """
    # max_len_b bounds the completion of the longest beginning, as in impute_suffixes.
    longest = max(prefix.numel() for prefix in prefixes)
    generator = SequenceGenerator([model], dictionary, beam_size=beam, max_len_b=max_len_b + longest,
                                  no_repeat_ngram_size=no_repeat_ngram_size, unk_penalty=unk_penalty)
    replace_fairseqs_blocker(generator)
    device = next(model.parameters()).device
    completions: List[Optional[Tensor]] = []
    for start in range(0, len(prefixes), batch_size):
        chunk = prefixes[start:start + batch_size]
        prefix_tokens = prefix_batch(chunk, dictionary.pad()).to(device)
        # A one-token source: --max-len-b alone bounds the length, as for latent codes.
        sample = {"net_input": {"src_tokens": torch.full((len(chunk), 1), dictionary.eos(), device=device),
                                "src_lengths": torch.ones(len(chunk), dtype=torch.long, device=device)}}
        hypos = generator.generate([model], sample, prefix_tokens=prefix_tokens)
        completions.extend(hypo[0]["tokens"].cpu() for hypo in hypos)
    return completions
