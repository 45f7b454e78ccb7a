"""One svae-eval run: load, estimate the time, score every batch, report."""

import logging
import os
import sys
import time

import torch
from fairseq import utils

from fairseq_svae.errors import TooFewSentencesError
from fairseq_svae.evaluation.inputs import SENTENCE_VAE, load_model, load_split, sentence_batches
from fairseq_svae.evaluation.report import results_table, summarize, write_json
from fairseq_svae.evaluation.time_estimate import (
    PROBE_REPEATS,
    PROBE_SAMPLES,
    PROBE_SHARE,
    format_seconds,
    matmul_rate,
    measure_rate,
    probe_sample,
    synchronize,
)
from fairseq_svae.sentence_scorer import LanguageModelScorer, SentenceVAEScorer

logger = logging.getLogger("fairseq_svae.evaluation")

# Logits per vocabulary-projection call. On a CPU a chunk that stays in the last-level cache
# makes the softmax pass over it about 1.5x faster than a chunk that streams through memory;
# a GPU wants large calls.
DEFAULT_LOGITS_MB = {"cpu": 8, "cuda": 256}


def evaluate(args) -> dict:
    """Score ``args.gen_subset`` with the checkpoint ``args.path``; print and return the figures."""
    use_cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if use_cuda else "cpu")
    torch.manual_seed(args.seed)

    data_task, dataset = load_split(args.data, args.gen_subset)
    model, kind, arch = load_model(args.path, args.data, data_task)
    model.eval().to(device)
    if args.fp16:
        model.half()

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
        write_json(args.json, summary)
    return summary


def tqdm_bar(total: int, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=disable, unit="tok", unit_scale=True, desc="scoring",
                dynamic_ncols=True, file=sys.stderr)
