"""svae-eval's figures: per-sentence scores summed into the benchmark numbers, and their table."""

import json
import math

import torch

from fairseq_svae.evaluation.inputs import LANGUAGE_MODEL
from fairseq_svae.importance_sampling import active_units, mutual_information


def summarize(kind, results, threshold):
    def cat(key):
        return torch.cat([r[key].cpu() for r in results])

    tokens = int(cat("tokens").sum())
    sentences = int(cat("tokens").numel())
    if kind == LANGUAGE_MODEL:
        total_nll = float(cat("nll").sum())
        return {
            "model": "language_model",
            "nll": total_nll / sentences,
            "exact_nll": True,
            "ppl": math.exp(total_nll / tokens),
            "nll_per_token": total_nll / tokens,
            "sentences": sentences,
            "tokens": tokens,
        }
    mean, logvar = cat("posterior_mean"), cat("posterior_logvar")
    total_iw = float(cat("iw_nll").sum())
    rec_nll, kl = float(cat("rec_nll").mean()), float(cat("kl").mean())
    units, variance = active_units(mean, threshold)
    return {
        "model": "sentence_vae",
        "iw_nll": total_iw / sentences,
        "nll": total_iw / sentences,
        "exact_nll": False,
        "ppl": math.exp(total_iw / tokens),
        "nll_per_token": total_iw / tokens,
        "neg_elbo": rec_nll + kl,
        "rec_nll": rec_nll,
        "kl": kl,
        # The negative ELBO with the KL estimated from the same samples as the IW-NLL; by
        # Jensen's inequality it is never below it.
        "neg_elbo_sampled": float(cat("sampled_neg_elbo").mean()),
        "mi": mutual_information(mean, logvar, cat("latent")),
        "active_units": units,
        "active_unit_threshold": threshold,
        "latent_dim": int(mean.size(1)),
        "posterior_mean_variance": [round(float(v), 6) for v in variance],
        "sentences": sentences,
        "tokens": tokens,
    }


def results_table(summary, label: str) -> str:
    """A markdown table whose columns are the same for a VAE and a language model."""
    def cell(key, digits=2):
        value = summary.get(key)
        return "–" if value is None else f"{value:.{digits}f}"

    if summary["model"] == "language_model":
        nll = f"{summary['nll']:.2f} (exact)"
        units = "–"
    else:
        nll = f"{summary['iw_nll']:.2f} (IW, K={summary['iw_samples']})"
        units = f"{summary['active_units']}/{summary['latent_dim']}"
    header = ["model", "sentences", "tokens", "NLL", "PPL", "neg. ELBO", "rec. NLL", "KL",
              "MI", "active units"]
    row = [label, str(summary["sentences"]), str(summary["tokens"]), nll, cell("ppl"),
           cell("neg_elbo"), cell("rec_nll"), cell("kl"), cell("mi"), units]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), "| " + " | ".join(row) + " |"]
    return "\n".join(lines)


def write_json(path: str, figures: dict) -> None:
    """``--json FILE`` of svae-eval and svae-report: the figures, indented, one trailing newline."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(figures, handle, indent=2)
        handle.write("\n")
