"""bfloat16 training and scoring: the plugin's own switch, because fairseq 0.12's ``--bf16`` means a TPU.

The one home of how the plugin computes in bf16 (training through the task's ``--bf16-autocast``,
``svae-eval --bf16``), on a CPU or a GPU:

- The large matrix products (the vocabulary projection and any projection before it) run under
  ``torch.autocast("cpu", dtype=torch.bfloat16)``; their backward passes follow in bf16.
- Master weights, optimizer state, gradients of the weights, the softmax cross entropy
  (:mod:`fairseq_svae.token_nll`), the KL and every Gaussian formula stay in fp32
  (:mod:`fairseq_svae.gaussian` casts its inputs).
- The small projections to and from z run in fp32 (:func:`full_precision`): the posterior
  head's mean and log-variance set the KL.
- The LSTMs (:func:`recurrent_precision`) run in bf16 where the hardware has a bf16 LSTM: on CPUs
  with AVX512-BF16 or AMX (oneDNN's, about 1.6x its fp32 speed there; the LSTMs are a fifth of
  the matrix work of a training step) and on GPUs (cuDNN's). On other CPUs they stay fp32:
  oneDNN cannot even create a bf16 LSTM there ("could not create a primitive descriptor").

bf16 pays only on CPUs that multiply bf16 natively (AVX512-BF16 or AMX). Elsewhere torch
emulates it, about ten times slower than fp32, so the plugin says so when the option is used.
"""

import contextlib
import functools
import logging

import torch

logger = logging.getLogger(__name__)

BF16 = torch.bfloat16


@functools.lru_cache(maxsize=None)
def native_bf16_cpu() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (oneDNN's own check)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_autocast(device_type: str = "cpu", enabled: bool = True):
    """The context in which the model's forward (and so its backward) runs in bf16 on
    ``device_type`` ("cpu" or "cuda")."""
    return torch.autocast(device_type, dtype=BF16, enabled=enabled)


def full_precision():
    """A region that runs in fp32 even inside :func:`bf16_autocast` (a no-op outside it)."""
    for device_type in ("cpu", "cuda"):
        if torch.is_autocast_enabled(device_type):
            return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def recurrent_precision():
    """The region of an LSTM call: fp32 inside a CPU :func:`bf16_autocast` on a CPU without
    native bf16, where oneDNN has no bf16 LSTM; elsewhere the autocast in force (bf16 under
    --bf16-autocast on CPUs with AVX512-BF16 or AMX, and on GPUs)."""
    if torch.is_autocast_enabled("cpu") and not native_bf16_cpu():
        return torch.autocast("cpu", enabled=False)
    return contextlib.nullcontext()


def warn_unless_native_bf16(option: str) -> None:
    """Log once why ``option`` will be slow on this CPU, when it has no bf16 instructions."""
    if not native_bf16_cpu():
        logger.warning(
            "%s: this CPU has no native bfloat16 arithmetic (AVX512-BF16 or AMX), so torch "
            "emulates it and bf16 runs several times slower than fp32 here; drop %s on this "
            "machine (the figures stay the same within bf16 rounding, only slower)",
            option, option,
        )
