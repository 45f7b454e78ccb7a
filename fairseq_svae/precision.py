"""bfloat16 training and scoring: the plugin's own switch, because fairseq 0.12's ``--bf16`` means a TPU.

The one home of how the plugin computes in bf16 (training through the task's ``--bf16-autocast``,
``svae-eval --bf16``), on a CPU or a GPU:

- The large matrix products (the vocabulary projection and any projection before it) run under
  ``torch.autocast("cpu", dtype=torch.bfloat16)``; their backward passes follow in bf16.
- Master weights, optimizer state, gradients of the weights, the softmax cross entropy
  (:mod:`fairseq_svae.token_nll`), the KL and every Gaussian formula stay in fp32
  (:mod:`fairseq_svae.gaussian` casts its inputs).
- The LSTMs and the small projections to and from z run in fp32 (:func:`full_precision`).
  oneDNN's bf16 LSTM cannot even be created on a CPU without bf16 instructions ("could not
  create a primitive descriptor"), so keeping the LSTMs in fp32 gives the same numbers and the
  same code path on every CPU; they are under a fifth of the matrix work of a training step.
  The posterior head stays fp32 because the log-variance and the mean set the KL.
  On a GPU only the CPU-specific part falls away: cuDNN runs the LSTMs in bf16 under torch's
  CUDA autocast, and the KL, log-variance and cross entropy stay fp32 as on a CPU.

bf16 pays only on CPUs that multiply bf16 natively (AVX512-BF16 or AMX). Elsewhere torch
emulates it, about ten times slower than fp32, so the plugin says so when the option is used.
"""

import contextlib
import logging

import torch

logger = logging.getLogger(__name__)

BF16 = torch.bfloat16


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
    """A region that runs in fp32 even inside a CPU :func:`bf16_autocast` (a no-op outside it,
    and on a GPU, where cuDNN's bf16 LSTM is fine)."""
    if torch.is_autocast_enabled("cpu"):
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
