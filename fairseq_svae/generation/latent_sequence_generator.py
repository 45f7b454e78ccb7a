"""fairseq's SequenceGenerator, decoding each sentence from a chosen latent code z.

The search itself (greedy, beam, ``--sampling``, ``--temperature``, length limits) is fairseq's
own, with the decoder's incremental state: only the choice of z is ours. Given
``net_input[LATENT]`` (the keyword of ``SentenceVAEEncoder.forward``), the encoder hands that z
to the decoder instead of reading the sentence, so this class puts the chosen z into the batch. Two parts are faster equivalents: plain
greedy search (``--beam 1`` without sampling), which :mod:`greedy_search` does in fewer passes
over the scores, and ``--sampling``'s draw (:mod:`sampling_search`).
"""

from typing import Dict, Optional

import torch
from fairseq.search import Sampling
from fairseq.sequence_generator import SequenceGenerator
from torch import Tensor

from fairseq_svae.errors import IncompatibleCheckpointError, OptionError
from fairseq_svae.generation.greedy_search import greedy_search, supports_fast_greedy
from fairseq_svae.generation.latent_draws import posterior_latents, prior_latents
from fairseq_svae.generation.ngram_blocking import replace_fairseqs_blocker
from fairseq_svae.generation.sampling_search import InverseCdfSampling
from fairseq_svae.models.sentence_vae_encoder import LATENT

# Where the z a sentence is decoded from comes from (the values of --reconstruct-from, and the
# prior for --sample-from-prior).
FROM_POSTERIOR_MEAN = "posterior_mean"
FROM_POSTERIOR_SAMPLE = "posterior_sample"
FROM_PRIOR = "prior"
LATENT_SOURCES = (FROM_POSTERIOR_MEAN, FROM_POSTERIOR_SAMPLE, FROM_PRIOR)


def latent_batch(ids: Tensor, eos: int, latent: Optional[Tensor] = None) -> Dict:
    """A batch with no source sentence: one output sentence per id, decoded from z.

    fairseq's generator sizes the search from ``src_tokens``; a column of ``</s>`` gives it the
    batch size and a source length of 1 (so ``--max-len-b`` alone bounds the output length).
    The encoder never reads these tokens once it has z.
    """
    batch = ids.numel()
    net_input = {
        "src_tokens": torch.full((batch, 1), eos, dtype=torch.long, device=ids.device),
        "src_lengths": torch.ones(batch, dtype=torch.long, device=ids.device),
    }
    if latent is not None:
        net_input[LATENT] = latent
    return {"id": ids, "nsentences": batch, "ntokens": 0, "net_input": net_input, "target": None}


class LatentSequenceGenerator(SequenceGenerator):
    """Decodes from the posterior mean, a posterior sample, a prior sample, or a given z.

    - a batch that already carries ``net_input["latent"]`` is decoded from it (interpolation,
      attribute shifts, the hub);
    - ``posterior_mean``: the encoder's default, deterministic reconstruction;
    - ``posterior_sample``: one z ~ q(z|x) per sentence;
    - ``prior``: one z ~ N(0, I) per sample id, or from ``fitted_prior`` (a
      :class:`~fairseq_svae.fitted_prior.FittedPrior`) when given; the sentence is not read.

    Drawn codes come from (``seed``, sample id) streams (see :mod:`latent_draws`), so they do
    not depend on batching or on the search.
    """

    def __init__(self, models, tgt_dict, latent_source: str = FROM_POSTERIOR_MEAN, seed: int = 1,
                 shared_sampling_noise: bool = False, fitted_prior=None, **kwargs):
        super().__init__(models, tgt_dict, **kwargs)
        if latent_source not in LATENT_SOURCES:
            raise OptionError(f"the latent source must be one of {', '.join(LATENT_SOURCES)}, got {latent_source!r}")
        if latent_source != FROM_POSTERIOR_MEAN and self.model.models_size > 1:
            # Each model of an ensemble has its own latent space: one z means nothing to the others.
            raise IncompatibleCheckpointError(
                f"decoding from a drawn z ({latent_source}) needs a single model, got an ensemble "
                f"of {self.model.models_size}; pass one checkpoint to --path"
            )
        self.latent_source = latent_source
        self.fitted_prior = fitted_prior
        self.seed = 1 if seed is None else seed
        replace_fairseqs_blocker(self)  # fairseq's CPU fallback never blocks anything
        if type(self.search) is Sampling:
            # Same distribution, one uniform draw per word instead of one per vocabulary entry.
            self.search = InverseCdfSampling(tgt_dict, self.search.sampling_topk, self.search.sampling_topp,
                                             shared_noise_seed=self.seed if shared_sampling_noise else None)

    def _generate(self, sample, prefix_tokens=None, constraints=None, bos_token=None):
        net_input = sample["net_input"]
        if net_input.get(LATENT) is None and self.latent_source != FROM_POSTERIOR_MEAN:
            latent = self.draw_latent(sample)
            sample = dict(sample, net_input=dict(net_input, **{LATENT: latent}))
        if supports_fast_greedy(self, prefix_tokens, constraints, bos_token):
            return greedy_search(self, sample)
        return super()._generate(sample, prefix_tokens=prefix_tokens, constraints=constraints,
                                 bos_token=bos_token)

    @torch.no_grad()
    def draw_latent(self, sample) -> Tensor:
        model = self.model.single_model
        ids = sample["id"].tolist()
        device = sample["net_input"]["src_tokens"].device
        if self.latent_source == FROM_PRIOR:
            if self.fitted_prior is not None:
                return self.fitted_prior.latents(ids, self.seed, device=device)
            return prior_latents(ids, model.latent_dim, self.seed, device=device)
        net_input = sample["net_input"]
        mean, logvar = model.encoder.posterior(net_input["src_tokens"], net_input["src_lengths"])
        return posterior_latents(mean, logvar, ids, self.seed)
