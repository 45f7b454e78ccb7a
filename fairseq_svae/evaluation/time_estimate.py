"""How long an evaluation will take: the model's own FLOP rate, measured on a real batch."""

import time

import numpy as np
import torch

# The timing probe made before the run starts: sentences of one real batch of the run (the
# middle one, of typical length) with PROBE_SAMPLES posterior samples, scored 1 + PROBE_REPEATS
# times. A real batch matters: on a CPU shared with other jobs, small calls slow down far more
# than large ones (the threads wait for each other at every operation). The probe is cut to
# at most PROBE_SHARE of the run's own work.
PROBE_SAMPLES, PROBE_REPEATS, PROBE_SHARE = 2, 3, 0.05


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_rate(scorer, sample, device: torch.device, repeats: int = PROBE_REPEATS) -> float:
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
