#!/usr/bin/env python3 -u
"""``svae-eval``: the benchmark numbers of a sentence VAE, or of a language model, on one split.

    svae-eval data-bin/brown --path checkpoints/checkpoint_best.pt --gen-subset test --iw-samples 500

For a ``sentence_vae`` checkpoint it prints the importance-weighted NLL with K posterior samples
(nats per sentence, tokens counted with end-of-sentence) and the perplexity derived from it, the
negative ELBO, reconstruction NLL, KL, mutual information I(x; z) and active units. For a
fairseq language model (``lstm_lm``) it prints the exact NLL and perplexity of the same sentences
counted the same way, so the two go in one table. ``--json FILE`` writes the numbers for scripts.

The parser is fairseq's validation parser (``--cpu``, ``--batch-size``, ``--max-tokens``,
``--user-dir``, ``--seed``, ``--gen-subset``, ``--path``, ...) plus the options below. One
difference: fairseq makes ``--max-sentences`` an alias of ``--batch-size``; here it selects a
prefix of the split, which is what a quick look at an expensive evaluation needs.
"""

import json
import logging
import math
import os
import sys
import time

import numpy as np
import torch
from fairseq import checkpoint_utils, options, utils
from fairseq.data import data_utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY, FairseqLanguageModel

import fairseq_svae  # noqa: F401  (registers the task and model: --user-dir is optional)
from fairseq_svae.checkpoint_io import DamagedCheckpointError, UnsafeCheckpointError
from fairseq_svae.errors import IncompatibleCheckpointError
from fairseq_svae.importance_sampling import active_units, mutual_information
from fairseq_svae.models.sentence_vae import SentenceVAEModel
from fairseq_svae.sentence_scorer import LanguageModelScorer, SentenceVAEScorer
from fairseq_svae.tasks.sentence_vae import SentenceVAETask, SentenceVAETaskConfig

logger = logging.getLogger("fairseq_svae.cli.evaluate")

# Sentence batches when neither --max-tokens nor --batch-size is given. The VAE repeats each
# batch for many posterior samples, so a moderate batch already fills the decoder's matmuls.
DEFAULT_MAX_TOKENS = 4096
# Logits per vocabulary-projection call. On a CPU a chunk that stays in the last-level cache
# makes the softmax pass over it about 1.5x faster than a chunk that streams through memory;
# a GPU wants large calls.
DEFAULT_LOGITS_MB = {"cpu": 8, "cuda": 256}
# The timing probe made before the run starts: sentences of one real batch of the run (the
# middle one, of typical length) with PROBE_SAMPLES posterior samples, scored 1 + PROBE_REPEATS
# times. A real batch matters: on a CPU shared with other jobs, small calls slow down far more
# than large ones (the threads wait for each other at every operation). The probe is cut to
# at most PROBE_SHARE of the run's own work.
PROBE_SAMPLES, PROBE_REPEATS, PROBE_SHARE = 2, 3, 0.05

LANGUAGE_MODEL, SENTENCE_VAE = "language model", "sentence VAE"


class TooFewSentencesError(ValueError):
    """The statistics asked for need more sentences than were selected."""


def get_parser():
    parser = options.get_validation_parser(default_task="sentence_vae")
    # The one option that means something else here than in fairseq (see the module doc):
    # "resolve" takes --max-sentences away from --batch-size, which keeps its main name.
    parser.conflict_handler = "resolve"
    group = parser.add_argument_group("svae-eval")
    # fmt: off
    group.add_argument("--iw-samples", type=int, default=500, metavar="K",
                       help="posterior samples per sentence for the importance-weighted NLL "
                            "(500 is the literature's usual figure)")
    group.add_argument("--max-sentences", type=int, default=None, metavar="N",
                       help="evaluate only the first N sentences of the split (not an alias of "
                            "--batch-size as in fairseq-train)")
    group.add_argument("--json", default=None, metavar="FILE",
                       help="also write the results to FILE as JSON")
    group.add_argument("--active-unit-threshold", type=float, default=0.01, metavar="V",
                       help="a latent dimension is active when the variance over the data of "
                            "its posterior mean exceeds V (Burda et al. 2016)")
    group.add_argument("--logits-memory-mb", type=float, default=None, metavar="MB",
                       help="size of the logits of one vocabulary-projection call (default: "
                            f"{DEFAULT_LOGITS_MB['cpu']} on a CPU, where it keeps them in cache, "
                            f"{DEFAULT_LOGITS_MB['cuda']} on a GPU)")
    # fmt: on
    return parser


# ---------------------------------------------------------------------------------------------
# Data and model


def load_split(data_dir: str, split: str):
    """The split as the sentence_vae task reads it, with every sentence kept at full length."""
    task = SentenceVAETask.setup_task(SentenceVAETaskConfig(data=data_dir))
    task.load_dataset(split)  # names the missing path and the fairseq-preprocess command
    return task, task.dataset(split)


def sentence_batches(dataset, max_sentences, max_tokens, batch_size):
    """Batches over the first ``max_sentences`` sentences (all if None), grouped by length."""
    total = len(dataset)
    if max_sentences is not None:
        if max_sentences < 1:
            raise ValueError(f"--max-sentences must be >= 1, got {max_sentences}")
        total = min(total, max_sentences)
    indices = np.arange(total, dtype=np.int64)
    # A stable sort by length: the same batches every run, with little padding.
    indices = indices[np.argsort(dataset.src_sizes[indices], kind="stable")]
    num_tokens = dataset.num_tokens_vec(indices).astype(np.int64)
    if max_tokens is None and batch_size is None:
        max_tokens = DEFAULT_MAX_TOKENS
    # batch_by_size refuses a sentence longer than max_tokens; evaluation must keep it.
    if max_tokens is not None:
        max_tokens = max(max_tokens, int(num_tokens.max()))
    return indices, data_utils.batch_by_size(
        indices, dataset.num_tokens, max_tokens=max_tokens, max_sentences=batch_size,
        num_tokens_vec=num_tokens,
    )


def model_config(state):
    if state.get("args") is not None:
        return convert_namespace_to_omegaconf(state["args"])
    return state["cfg"]


def load_model(path: str, data_dir: str, data_task):
    """(model, kind, arch) for a sentence_vae or a fairseq language model checkpoint."""
    if ":" in path or not os.path.isfile(path):
        raise FileNotFoundError(
            f"--path {path!r} is not a checkpoint file (svae-eval scores one model at a time); "
            f"pass e.g. --path checkpoints/checkpoint_best.pt"
        )
    # fairseq's loader with the plugin's weights-only protection and readable errors.
    state = checkpoint_utils.load_checkpoint_to_cpu(path, arg_overrides={"data": data_dir})
    cfg = model_config(state)
    arch = getattr(cfg.model, "arch", None) or getattr(cfg.model, "_name", None)
    model_class = ARCH_MODEL_REGISTRY.get(arch) or MODEL_REGISTRY.get(arch)
    if model_class is not None and issubclass(model_class, SentenceVAEModel):
        kind, task = SENTENCE_VAE, data_task
    elif model_class is not None and issubclass(model_class, FairseqLanguageModel):
        # The language model's own task (language_modeling) on this data directory builds it.
        kind, task = LANGUAGE_MODEL, None
    else:
        raise IncompatibleCheckpointError(
            f"{path} holds a {arch!r} model: svae-eval scores a sentence_vae or a fairseq "
            f"language model (e.g. --arch lstm_lm trained with --task language_modeling)"
        )
    try:
        models, _, _ = checkpoint_utils.load_model_ensemble_and_task([path], task=task, state=state)
    except RuntimeError as error:
        if "size mismatch" not in str(error):
            raise
        # A language model's checkpoint has no dictionary fingerprint (the sentence_vae task
        # checks one before building), so another dict.txt shows up as wrong tensor shapes.
        embedding = state["model"].get("decoder.embed_tokens.weight")
        trained_with = f"{embedding.size(0)} types" if embedding is not None else "another size"
        raise IncompatibleCheckpointError(
            f"{path} was trained with a dictionary of {trained_with}, but "
            f"{os.path.join(data_dir, 'dict.txt')} has {len(data_task.dictionary)} types. Pass the "
            f"data directory the model was trained on, or binarize your text against its dictionary: "
            f"fairseq-preprocess --only-source --srcdict TRAINING_DATA_DIR/dict.txt "
            f"--testpref test.txt --destdir NEW_DIR"
        ) from error
    return models[0], kind, arch


# ---------------------------------------------------------------------------------------------
# Time estimate


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_rate(scorer, sample, device: torch.device, repeats: int = 3) -> float:
    """FLOP/s of ``scorer`` on ``sample``: the median of a few timed calls after a warm-up.

    The median, because a machine shared with other jobs makes single calls much slower now
    and then, and one such call would make the estimate wrong by that much.
    """
    flops = int(sample["target"].ne(scorer.padding_idx).sum()) * scorer.flops_per_token()
    scorer.score(sample)
    rates = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        scorer.score(sample)
        synchronize(device)
        rates.append(flops / max(time.perf_counter() - start, 1e-9))
    return float(np.median(rates))


def matmul_rate(device: torch.device, size: int = 1024, min_seconds: float = 0.25) -> float:
    """The machine's fp32 matmul FLOP/s (size^3 products on the threads torch uses)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    torch.mm(a, b)
    synchronize(device)
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < min_seconds:
        torch.mm(a, b)
        calls += 1
        synchronize(device)
    return 2 * size**3 * calls / (time.perf_counter() - start)


def probe_sample(dataset, batches, max_tokens: float):
    """The middle batch's sentences, as many as fit in ``max_tokens`` tokens (at least 8)."""
    middle = batches[len(batches) // 2]
    within = np.cumsum(dataset.num_tokens_vec(middle)) <= max_tokens
    keep = max(min(8, len(middle)), int(within.sum()))
    return dataset.collater([dataset[int(i)] for i in middle[:keep]])


def format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


# ---------------------------------------------------------------------------------------------
# Results


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


# ---------------------------------------------------------------------------------------------


def main(args):
    use_cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if use_cuda else "cpu")
    torch.manual_seed(args.seed)

    data_task, dataset = load_split(args.data, args.gen_subset)
    model, kind, arch = load_model(args.path, args.data, data_task)
    model.eval().to(device)
    if args.fp16:
        model.half()

    indices, batches = sentence_batches(dataset, args.max_sentences, args.max_tokens, args.batch_size)
    if kind == SENTENCE_VAE and len(indices) < 2:
        raise TooFewSentencesError(
            f"a VAE's active units and mutual information need at least 2 sentences, and "
            f"{len(indices)} were selected (--max-sentences {args.max_sentences})")
    logits_mb = args.logits_memory_mb or DEFAULT_LOGITS_MB[device.type]
    vocabulary = len(data_task.dictionary)
    max_logit_rows = max(1, int(logits_mb * 2**20 / (4 * vocabulary)))

    pad = data_task.dictionary.pad()
    if kind == SENTENCE_VAE:
        scorer = SentenceVAEScorer(model, args.iw_samples, args.seed, max_logit_rows)
        probe = SentenceVAEScorer(model, min(args.iw_samples, PROBE_SAMPLES), args.seed, max_logit_rows)
    else:
        scorer = probe = LanguageModelScorer(model, pad, max_logit_rows)

    tokens = int(dataset.num_tokens_vec(indices).sum())
    total_flops = tokens * scorer.flops_per_token()
    threads = torch.get_num_threads() if device.type == "cpu" else None
    hardware = f"{threads} CPU thread{'s' if threads != 1 else ''}" if threads else "the GPU"
    machine_rate = matmul_rate(device)
    probe_tokens = PROBE_SHARE * total_flops / ((1 + PROBE_REPEATS) * probe.flops_per_token())
    probe_batch = probe_sample(dataset, batches, probe_tokens)
    model_rate = measure_rate(probe, utils.move_to_cuda(probe_batch) if use_cuda else probe_batch,
                              device, PROBE_REPEATS)
    expected = total_flops / model_rate
    logger.info(
        "%s %s (%s) on %s: %d sentences, %d tokens incl. </s>%s",
        kind, arch, args.path, f"{args.data}/{args.gen_subset}", len(indices), tokens,
        f", K = {args.iw_samples} posterior samples" if kind == SENTENCE_VAE else "",
    )
    logger.info(
        "expected time: %s (%.3g FLOPs at %.1f GFLOP/s, measured on this model with %s; "
        "fp32 matmul peak %.1f GFLOP/s)",
        format_seconds(expected), total_flops, model_rate / 1e9, hardware, machine_rate / 1e9,
    )

    samples = args.iw_samples if kind == SENTENCE_VAE else 1
    progress = tqdm_bar(total=tokens * samples, disable=args.no_progress_bar)
    start = time.perf_counter()
    results = []
    for batch in batches:
        sample = dataset.collater([dataset[int(i)] for i in batch])
        if use_cuda:
            sample = utils.move_to_cuda(sample)
        results.append(scorer.score(sample, progress=progress.update))
    synchronize(device)
    progress.close()
    seconds = time.perf_counter() - start
    achieved = total_flops / max(seconds, 1e-9)
    logger.info(
        "done in %s (expected %s): %.1f GFLOP/s, %.0f%% of the fp32 matmul peak",
        format_seconds(seconds), format_seconds(expected), achieved / 1e9, 100 * achieved / machine_rate,
    )

    summary = summarize(kind, results, args.active_unit_threshold)
    summary.update({
        "iw_samples": args.iw_samples if kind == SENTENCE_VAE else None,
        "checkpoint": args.path,
        "data": args.data,
        "split": args.gen_subset,
        "seed": args.seed,
        "flops": total_flops,
        "expected_seconds": expected,
        "seconds": seconds,
        "threads": threads,
        "matmul_peak_flops_per_second": machine_rate,
    })
    print(results_table(summary, f"{arch} ({os.path.basename(args.path)})"))
    print(f"NLL per token {summary['nll_per_token']:.4f} nats; "
          f"PPL = exp(total NLL / {tokens} tokens incl. </s>)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
            handle.write("\n")
    return summary


def tqdm_bar(total: int, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=disable, unit="tok", unit_scale=True, desc="scoring",
                dynamic_ncols=True, file=sys.stderr)


def cli_main():
    # fairseq's format, as in fairseq_cli. force: importing fairseq already logged a line, which
    # installed Python's default handler.
    logging.basicConfig(
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        level=os.environ.get("LOGLEVEL", "INFO").upper(),
        stream=sys.stdout,
        force=True,
    )
    parser = get_parser()
    args = options.parse_args_and_arch(parser)
    if args.path is None:
        parser.error("a checkpoint is needed: --path checkpoints/checkpoint_best.pt")
    if args.iw_samples < 1:
        parser.error(f"--iw-samples must be >= 1, got {args.iw_samples}")
    if args.max_sentences is not None and args.max_sentences < 1:
        parser.error(f"--max-sentences must be >= 1, got {args.max_sentences}")
    try:
        main(args)
    except (FileNotFoundError, IncompatibleCheckpointError, TooFewSentencesError,
            UnsafeCheckpointError, DamagedCheckpointError) as error:
        # What the user has to fix, without a traceback through fairseq.
        parser.exit(2, f"svae-eval: error: {error}\n")


if __name__ == "__main__":
    cli_main()
