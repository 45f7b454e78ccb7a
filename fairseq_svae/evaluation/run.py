"""One svae-eval run: load, score every batch (estimating the time on the way), report."""

import contextlib
import functools
import logging
import os
import sys

import torch
from fairseq import utils

from fairseq_svae.errors import OptionError, TooFewSentencesError
from fairseq_svae.evaluation.inputs import SENTENCE_VAE, load_model, load_split, sentence_batches
from fairseq_svae.evaluation.report import results_table, summarize, write_json
from fairseq_svae.evaluation.time_estimate import (
    ESTIMATE_SHARE,
    RunClock,
    format_seconds,
    matmul_rate,
    shuffled_order,
)
from fairseq_svae.precision import bf16_autocast, warn_unless_native_bf16
from fairseq_svae.sentence_scorer import LanguageModelScorer, SentenceVAEScorer

logger = logging.getLogger("fairseq_svae.evaluation")

# Logits per vocabulary-projection call. On a CPU a chunk that stays in the last-level cache
# makes the softmax pass over it about 1.5x faster than a chunk that streams through memory;
# a GPU wants large calls.
DEFAULT_LOGITS_MB = {"cpu": 8, "cuda": 256}

FP16_WITH_BF16 = "--fp16 and --bf16 cannot be combined: keep one"


def scoring_precision(args, model, device: torch.device):
    """("fp32" | "fp16" | "bf16", the context of the scorers' model calls); converts ``model``
    for --fp16.

    --bf16 is the plugin's autocast on either device (:mod:`fairseq_svae.precision`: the
    vocabulary projection in bf16, and the LSTMs where the hardware has a bf16 LSTM), so the
    weights stay fp32.
    """
    if args.fp16 and args.bf16:
        raise OptionError(FP16_WITH_BF16)
    if args.fp16:
        model.half()
        return "fp16", contextlib.nullcontext
    if not args.bf16:
        return "fp32", contextlib.nullcontext
    if device.type == "cpu":
        warn_unless_native_bf16("--bf16")
    return "bf16", functools.partial(bf16_autocast, device.type)


def evaluate(args) -> dict:
    """Score ``args.gen_subset`` with the checkpoint ``args.path``; print and return the figures."""
    use_cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if use_cuda else "cpu")
    torch.manual_seed(args.seed)

    data_task, dataset = load_split(args.data, args.gen_subset)
    model, kind, arch = load_model(args.path, args.data, data_task)
    model.eval().to(device)
    precision, precision_context = scoring_precision(args, model, device)

    indices, batches = sentence_batches(dataset, args.first_sentences, args.max_tokens, args.batch_size)
    if kind == SENTENCE_VAE and len(indices) < 2:
        chosen = (f"--first-sentences {args.first_sentences}" if args.first_sentences is not None
                  else f"the whole {args.gen_subset!r} split")
        raise TooFewSentencesError(
            f"a VAE's active units and mutual information need at least 2 sentences, and "
            f"{len(indices)} were selected ({chosen}); pass --first-sentences 2 or more, or a "
            f"larger --gen-subset")
    logits_mb = args.logits_memory_mb or DEFAULT_LOGITS_MB[device.type]
    vocabulary = len(data_task.dictionary)
    max_logit_rows = max(1, int(logits_mb * 2**20 / (4 * vocabulary)))

    pad = data_task.dictionary.pad()
    if kind == SENTENCE_VAE:
        scorer = SentenceVAEScorer(model, args.iw_samples, args.seed, max_logit_rows, precision_context)
    else:
        scorer = LanguageModelScorer(model, pad, max_logit_rows, precision_context)

    tokens = int(dataset.num_tokens_vec(indices).sum())
    total_flops = tokens * scorer.flops_per_token()
    threads = torch.get_num_threads() if device.type == "cpu" else None
    hardware = f"{threads} CPU thread{'s' if threads != 1 else ''}" if threads else "the GPU"
    machine_rate = matmul_rate(device)
    logger.info(
        "%s %s (%s) on %s: %d sentences, %d tokens incl. </s>%s",
        kind, arch, args.path, f"{args.data}/{args.gen_subset}", len(indices), tokens,
        f", K = {args.iw_samples} posterior samples" if kind == SENTENCE_VAE else "",
    )
    logger.info(
        "%.3g FLOPs in %s on %s (fp32 matmul peak %.1f GFLOP/s); the expected time follows "
        "once %.0f%% of them are done",
        total_flops, precision, hardware, machine_rate / 1e9, 100 * ESTIMATE_SHARE,
    )

    samples = args.iw_samples if kind == SENTENCE_VAE else 1
    results, clock = score_batches(scorer, dataset, batches, tokens * samples, total_flops, device,
                                   args.seed, args.no_progress_bar)
    seconds = clock.stop()
    achieved = total_flops / max(seconds, 1e-9)
    logger.info(
        "done in %s (expected %s): %.1f GFLOP/s, %.0f%% of the fp32 matmul peak",
        format_seconds(seconds), format_seconds(clock.expected), achieved / 1e9,
        100 * achieved / machine_rate,
    )

    summary = summarize(kind, results, args.active_unit_threshold)
    summary.update({
        "iw_samples": args.iw_samples if kind == SENTENCE_VAE else None,
        "checkpoint": args.path,
        "data": args.data,
        "split": args.gen_subset,
        "seed": args.seed,
        "precision": precision,
        "flops": total_flops,
        "expected_seconds": clock.expected,
        # The share of the work the expected time was measured on.
        "expected_from_share": clock.measured_share,
        "seconds": seconds,
        "threads": threads,
        "matmul_peak_flops_per_second": machine_rate,
    })
    print(results_table(summary, f"{arch} ({os.path.basename(args.path)})"))
    print(f"NLL per token {summary['nll_per_token']:.4f} nats; "
          f"PPL = exp(total NLL / {tokens} tokens incl. </s>)")
    if args.json:
        write_json(args.json, summary)
    return summary


def score_batches(scorer, dataset, batches, total_work: int, total_flops: float,
                  device: torch.device, seed: int, no_progress_bar: bool):
    """(each batch's results in batch order, the run's clock): the batches scored in a seeded
    random order, so that the clock's early estimate sees a fair mix of sentence lengths."""
    bar = tqdm_bar(total=total_work, disable=no_progress_bar)
    clock = RunClock(total_work, total_flops, device)

    def progress(work: int) -> None:
        bar.update(work)
        clock.update(work)

    results = [None] * len(batches)
    for position in shuffled_order(len(batches), seed):
        sample = dataset.collater([dataset[int(i)] for i in batches[position]])
        if device.type == "cuda":
            sample = utils.move_to_cuda(sample)
        results[position] = scorer.score(sample, progress=progress)
    bar.close()
    return results, clock


def tqdm_bar(total: int, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=disable, unit="tok", unit_scale=True, desc="scoring",
                dynamic_ncols=True, file=sys.stderr)
