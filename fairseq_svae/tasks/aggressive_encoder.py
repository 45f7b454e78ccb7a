"""Aggressive encoder updates (He et al. 2019, "Lagging Inference Networks and Posterior Collapse
in Variational Autoencoders", Algorithm 1), behind the task's ``--aggressive-encoder-updates``.

Early in training the encoder lags behind the true posterior p(z|x); the decoder then learns to
ignore z before the encoder has anything to say. In the aggressive phase every update first
fits the encoder alone: ELBO steps on fresh random training batches until the loss stops falling
(compared over windows of ``--aggressive-window`` steps, at most
``--aggressive-max-encoder-steps`` steps). Then the ordinary step updates the decoder alone on
the update's own batch, the encoder held where the inner loop left it.

The phase ends, for good, at the first validation whose MI (``valid_mi``) is not above the best
seen so far (He et al. compare each epoch's MI with the previous one), or at
``--aggressive-max-updates``; training then goes on as usual. Whether the phase is over, the best
MI and the inner optimizer's moments are saved in every checkpoint (the task state), so a resumed
run carries on where it stopped.

The inner loop has its own Adam over the encoder's parameters (He et al. give encoder and
decoder separate optimizers), at the learning rate of fairseq's optimizer, in fp32. Parameters
the encoder shares with the decoder (``--share-encoder-decoder-embed``) count as the decoder's:
only ordinary steps move them.
"""

import logging
import os
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch
from fairseq import utils
from fairseq.data import data_utils

from fairseq_svae.errors import OptionError

logger = logging.getLogger(__name__)

# The logging-output key of the inner steps taken before an update (the task logs their mean
# as "encoder_steps" next to the loss).
ENCODER_STEPS = "aggressive_encoder_steps"


@dataclass
class AggressiveSchedule:
    """The options of the aggressive phase (see the task's help texts)."""

    max_encoder_steps: int = 100  # He et al.'s cap on inner steps per update
    window: int = 15  # He et al. compare the loss every 15 inner steps
    max_updates: int = 0  # 0: only the MI rule ends the phase

    def __post_init__(self):
        if self.max_encoder_steps < 1:
            raise OptionError(f"--aggressive-max-encoder-steps must be >= 1, got {self.max_encoder_steps}")
        if self.window < 1:
            raise OptionError(f"--aggressive-window must be >= 1, got {self.window}")
        if self.max_updates < 0:
            raise OptionError(f"--aggressive-max-updates must be >= 0 (0: no limit), got {self.max_updates}")


class InnerLoss:
    """The stopping rule of the inner loop: windows of ``window`` steps, per token loss."""

    def __init__(self, window: int):
        self.window = window
        self.previous: Optional[float] = None
        self.loss = 0.0
        self.tokens = 0
        self.steps = 0

    def add(self, loss: float, tokens: int) -> bool:
        """Record one step; True when the loop should stop (a full window that did not improve)."""
        self.loss += loss
        self.tokens += tokens
        self.steps += 1
        if self.steps % self.window:
            return False
        current = self.loss / max(self.tokens, 1)
        stop = self.previous is not None and current >= self.previous
        self.previous, self.loss, self.tokens = current, 0.0, 0
        return stop


class AggressiveEncoderUpdates:
    """State and inner loop of the aggressive phase; the task calls it around each update."""

    STATE_KEY = "aggressive_encoder_updates"

    def __init__(self, schedule: AggressiveSchedule, seed: int):
        self.schedule = schedule
        self.seed = seed
        self.active = True
        self.best_mi: Optional[float] = None
        self.ended_at: Optional[int] = None
        self._optimizer: Optional[torch.optim.Optimizer] = None
        self._optimizer_state: Optional[dict] = None  # from a checkpoint, until the optimizer exists
        self._eligible: Optional[np.ndarray] = None
        self._valid_mi_sum = 0.0
        self._valid_sentences = 0

    # --- the phase ------------------------------------------------------------------------------
    def is_active(self, update_num: int) -> bool:
        self._conclude_validation(update_num)
        if self.active and self.schedule.max_updates and update_num >= self.schedule.max_updates:
            self._end(update_num, f"--aggressive-max-updates={self.schedule.max_updates} reached")
        return self.active

    def record_validation(self, logging_output: dict, mi_key: str, sentences_key: str) -> None:
        """Add one validation batch's MI terms (summable: MI x sentences, sentences)."""
        self._valid_mi_sum += float(logging_output.get(mi_key, 0.0))
        self._valid_sentences += int(logging_output.get(sentences_key, 0))

    def _conclude_validation(self, update_num: int) -> None:
        # Validation runs between updates; its MI is judged at the next update.
        if self._valid_sentences == 0:
            return
        mi = self._valid_mi_sum / self._valid_sentences
        self._valid_mi_sum, self._valid_sentences = 0.0, 0
        if not self.active:
            return
        if self.best_mi is not None and mi <= self.best_mi:
            self._end(update_num, f"valid MI {mi:.3f} is not above the best so far, {self.best_mi:.3f}")
            return
        logger.info("aggressive encoder updates go on: valid MI %.3f (best before: %s)", mi,
                    "none" if self.best_mi is None else f"{self.best_mi:.3f}")
        self.best_mi = mi

    def _end(self, update_num: int, why: str) -> None:
        self.active = False
        self.ended_at = update_num
        self._optimizer = self._optimizer_state = None
        logger.info("aggressive encoder updates end after %d updates (%s); ordinary updates from now on",
                    update_num, why)

    # --- one update --------------------------------------------------------------------------------
    def fit_encoder(self, model, criterion, dataset, lr: float, update_num: int, batch_sentences: int,
                    max_positions: int, precision) -> int:
        """The inner loop before update ``update_num``; returns the number of encoder steps.

        ``precision`` returns the context each forward runs in (the task's autocast or none).
        """
        params = encoder_only_parameters(model)
        optimizer = self._inner_optimizer(params)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rule = InnerLoss(self.schedule.window)
        # Seeded by the update: a resumed run draws the same batches and dropout masks.
        with data_utils.numpy_seed(self.seed, update_num, 7919), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + update_num)
            model.train()
            for step in range(self.schedule.max_encoder_steps):
                sample = self._random_batch(dataset, batch_sentences, max_positions, model)
                with precision():
                    loss, sample_size, _ = criterion(model, sample)
                grads = torch.autograd.grad(loss / sample_size, params, allow_unused=True)
                for param, grad in zip(params, grads):
                    param.grad = grad
                optimizer.step()
                for param in params:
                    param.grad = None
                if rule.add(loss.item(), int(sample["ntokens"])):
                    break
        return step + 1

    def _inner_optimizer(self, params: List[torch.nn.Parameter]) -> torch.optim.Optimizer:
        if self._optimizer is None:
            if any(p.dtype != torch.float32 for p in params):
                raise OptionError(
                    "--aggressive-encoder-updates trains the encoder with its own fp32 optimizer, "
                    "and this model's parameters are not fp32: drop --fp16 / --memory-efficient-fp16 "
                    "(on a GPU, --amp keeps fp32 parameters)"
                )
            if torch.distributed.is_available() and torch.distributed.is_initialized() \
                    and torch.distributed.get_world_size() > 1:
                raise OptionError(
                    "--aggressive-encoder-updates runs on one worker only (its inner loop stops "
                    "when the local loss does): train with one GPU or process, or drop the option"
                )
            self._optimizer = torch.optim.Adam(params)
            if self._optimizer_state is not None:
                self._optimizer.load_state_dict(self._optimizer_state)
                self._optimizer_state = None
        return self._optimizer

    def _random_batch(self, dataset, sentences: int, max_positions: int, model) -> dict:
        if self._eligible is None:
            self._eligible = np.flatnonzero(np.asarray(dataset.src_sizes) <= max_positions)
            if len(self._eligible) == 0:
                raise OptionError("--aggressive-encoder-updates: no training sentence is short "
                                  "enough for --max-sentence-length")
        picked = np.random.choice(self._eligible, size=min(sentences, len(self._eligible)), replace=False)
        sample = dataset.collater([dataset[int(i)] for i in picked])
        if next(model.parameters()).is_cuda:
            sample = utils.move_to_cuda(sample)
        return sample

    # --- checkpoints -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        optimizer_state = self._optimizer.state_dict() if self._optimizer is not None else self._optimizer_state
        return {
            "active": self.active,
            "best_mi": self.best_mi,
            "ended_at": self.ended_at,
            "inner_optimizer": optimizer_state,
            # A validation not yet judged (fairseq saves right after validating): the resumed
            # run judges it at its first update, as the uninterrupted run would have.
            "pending_valid_mi_sum": self._valid_mi_sum,
            "pending_valid_sentences": self._valid_sentences,
        }

    def load_state_dict(self, state: dict) -> None:
        self.active = bool(state["active"])
        self.best_mi = state["best_mi"]
        self.ended_at = state["ended_at"]
        self._optimizer = None
        self._optimizer_state = state["inner_optimizer"] if self.active else None
        self._valid_mi_sum = float(state["pending_valid_mi_sum"])
        self._valid_sentences = int(state["pending_valid_sentences"])


def restored_checkpoint_path(save_dir: str, restore_file: str, suffix: str,
                             continue_once: Optional[str]) -> Optional[str]:
    """The checkpoint fairseq-train resumes from (fairseq's own rule in
    ``checkpoint_utils.load_checkpoint``), or None when it starts afresh.

    fairseq's trainer restores the model, optimizer and meters from it but not the task state,
    so the task reads its own part of the file itself.
    """
    suffix = suffix or ""
    if restore_file == "checkpoint_last.pt":
        last = os.path.join(save_dir, f"checkpoint_last{suffix}.pt")
        if os.path.exists(last):
            return last
        return continue_once if continue_once and os.path.exists(continue_once) else None
    path = restore_file.replace(".pt", suffix + ".pt") if suffix else restore_file
    return path if os.path.exists(path) else None


def encoder_only_parameters(model) -> List[torch.nn.Parameter]:
    """The encoder's trainable parameters that the decoder does not also use."""
    decoder_params = {id(p) for p in model.decoder.parameters()}
    return [p for p in model.encoder.parameters() if p.requires_grad and id(p) not in decoder_params]


def encoder_steps_of(logging_outputs) -> Optional[int]:
    """The inner steps taken for the update these logging outputs belong to (None outside the phase)."""
    steps = [log[ENCODER_STEPS] for log in logging_outputs if ENCODER_STEPS in log]
    return int(sum(steps)) if steps else None


