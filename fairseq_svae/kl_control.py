"""How much the KL term weighs in the training loss: annealing schedules and the free-bits floor.

Both exist to fight posterior collapse (Bowman et al. 2016): a decoder that can model the text
alone will make q(z|x) equal the prior unless the KL pressure starts at zero (annealing) or
stops below some amount of information per dimension (free bits, Kingma et al. 2016).
"""

import math
from dataclasses import dataclass

import torch

from fairseq_svae.errors import OptionError

KL_SCHEDULES = ("logistic", "linear", "cyclical", "constant")


@dataclass(frozen=True)
class KLSchedule:
    """The KL weight as a function of the update number.

    - ``logistic``: max_weight / (1 + exp(-slope * (update - midpoint))) (Bowman et al. 2016).
    - ``linear``: rises from 0 to max_weight over ``anneal_updates`` updates, then stays.
    - ``cyclical``: ``cycles`` repetitions within ``anneal_updates`` updates; each rises linearly
      from 0 to max_weight during the first ``rise_fraction`` of the cycle and then holds
      (Fu et al. 2019). After ``anneal_updates`` the weight stays at max_weight.
    - ``constant``: max_weight throughout (beta-VAE style when max_weight != 1).
    """

    name: str = "logistic"
    max_weight: float = 1.0
    logistic_slope: float = 0.0025
    logistic_midpoint: int = 2500
    anneal_updates: int = 10000
    cycles: int = 4
    rise_fraction: float = 0.5

    def __post_init__(self):
        if self.name not in KL_SCHEDULES:
            raise OptionError(
                f"unknown KL schedule {self.name!r}: choose one of {', '.join(KL_SCHEDULES)}"
            )
        if self.max_weight < 0:
            raise OptionError(f"--kl-max-weight must be >= 0, got {self.max_weight}")
        if self.name in ("linear", "cyclical") and self.anneal_updates <= 0:
            raise OptionError(
                f"--kl-anneal-updates must be > 0 for the {self.name} schedule, got {self.anneal_updates}"
            )
        if self.name == "cyclical":
            if self.cycles < 1:
                raise OptionError(f"--kl-cycles must be >= 1, got {self.cycles}")
            if not 0 < self.rise_fraction <= 1:
                raise OptionError(
                    f"--kl-cycle-rise-fraction must be in (0, 1], got {self.rise_fraction}"
                )

    def __call__(self, update: int) -> float:
        update = max(int(update), 0)
        if self.name == "constant":
            fraction = 1.0
        elif self.name == "logistic":
            exponent = -self.logistic_slope * (update - self.logistic_midpoint)
            # math.exp overflows above ~709; the weight is 0 to double precision long before.
            fraction = 0.0 if exponent > 700 else 1.0 / (1.0 + math.exp(exponent))
        elif self.name == "linear":
            fraction = min(1.0, update / self.anneal_updates)
        else:  # cyclical
            if update >= self.anneal_updates:
                fraction = 1.0
            else:
                cycle_length = self.anneal_updates / self.cycles
                position = (update % cycle_length) / cycle_length
                fraction = min(1.0, position / self.rise_fraction)
        return self.max_weight * fraction


def free_bits_kl(kl_per_dimension: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The KL term of the training loss with a floor of ``free_bits`` nats per latent dimension.

    ``kl_per_dimension`` is (sentences, latent_dim). Following Kingma et al. (2016) as used for
    text VAEs, each dimension's KL is averaged over the batch and clamped from below, so a
    dimension under the floor gets no gradient pushing it towards the prior. The result is
    summed over dimensions and scaled back to a sum over sentences, like the plain KL.
    ``free_bits`` = 0 gives exactly the plain summed KL.
    """
    if free_bits <= 0:
        return kl_per_dimension.sum()
    sentences = kl_per_dimension.size(0)
    batch_mean = kl_per_dimension.mean(dim=0)
    return sentences * torch.clamp(batch_mean, min=free_bits).sum()


# The controller's default gain: the weight moves by at most this much per update, so it takes
# about 1,000 updates to go from 0 to 1 (slow next to how fast the KL answers a change of weight,
# which keeps the loop from oscillating on the noise of single batches).
RATE_CONTROL_GAIN = 1e-3


class KLRateController:
    """Holds the training KL at a rate the user asks for, by adjusting the KL weight (beta).

    A constraint with a learned multiplier, updated like ControlVAE's integral term (Shao et al.
    2020): after every update, beta += gain * clamp((KL - target) / target, -1, 1), then clipped
    to [0, max_weight]. KL is the update's KL per sentence, summed over all workers, so every
    rank takes the same step. Starting at beta = 0 the model is an autoencoder whose KL climbs;
    once it passes the target, beta rises until the KL it leaves holds the target.

    Why this works for any target above what the ELBO itself settles on: at beta = 1 (the ELBO)
    a text VAE's KL is small, and at beta = 0 nothing bounds it, so some beta in [0, 1] holds
    every larger target. A target below the ELBO's own KL needs beta > 1 (``--kl-max-weight``).
    The weight in force is logged as ``kl_weight``; validation still scores the ELBO (weight 1).
    """

    def __init__(self, target_kl: float, max_weight: float = 1.0, gain: float = RATE_CONTROL_GAIN):
        if target_kl <= 0:
            raise OptionError(f"--target-kl must be > 0 nats, got {target_kl}")
        if gain <= 0:
            raise OptionError(f"--target-kl-gain must be > 0, got {gain}")
        if max_weight <= 0:
            raise OptionError(f"--kl-max-weight must be > 0 with --target-kl, got {max_weight}")
        self.target_kl = float(target_kl)
        self.max_weight = float(max_weight)
        self.gain = float(gain)
        self.weight = 0.0
        self.updates_seen = 0

    def observe(self, kl_per_sentence: float) -> float:
        """Take one update's KL per sentence into account; returns the weight for the next update."""
        error = (float(kl_per_sentence) - self.target_kl) / self.target_kl
        error = min(1.0, max(-1.0, error))
        self.weight = min(self.max_weight, max(0.0, self.weight + self.gain * error))
        self.updates_seen += 1
        return self.weight

    def state_dict(self) -> dict:
        # Plain floats and ints: checkpoints load with torch's weights-only unpickler.
        return {"target_kl": self.target_kl, "weight": self.weight, "updates_seen": self.updates_seen}

    def load_state_dict(self, state: dict) -> None:
        self.weight = min(self.max_weight, max(0.0, float(state["weight"])))
        self.updates_seen = int(state.get("updates_seen", 0))
