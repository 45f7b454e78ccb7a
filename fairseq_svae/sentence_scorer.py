"""Per-sentence scores of a batch: importance-weighted terms for a sentence VAE, exact NLL for an LM.

The counterpart of fairseq's ``SequenceScorer`` for ``svae-eval``. Both scorers take the
sentence_vae task's batches (``prev_output_tokens`` = ``</s> w_1 .. w_n``, ``target`` =
``w_1 .. w_n </s>``, right-padded), which is exactly what a fairseq language model reads and
predicts with ``--sample-break-mode eos``, so both count the same n + 1 tokens per sentence.

Where the time goes: the vocabulary projection and its softmax (2 x features x vocabulary
FLOPs per token and sample). The VAE scorer therefore runs the decoder once over the batch
repeated for many posterior samples at a time (a (samples x sentences) batch) and projects only
real tokens, in row chunks small enough that the logits stay in the CPU's cache.

Both take a ``precision`` context for their model calls (svae-eval's ``--bf16`` passes an
autocast; :mod:`fairseq_svae.precision`). The softmax and all that follows it stay in fp32 or fp64
whatever the context: :func:`~fairseq_svae.token_nll.token_nll` computes in fp32, and the importance
weights and their log-sum-exp over samples (:mod:`fairseq_svae.importance_sampling`) run
outside it, in fp64.
"""

import contextlib
from typing import Callable, ContextManager, Dict, Optional

import torch
import torch.nn as nn

from fairseq_svae.errors import OptionError
from fairseq_svae.gaussian import kl_to_standard_normal
from fairseq_svae.generation.latent_draws import posterior_latents
from fairseq_svae.importance_sampling import iw_nll, log_importance_weights, sampled_neg_elbo
from fairseq_svae.models.sentence_vae_encoder import LATENT
from fairseq_svae.token_nll import token_nll

# The decoder's recurrent part runs on up to this many (sample, sentence) rows x tokens at once.
# Its memory is a few floats per hidden unit and row, tiny next to the logits, and large
# batches keep its per-step matmuls efficient.
DECODER_TOKENS_PER_CALL = 32768

Progress = Optional[Callable[[int], None]]
Precision = Callable[[], ContextManager]


def matmul_flops_per_token(module: nn.Module) -> int:
    """2 x the matrix weights a token passes through: the FLOPs of one token through ``module``.

    Counts every ``nn.Linear`` and recurrent weight matrix (embedding lookups are not matmuls).
    torch's FLOP counter does not see inside ``nn.LSTM`` on a CPU, hence this rule of thumb. For
    LSTM networks it leaves out only element-wise work (and counts a per-sentence projection,
    such as z to the initial state, as if it ran per token: a small overestimate).
    """
    weights = 0
    for submodule in module.modules():
        if isinstance(submodule, (nn.Linear, nn.LSTM, nn.LSTMCell, nn.GRU, nn.GRUCell)):
            weights += sum(
                parameter.numel() for name, parameter in submodule.named_parameters(recurse=False)
                if name.startswith("weight")
            )
    return 2 * weights


def sentence_owner(mask: torch.Tensor) -> torch.Tensor:
    """For each True position of a (rows, time) mask in row-major order, the row it belongs to."""
    rows = torch.arange(mask.size(0), device=mask.device).unsqueeze(1).expand_as(mask)
    return rows[mask]


def summed_token_nll(token_nll_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                     features: torch.Tensor, target: torch.Tensor, owner: torch.Tensor, rows: int,
                     max_rows: int) -> torch.Tensor:
    """Sum of per-token NLLs for each of ``rows`` owners, ``max_rows`` tokens per call.

    ``token_nll_fn(features, target)`` gives the NLL of each token from its decoder features;
    ``features`` (tokens, C), ``target`` and ``owner`` (tokens,). Returns (rows,) in fp32.
    """
    totals = torch.zeros(rows, dtype=torch.float32, device=features.device)
    for start in range(0, features.size(0), max_rows):
        end = start + max_rows
        totals.index_add_(0, owner[start:end], token_nll_fn(features[start:end], target[start:end]))
    return totals


def softmax_nll_fn(decoder) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-token NLL through the decoder's vocabulary projection (``output_layer``)."""
    return lambda features, target: token_nll(decoder.output_layer(features), target)


class SentenceVAEScorer:
    """Importance-weighted NLL, ELBO terms and posterior statistics of each sentence of a batch.

    Sentence i's K posterior samples come from its own stream, seeded with (seed, i), i its index
    in the split (:mod:`fairseq_svae.generation.latent_draws`): a sentence gets the same samples
    whatever the batching, thread count, device or ``--first-sentences``.
    """

    def __init__(self, model, iw_samples: int, seed: int, max_logit_rows: int,
                 precision: Precision = contextlib.nullcontext):
        if iw_samples < 1:
            raise OptionError(f"--iw-samples must be >= 1, got {iw_samples}")
        self.model = model
        self.iw_samples = iw_samples
        self.seed = seed
        self.max_logit_rows = max(1, max_logit_rows)
        self.precision = precision
        self.padding_idx = model.decoder.dictionary.pad()

    def flops_per_token(self) -> int:
        """Encoder once plus decoder once per sample (per token incl. end-of-sentence)."""
        encoder = matmul_flops_per_token(self.model.encoder)
        decoder = matmul_flops_per_token(self.model.decoder)
        if self.model.decoder.output_projection is None:  # tied: the embedding is the softmax
            weight = self.model.decoder.embed_tokens.weight
            decoder += 2 * weight.numel()
        return encoder + self.iw_samples * decoder

    def posterior_samples(self, sentence_ids, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """K samples z ~ q(z|x) for each sentence: (K, B, D), fp32, from each sentence's own stream."""
        return posterior_latents(mean, logvar, sentence_ids, self.seed, samples=self.iw_samples)

    @torch.no_grad()
    def log_likelihood(self, prev_output_tokens: torch.Tensor, target: torch.Tensor,
                       latent: torch.Tensor, progress: Progress = None) -> torch.Tensor:
        """log p(x | z_k) for every sample and sentence: latent (K, B, D) -> (K, B), fp32."""
        decoder = self.model.decoder
        samples, sentences, latent_dim = latent.shape
        is_token = target.ne(self.padding_idx)
        tokens = int(is_token.sum())
        flat_target = target[is_token]
        owner = sentence_owner(is_token)
        per_call = max(1, min(samples, DECODER_TOKENS_PER_CALL // max(tokens, 1)))
        log_likelihood = latent.new_empty(samples, sentences)
        for first in range(0, samples, per_call):
            count = min(per_call, samples - first)
            # Sample-major repetition: row s * B + b is sentence b with z = latent[first + s, b].
            z = latent[first:first + count].reshape(count * sentences, latent_dim)
            repeated_owner = (owner.unsqueeze(0) + sentences * torch.arange(
                count, device=owner.device).unsqueeze(1)).reshape(-1)
            with self.precision():
                features, _ = decoder(
                    prev_output_tokens.repeat(count, 1), encoder_out={LATENT: z}, features_only=True
                )
                nll = summed_token_nll(
                    softmax_nll_fn(decoder), features[is_token.repeat(count, 1)],
                    flat_target.repeat(count), repeated_owner, count * sentences, self.max_logit_rows,
                )
            log_likelihood[first:first + count] = -nll.view(count, sentences)
            if progress is not None:
                progress(count * tokens)
        return log_likelihood

    @torch.no_grad()
    def score(self, sample: Dict, progress: Progress = None) -> Dict[str, torch.Tensor]:
        """Per-sentence results (fp64 except the posterior statistics) keyed by what they are."""
        net_input = sample["net_input"]
        with self.precision():
            mean, logvar = self.model.encoder.posterior(net_input["src_tokens"], net_input["src_lengths"])
        latent = self.posterior_samples(sample["id"].tolist(), mean, logvar)
        log_likelihood = self.log_likelihood(
            net_input["prev_output_tokens"], sample["target"], latent, progress
        )
        log_weights = log_importance_weights(log_likelihood, latent, mean, logvar)
        return {
            "id": sample["id"],
            "tokens": sample["target"].ne(self.padding_idx).sum(dim=1),
            "iw_nll": iw_nll(log_weights),
            "rec_nll": -log_likelihood.double().mean(dim=0),
            "kl": kl_to_standard_normal(mean, logvar).sum(dim=-1).double(),
            "sampled_neg_elbo": sampled_neg_elbo(log_weights),
            "posterior_mean": mean,
            "posterior_logvar": logvar,
            # One sample per sentence for the mutual information's aggregate posterior.
            "latent": latent[0],
        }


class LanguageModelScorer:
    """Exact NLL of each sentence under a fairseq language model (e.g. ``lstm_lm``).

    The model reads ``</s> w_1 .. w_n`` from a zero state and predicts ``w_1 .. w_n </s>``:
    what ``fairseq-eval-lm --sample-break-mode eos`` scores.
    """

    def __init__(self, model, padding_idx: int, max_logit_rows: int,
                 precision: Precision = contextlib.nullcontext):
        self.model = model
        self.padding_idx = padding_idx
        self.max_logit_rows = max(1, max_logit_rows)
        self.precision = precision

    def flops_per_token(self) -> int:
        decoder = self.model.decoder
        flops = matmul_flops_per_token(decoder)
        if getattr(decoder, "share_input_output_embed", False):
            flops += 2 * decoder.embed_tokens.weight.numel()
        return flops

    def _normalized_nll(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-token NLL through fairseq's normalizer: an adaptive softmax (--criterion
        adaptive_loss) has no full logits to hand out."""
        log_probs = self.model.decoder.get_normalized_probs(
            (features.unsqueeze(0), None), log_probs=True, sample={"target": target.unsqueeze(0)}
        )[0]
        return -log_probs.float().gather(-1, target.unsqueeze(-1)).squeeze(-1)

    @torch.no_grad()
    def score(self, sample: Dict, progress: Progress = None) -> Dict[str, torch.Tensor]:
        decoder = self.model.decoder
        target = sample["target"]
        is_token = target.ne(self.padding_idx)
        if getattr(decoder, "adaptive_softmax", None) is None:
            nll_fn = softmax_nll_fn(decoder)
        else:
            nll_fn = self._normalized_nll
        with self.precision():
            features, _ = decoder.extract_features(sample["net_input"]["prev_output_tokens"])
            nll = summed_token_nll(nll_fn, features[is_token], target[is_token],
                                   sentence_owner(is_token), target.size(0), self.max_logit_rows)
        tokens = is_token.sum(dim=1)
        if progress is not None:
            progress(int(tokens.sum()))
        return {"id": sample["id"], "tokens": tokens, "nll": nll.double()}
