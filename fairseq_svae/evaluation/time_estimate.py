"""How long an evaluation will take, measured on the run itself.

A separate timing probe does not predict the run: its calls are not the run's calls (the VAE
scorer batches up to DECODER_TOKENS_PER_CALL sample-sentence tokens per decoder call, so with
K = 500 the real calls are large and efficient, those of a few-sample probe small and slow):
one predicted 46.9 min for 56.4 on the Brown model with K = 500, and 2.1 min for 7.5 s on a
small model. The run instead scores its batches in a seeded random
order, so that any prefix of it is a fair sample of the sentence lengths, and
:class:`RunClock` extrapolates the total time from the first ESTIMATE_SHARE of the work.
"""

import logging
import time
from typing import Optional, Tuple

import numpy as np
import torch

logger = logging.getLogger("fairseq_svae.evaluation")

# The share of the work (decoder tokens x samples) after which the total time is predicted. A
# few percent spans several real decoder calls of a large run and comes early enough to act on
# (about 2 minutes into an hour-long K = 500 evaluation).
ESTIMATE_SHARE = 0.03


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def shuffled_order(batches: int, seed: int) -> np.ndarray:
    """The order in which to score the batches: seeded, so every run of a command is alike.

    The figures do not depend on it (each sentence draws its samples from its own stream and
    results are put back in batch order); the time estimate does: the batches are sorted by
    length, and the first ones alone would be the shortest sentences.
    """
    return np.random.RandomState(seed).permutation(batches)


class RunClock:
    """Times the scoring run; ``update(work)`` is its progress callback.

    Once ``share`` of ``total_work`` is done it predicts the total time and logs it. The rate
    is measured after the first update: the first call pays one-time costs (buffers, oneDNN's
    kernels) that a long run amortizes, which made the prediction of a small run 10% too long.
    ``total_flops`` only turns that rate into FLOP/s for the log line.
    """

    def __init__(self, total_work: int, total_flops: float, device: torch.device,
                 share: float = ESTIMATE_SHARE):
        self.total_work = max(total_work, 1)
        self.total_flops = total_flops
        self.device = device
        self.share = share
        self.done = 0
        self.warm: Optional[Tuple[int, float]] = None  # (work, seconds) after the first update
        self.expected: Optional[float] = None
        self.measured_share: Optional[float] = None
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        synchronize(self.device)  # a GPU's queued kernels belong to the time spent so far
        return time.perf_counter() - self.start

    def update(self, work: int) -> None:
        self.done += work
        if self.warm is None:
            self.warm = (self.done, self.elapsed())
        elif self.expected is None and self.done >= self.share * self.total_work:
            self.estimate(self.elapsed())

    def estimate(self, elapsed: float) -> None:
        warm_work, warm_seconds = self.warm
        rate = (self.done - warm_work) / max(elapsed - warm_seconds, 1e-9)  # work per second
        self.record(warm_seconds + (self.total_work - warm_work) / rate, elapsed)

    def record(self, expected: float, elapsed: float) -> None:
        self.expected = expected
        self.measured_share = min(1.0, self.done / self.total_work)
        logger.info(
            "expected time: %s (measured on the first %.0f%% of the work, done in %s; %.1f GFLOP/s)",
            format_seconds(expected), 100 * self.measured_share, format_seconds(elapsed),
            self.total_flops / max(expected, 1e-9) / 1e9,
        )

    def stop(self) -> float:
        """Seconds since the start."""
        seconds = self.elapsed()
        if self.expected is None:  # the run ended within its first call: nothing to extrapolate
            self.record(seconds, seconds)
        return seconds


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


def format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
