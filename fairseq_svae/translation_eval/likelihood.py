"""-log p(y | x) of the test translations, per sentence in nats, as the brown-bench protocol counts
it (every target token and the end-of-sentence token; mean over sentences): exact for fairseq's
own models, by ``fairseq-generate --score-reference``; for a conditional VAE (``--arch
sentence_cvae``) the importance-weighted estimate with K draws (a share from p(z | x), the others
from q(z | x, y)), by
``python -m fairseq_svae.conditional_likelihood`` (:mod:`fairseq_svae.conditional_likelihood`).
"""

import json
import math
import os
import sys
import time
from typing import Sequence

from fairseq_svae.checkpoint_io import load_checkpoint_state
from fairseq_svae.errors import OptionError
from fairseq_svae.importance_sampling import prior_proposal_draws
from fairseq_svae.translation_eval.generation import (
    TRANSLATION_MOE,
    GenerationFailedError,
    generate_command,
    option_value,
    read_lines,
    run_logged,
    slug,
)

# Models whose p(y | x) is a sum over z: their NLL is estimated by importance sampling.
CONDITIONAL_VAE_ARCHS = ("sentence_cvae",)


def checkpoint_arch_and_task(path: str):
    """(arch, task) a checkpoint was trained with, read with the weights-only protection on."""
    cfg = load_checkpoint_state(path).get("cfg") or {}
    model, task = cfg.get("model"), cfg.get("task")

    def name(config, key):
        if config is None:
            return None
        # args-style models (lstm) keep an argparse.Namespace, dataclass ones a dict.
        return getattr(config, key, None) if not isinstance(config, dict) else config.get("_name")

    return name(model, "arch"), name(task, "task") or (name(model, "task") if model is not None else None)


def reference_nll(name: str, checkpoint: str, data: str, common: Sequence[str], sources: int,
                  output_dir: str, iw_samples: int, iw_prior_share: float) -> dict:
    """The exact NLL of a fairseq model, or the IW-NLL of a conditional VAE, by its arch."""
    arch, task = checkpoint_arch_and_task(checkpoint)
    if arch in CONDITIONAL_VAE_ARCHS:
        return importance_weighted_nll(name, checkpoint, data, common, sources, output_dir, iw_samples,
                                       iw_prior_share)
    return exact_nll(name, checkpoint, data, common, sources, output_dir, arch, task)


def importance_weighted_nll(name: str, checkpoint: str, data: str, common: Sequence[str], sources: int,
                            output_dir: str, samples: int, prior_share: float) -> dict:
    """The conditional VAE's IW-NLL of the split with K = ``samples`` (``prior_share`` of them from
    p(z | x)), as its own process."""
    started = time.monotonic()
    command = [sys.executable, "-m", "fairseq_svae.conditional_likelihood", data, "--path", checkpoint,
               "--gen-subset", option_value(common, "--gen-subset") or "test", "--samples", str(samples),
               "--prior-share", str(prior_share), "--seed", option_value(common, "--seed") or "1"]
    if "--cpu" in common:
        command.append("--cpu")
    path = os.path.join(output_dir, f"iw-nll-{slug(name)}.txt")
    output = run_logged(command, path, f"fairseq_svae.conditional_likelihood for --nll {name!r}")
    figures = json.loads(output.strip().splitlines()[-1])
    if figures["sentences"] != sources:
        raise GenerationFailedError(f"--nll {name!r}: scored {figures['sentences']} of {sources} sentences")
    return {
        "name": name,
        "checkpoint": checkpoint,
        "arch": CONDITIONAL_VAE_ARCHS[0],
        "method": f"importance-weighted, K = {samples}"
                  + (f" ({prior_proposal_draws(samples, prior_share)} from p(z|x))" if prior_share else ""),
        "nll_per_sentence": figures["iw_nll"],
        "ppl_per_token": figures["ppl"],
        "sentences": figures["sentences"],
        "tokens_with_eos": figures["tokens"],
        "negative_elbo": figures["sampled_neg_elbo"],
        "kl": figures["kl"],
        "file": path,
        "wall_seconds": time.monotonic() - started,
    }


def log2_scores_to_nats(scores: Sequence[float]) -> float:
    """fairseq-generate prints token log-probabilities in base 2; -(their sum) in nats."""
    return -sum(scores) * math.log(2)


def exact_nll(name: str, checkpoint: str, data: str, common: Sequence[str], sources: int, output_dir: str,
              arch: str, task: str) -> dict:
    """The exact NLL of a fairseq translation model: the per-token scores (P- lines) that
    ``fairseq-generate --score-reference`` prints for each reference, summed."""
    if task == TRANSLATION_MOE:
        raise OptionError(f"--nll {name!r}: a translation_moe checkpoint has no single p(y | x) to score "
                          f"(fairseq-generate --score-reference would read it as no expert); give an "
                          f"lstm or transformer checkpoint")
    started = time.monotonic()
    path = os.path.join(output_dir, f"score-reference-{slug(name)}.txt")
    text = run_logged(generate_command(data, checkpoint, ["--score-reference"], common), path,
                      f"fairseq-generate --score-reference for --nll {name!r}")
    scores = read_lines(text, "P", 1)
    missing = [i for i in range(sources) if i not in scores]
    if missing:
        raise GenerationFailedError(f"--nll {name!r}: fairseq-generate --score-reference scored "
                                    f"{sources - len(missing)} of {sources} sentences (first missing: {missing[0]})")
    token_scores = [[float(value) for value in scores[i][0].split()] for i in range(sources)]
    total = sum(log2_scores_to_nats(sentence) for sentence in token_scores)
    tokens = sum(len(sentence) for sentence in token_scores)
    return {
        "name": name,
        "checkpoint": checkpoint,
        "arch": arch,
        "method": "exact: fairseq-generate --score-reference",
        "nll_per_sentence": total / sources,
        "ppl_per_token": math.exp(total / tokens),
        "sentences": sources,
        "tokens_with_eos": tokens,
        "file": path,
        "wall_seconds": time.monotonic() - started,
    }
