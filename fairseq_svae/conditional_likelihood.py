"""Importance-weighted estimates of log p(y|x) for a conditional VAE (``--arch sentence_cvae``).

    log p(y|x) >= log (1/K) sum_k p(y|x, z_k) p(z_k|x) / q(z_k|x, y),   z_k ~ q(z|x, y)

(Burda et al. 2016, conditioned on the source). The bound tightens as K grows; with K = 1 it is
the one-sample ELBO. The log-weights and their log-mean-exp come from
:mod:`fairseq_svae.importance_sampling` and :mod:`fairseq_svae.gaussian`, so the figures are
comparable with ``svae-eval``'s for the unconditional model.

API (all figures in nats):

- :func:`conditional_log_weights` ``(model, sample, samples, seed) -> (K, B)`` fp64 log-weights
  for one fairseq translation batch (``sample`` as ``--task translation`` collates it, on the
  model's device). z_k of sentence i is the k-th draw of sample id i's own stream under
  ``seed`` (:mod:`fairseq_svae.generation.latent_draws`), so the estimate of a sentence does not
  depend on the batching; the first K' draws of a run with K > K' are that run's draws.
- :func:`conditional_iw_nll` ``(model, sample, samples, seed) -> dict`` of per-sentence tensors
  (B,): ``iw_nll`` (-log p(y|x) estimate), ``sampled_neg_elbo`` (the negative ELBO from the
  same draws, never below ``iw_nll``), ``kl`` (analytic KL(q || p)), ``tokens`` (target tokens,
  end-of-sentence included).
- :func:`score_split` ``(checkpoint, data, split="test", samples=100, seed=1, ...) -> dict`` of
  totals over a binarized split: ``sentences``, ``tokens``, ``iw_nll`` (per sentence),
  ``iw_nll_per_token``, ``ppl`` (exp of the per-token figure), ``sampled_neg_elbo`` and ``kl``
  (per sentence), ``samples``, ``seed``.
- command line: ``python -m fairseq_svae.conditional_likelihood DATA --path CHECKPOINT
  [--gen-subset test] [--samples 100] [--seed 1] [--source-lang en --target-lang de]
  [--batch-size 32] [--cpu]`` prints :func:`score_split`'s dict as one JSON line.

The exact NLL of a fairseq ``lstm`` on the same split (for comparison) is fairseq-validate's
``loss`` (base 2, per token) times ln 2 per token, or the sum of fairseq-generate
``--score-reference``'s scores.
"""

import argparse
import json
import math
from typing import Dict, Optional

import torch
from fairseq import checkpoint_utils, utils
from torch import Tensor

from fairseq_svae.errors import IncompatibleCheckpointError, OptionError, exit_on_user_error
from fairseq_svae.gaussian import gaussian_log_density, kl_between_gaussians
from fairseq_svae.generation.latent_draws import posterior_latents
from fairseq_svae.importance_sampling import iw_nll, sampled_neg_elbo
from fairseq_svae.models.sentence_cvae import PRIOR_LOGVAR, PRIOR_MEAN, is_conditional_vae
from fairseq_svae.models.sentence_vae_encoder import LATENT
from fairseq_svae.token_nll import token_nll

# Decoder rows (sentences x samples) scored in one pass: bounds the memory of the logits.
DEFAULT_ROWS_PER_PASS = 2048


@torch.no_grad()
def conditional_log_weights(model, sample: Dict, samples: int, seed: int,
                            rows_per_pass: int = DEFAULT_ROWS_PER_PASS) -> Tensor:
    """log w_k = log p(y|x, z_k) + log p(z_k|x) - log q(z_k|x, y), (K, B) in fp64."""
    if not is_conditional_vae(model):
        raise IncompatibleCheckpointError(
            f"conditional likelihoods need a conditional VAE (--arch sentence_cvae), got {type(model).__name__}")
    if samples < 1:
        raise OptionError(f"the number of importance samples must be at least 1, got {samples}")
    model.eval()
    net_input = sample["net_input"]
    target, prev_output_tokens = sample["target"], net_input["prev_output_tokens"]
    batch = target.size(0)
    encoder_out = model.encoder(net_input["src_tokens"], net_input["src_lengths"])
    mean, logvar = model.encoder.posterior(encoder_out, prev_output_tokens)
    latents = posterior_latents(mean, logvar, sample["id"].tolist(), seed, samples=samples)  # K x B x D

    log_likelihood = torch.empty(samples, batch, dtype=torch.float64, device=target.device)
    is_token = target.ne(model.decoder.dictionary.pad())
    per_pass = max(1, rows_per_pass // max(batch, 1))
    for start in range(0, samples, per_pass):
        draws = latents[start:start + per_pass]  # k x B x D, row k * B + b
        k = draws.size(0)
        order = torch.arange(batch, device=target.device).repeat(k)
        expanded = model.encoder.reorder_encoder_out(encoder_out, order)
        expanded[LATENT] = draws.reshape(k * batch, -1)
        features, _ = model.decoder(prev_output_tokens.repeat(k, 1), encoder_out=expanded, features_only=True)
        mask = is_token.repeat(k, 1)
        nll = torch.zeros(mask.shape, dtype=torch.float32, device=target.device)
        nll[mask] = token_nll(model.decoder.output_layer(features[mask]), target.repeat(k, 1)[mask])
        log_likelihood[start:start + k] = -nll.sum(dim=1).double().view(k, batch)

    log_prior = gaussian_log_density(latents, encoder_out[PRIOR_MEAN].unsqueeze(0), encoder_out[PRIOR_LOGVAR].unsqueeze(0))
    log_posterior = gaussian_log_density(latents, mean.unsqueeze(0), logvar.unsqueeze(0))
    return log_likelihood + log_prior.double() - log_posterior.double()


@torch.no_grad()
def conditional_iw_nll(model, sample: Dict, samples: int, seed: int) -> Dict[str, Tensor]:
    """Per-sentence ``iw_nll``, ``sampled_neg_elbo``, ``kl`` and ``tokens`` of one batch (see the module)."""
    log_weights = conditional_log_weights(model, sample, samples, seed)
    net_input = sample["net_input"]
    encoder_out = model.encoder(net_input["src_tokens"], net_input["src_lengths"])
    mean, logvar = model.encoder.posterior(encoder_out, net_input["prev_output_tokens"])
    kl = kl_between_gaussians(mean, logvar, encoder_out[PRIOR_MEAN], encoder_out[PRIOR_LOGVAR]).sum(-1)
    return {
        "iw_nll": iw_nll(log_weights),
        "sampled_neg_elbo": sampled_neg_elbo(log_weights),
        "kl": kl.double(),
        "tokens": sample["target"].ne(model.decoder.dictionary.pad()).sum(dim=1),
    }


def score_split(checkpoint: str, data: str, split: str = "test", samples: int = 100, seed: int = 1,
                source_lang: Optional[str] = None, target_lang: Optional[str] = None,
                batch_size: int = 32, cpu: bool = False) -> Dict[str, float]:
    """Totals of :func:`conditional_iw_nll` over a binarized split (see the module docstring)."""
    overrides = {"data": data}
    if source_lang:
        overrides["source_lang"] = source_lang
    if target_lang:
        overrides["target_lang"] = target_lang
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides=overrides)
    model = models[0]
    if torch.cuda.is_available() and not cpu:
        model.cuda()
    task.load_dataset(split)
    iterator = task.get_batch_iterator(
        dataset=task.dataset(split), max_sentences=batch_size,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions()),
        ignore_invalid_inputs=False, seed=seed,
    ).next_epoch_itr(shuffle=False)
    totals = {"sentences": 0, "tokens": 0, "iw_nll": 0.0, "sampled_neg_elbo": 0.0, "kl": 0.0}
    for sample in iterator:
        if not sample:
            continue
        if next(model.parameters()).is_cuda:
            sample = utils.move_to_cuda(sample)
        scores = conditional_iw_nll(model, sample, samples, seed)
        totals["sentences"] += int(sample["target"].size(0))
        totals["tokens"] += int(scores["tokens"].sum())
        for key in ("iw_nll", "sampled_neg_elbo", "kl"):
            totals[key] += float(scores[key].sum())
    sentences, tokens = max(totals["sentences"], 1), max(totals["tokens"], 1)
    return {
        "split": split,
        "sentences": totals["sentences"],
        "tokens": totals["tokens"],
        "samples": samples,
        "seed": seed,
        "iw_nll": totals["iw_nll"] / sentences,
        "iw_nll_per_token": totals["iw_nll"] / tokens,
        "ppl": math.exp(totals["iw_nll"] / tokens),
        "sampled_neg_elbo": totals["sampled_neg_elbo"] / sentences,
        "kl": totals["kl"] / sentences,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fairseq_svae.conditional_likelihood",
        description="Importance-weighted -log p(y|x) of a conditional VAE on a binarized translation split.")
    parser.add_argument("data", help="the fairseq-preprocess directory (--source-lang/--target-lang pairs)")
    parser.add_argument("--path", required=True, help="the sentence_cvae checkpoint")
    parser.add_argument("--gen-subset", default="test", help="the split to score")
    parser.add_argument("--samples", type=int, default=100, help="importance samples K per sentence")
    parser.add_argument("--seed", type=int, default=1, help="seeds the draws z_k ~ q(z|x, y)")
    parser.add_argument("--source-lang", default=None)
    parser.add_argument("--target-lang", default=None)
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per batch")
    parser.add_argument("--cpu", action="store_true", help="score on the CPU even if a GPU is there")
    args = parser.parse_args(argv)
    import fairseq_svae  # noqa: F401  (registers the model, loads checkpoints safely)

    print(json.dumps(score_split(args.path, args.data, args.gen_subset, args.samples, args.seed,
                                 args.source_lang, args.target_lang, args.batch_size, args.cpu)))


if __name__ == "__main__":
    exit_on_user_error(main, "python -m fairseq_svae.conditional_likelihood")
