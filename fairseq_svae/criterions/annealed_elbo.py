"""``--criterion annealed_elbo``: reconstruction NLL + kl_weight(update) * KL(q(z|x) || N(0, I)).

For a model with a learned prior (``--arch sentence_cvae``, whose output carries the prior's
mean and log-variance) the KL is KL(q(z|x, y) || p(z|x)), with the same schedules, free bits and
``--target-kl``. Under a task that does not step the rate controller after each update
(``--task translation``; ``--task sentence_vae`` does), the criterion steps it itself: see
:meth:`AnnealedELBOCriterion.step_rate_control_itself`.

All figures are in nats. ``loss``, ``nll``, ``kl`` and ``neg_elbo`` are per sentence (the unit
in which text-VAE results are reported); ``nll_per_token`` and ``neg_elbo_per_token`` count
end-of-sentence as a token, and ``ppl`` = exp(neg_elbo_per_token) is an upper bound on the
model's perplexity. In validation, ``loss`` is the un-annealed negative ELBO (weight 1, no free
bits), so ``checkpoint_best.pt`` follows the real objective.

Every validation also logs two latent-usage figures next to ``valid_kl`` (He et al. 2019 and
jxhe/vae-lagging-encoder print the same; they show posterior collapse as it happens):

- ``valid_active_units``: the number of latent dimensions whose posterior mean E_q[z_d|x] varies
  over the validation sentences by more than
  :data:`~fairseq_svae.importance_sampling.ACTIVE_UNIT_THRESHOLD` (Burda et al. 2016). It is
  computed from per-dimension sums over the whole validation set, so it is the figure svae-eval
  reports for the same split and checkpoint.
- ``valid_mi``: the mutual information I(x; z) under q, estimated as He et al. do
  (:func:`~fairseq_svae.importance_sampling.mutual_information`) within each validation batch,
  one z ~ q(z|x) per sentence and the aggregate posterior q(z) taken as the mixture of the
  batch's posteriors, then averaged over batches weighted by sentences. A batch of B sentences
  cannot show more than log B nats (log 32 = 3.47), so ``valid_mi_bound`` logs that ceiling
  (the sentence-weighted mean of log B): when ``valid_mi`` nears it, validate with a larger
  ``--batch-size-valid`` (256 or more, with ``--max-tokens-valid`` to match). svae-eval's MI
  takes the mixture over the whole split and is bounded by log(split size) instead.

Neither is computed in training steps.
"""

import math
from dataclasses import dataclass, field

import torch
from fairseq import utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.distributed import utils as distributed_utils
from fairseq.logging import metrics

from fairseq_svae.errors import OptionError
from fairseq_svae.gaussian import kl_between_gaussians, kl_to_standard_normal, reparameterize
from fairseq_svae.importance_sampling import (
    count_active_units,
    mutual_information,
    posterior_mean_variance_from_sums,
)
from fairseq_svae.kl_control import (
    KL_SCHEDULES,
    RATE_CONTROL_GAIN,
    KLRateController,
    KLSchedule,
    free_bits_kl,
)
from fairseq_svae.models.bag_of_words import BAG_OF_WORDS_NLL
from fairseq_svae.models.sentence_cvae import PRIOR_LOGVAR, PRIOR_MEAN
from fairseq_svae.models.sentence_vae_encoder import POSTERIOR_LOGVAR, POSTERIOR_MEAN
from fairseq_svae.token_nll import token_nll

_DEFAULT_SCHEDULE = KLSchedule()


@dataclass
class AnnealedELBOConfig(FairseqDataclass):
    kl_schedule: ChoiceEnum(KL_SCHEDULES) = field(
        default=_DEFAULT_SCHEDULE.name,
        metadata={"help": "how the KL weight rises with updates: logistic (Bowman et al.), linear, "
                          "cyclical (Fu et al.) or constant"},
    )
    kl_max_weight: float = field(
        default=_DEFAULT_SCHEDULE.max_weight,
        metadata={"help": "the weight the schedule rises to (beta; 1 gives the ELBO)"},
    )
    kl_logistic_slope: float = field(
        default=_DEFAULT_SCHEDULE.logistic_slope,
        metadata={"help": "logistic schedule: k in 1 / (1 + exp(-k (update - x0)))"},
    )
    kl_logistic_midpoint: int = field(
        default=_DEFAULT_SCHEDULE.logistic_midpoint,
        metadata={"help": "logistic schedule: x0, the update at which the weight is half its maximum"},
    )
    kl_anneal_updates: int = field(
        default=_DEFAULT_SCHEDULE.anneal_updates,
        metadata={"help": "linear: updates to reach the maximum; cyclical: updates spanned by all cycles"},
    )
    kl_cycles: int = field(
        default=_DEFAULT_SCHEDULE.cycles,
        metadata={"help": "cyclical schedule: number of cycles (M)"},
    )
    kl_cycle_rise_fraction: float = field(
        default=_DEFAULT_SCHEDULE.rise_fraction,
        metadata={"help": "cyclical schedule: fraction of each cycle spent rising (R)"},
    )
    free_bits: float = field(
        default=0.0,
        metadata={"help": "KL floor in nats per latent dimension, on the batch-averaged KL "
                          "(Kingma et al. 2016); 0 disables it"},
    )
    target_kl: float = field(
        default=0.0,
        metadata={"help": "the rate to train at: hold the training KL at this many nats per "
                          "sentence by adjusting the KL weight after every update (it starts at 0 "
                          "and stays within [0, --kl-max-weight]); replaces --kl-schedule. "
                          "0 = off"},
    )
    target_kl_gain: float = field(
        default=RATE_CONTROL_GAIN,
        metadata={"help": "with --target-kl: the most the KL weight moves in one update "
                          "(it moves by gain x the relative KL error, clamped to [-1, 1])"},
    )


@register_criterion("annealed_elbo", dataclass=AnnealedELBOConfig)
class AnnealedELBOCriterion(FairseqCriterion):
    """The annealed negative ELBO; validation also logs ``mi``, ``mi_bound`` and ``active_units``
    (see the module docstring: ``valid_mi`` is a per-batch estimate, at most log(batch sentences))."""

    def __init__(self, task, kl_schedule, kl_max_weight, kl_logistic_slope, kl_logistic_midpoint,
                 kl_anneal_updates, kl_cycles, kl_cycle_rise_fraction, free_bits, target_kl=0.0,
                 target_kl_gain=RATE_CONTROL_GAIN):
        super().__init__(task)
        self.kl_schedule = KLSchedule(
            name=kl_schedule,
            max_weight=kl_max_weight,
            logistic_slope=kl_logistic_slope,
            logistic_midpoint=kl_logistic_midpoint,
            anneal_updates=kl_anneal_updates,
            cycles=kl_cycles,
            rise_fraction=kl_cycle_rise_fraction,
        )
        if free_bits < 0:
            raise OptionError(f"--free-bits must be >= 0, got {free_bits}")
        self.free_bits = free_bits
        if target_kl < 0:
            raise OptionError(f"--target-kl must be >= 0 nats (0 = off), got {target_kl}")
        self.rate_controller = (
            KLRateController(target_kl, max_weight=kl_max_weight, gain=target_kl_gain) if target_kl > 0 else None
        )
        self.num_updates = 0
        # A task that calls observe_training_update after every update says so; under any
        # other the criterion steps the controller itself (see step_rate_control_itself).
        self.steps_rate_control_itself = not getattr(task, "observes_training_updates", False)
        self._update_in_progress = None
        self._pending_kl = None  # (KL, sentences) of the update in progress

    def set_num_updates(self, num_updates):
        self.num_updates = num_updates

    def forward(self, model, sample, reduce=True):
        if model.training and getattr(model, "num_updates", None) is not None:
            # A model that tracks the update (fairseq's train_step tells every model) serves
            # tasks that do not tell the criterion: the KL schedule follows it.
            self.follow_update(model.num_updates)
        features, extra = model(**sample["net_input"], features_only=True)
        target = sample["target"]
        is_token = target.ne(self.padding_idx)
        # Logits only where there is a real target token: the vocabulary projection is most of
        # the arithmetic, and padding positions would only be thrown away.
        logits = model.decoder.output_layer(features[is_token])
        nll = token_nll(logits, target[is_token]).sum()

        kl_per_dimension = kl_of(extra)
        kl = kl_per_dimension.sum()
        if model.training:
            kl_weight = self.training_kl_weight()
            loss = nll + kl_weight * free_bits_kl(kl_per_dimension, self.free_bits)
        else:
            kl_weight = 1.0
            loss = nll + kl
        bag_of_words_nll = extra.get(BAG_OF_WORDS_NLL)
        if bag_of_words_nll is not None and model.training:
            # An extra training term (fairseq_svae.models.bag_of_words), outside the ELBO:
            # validation's loss stays the negative ELBO that checkpoint_best.pt is chosen by.
            loss = loss + model.bag_of_words_weight * bag_of_words_nll

        nsentences = target.size(0)
        logging_output = {
            "loss": loss.data,
            "nll": nll.data,
            "kl": kl.data,
            # weight x sentences sums across batches and workers; reduce_metrics divides it back.
            "kl_weight_x_sentences": kl_weight * nsentences,
            "ntokens": sample["ntokens"],
            "nsentences": nsentences,
            "sample_size": nsentences,
        }
        if bag_of_words_nll is not None:
            logging_output[BAG_OF_WORDS_NLL] = bag_of_words_nll.data
        if model.training and self.rate_controller is not None:
            logging_output[RATE_CONTROL_SENTENCES] = nsentences
            if self.steps_rate_control_itself:
                self._accumulate_update_kl(kl.detach(), nsentences)
        if not model.training:
            logging_output.update(latent_statistics(extra[POSTERIOR_MEAN], extra[POSTERIOR_LOGVAR]))
        return loss, nsentences, logging_output

    def training_kl_weight(self) -> float:
        """The KL weight of the current update: the rate controller's, or the schedule's."""
        if self.rate_controller is not None:
            return self.rate_controller.weight
        return self.kl_schedule(self.num_updates)

    def follow_update(self, update: int) -> None:
        """Called at each training forward with the update it belongs to (from the model): sets
        the schedule's update and, when the criterion steps the rate controller itself, steps it
        with the previous update's KL once that update is over."""
        self.num_updates = update
        if update == self._update_in_progress:
            return
        if self.steps_rate_control_itself and self.rate_controller is not None:
            self.step_rate_control_itself()
        self._update_in_progress = update

    def _accumulate_update_kl(self, kl: torch.Tensor, sentences: int) -> None:
        totals = torch.stack([kl.double(), kl.new_tensor(float(sentences), dtype=torch.float64)])
        self._pending_kl = totals if self._pending_kl is None else self._pending_kl + totals

    def step_rate_control_itself(self) -> None:
        """The rate controller's step for the update just finished, under a task that does not
        call :meth:`observe_training_update` (``--task translation``).

        The update's KL and sentences, summed over its batches (--update-freq), are summed over
        all data-parallel workers, so every rank takes the same step, as with the task's hook.
        Every rank runs the first forward of an update (fairseq gives a worker without data a
        dummy batch, whose KL counts here like a real batch's), so the collective always meets.
        """
        totals, self._pending_kl = self._pending_kl, None
        if totals is None:
            return
        if distributed_utils.get_data_parallel_world_size() > 1:
            totals = distributed_utils.all_reduce(totals, group=distributed_utils.get_data_parallel_group())
        kl, sentences = totals.tolist()
        if sentences > 0:
            self.rate_controller.observe(kl / sentences)

    def observe_training_update(self, logging_outputs) -> None:
        """Called with one update's logging outputs, summed over all workers (the same on every
        rank), after the update: the rate controller's step."""
        if self.rate_controller is None:
            return
        sentences = utils.item(sum(log.get(RATE_CONTROL_SENTENCES, 0) for log in logging_outputs))
        if sentences > 0:  # 0: validation, or a worker's empty dummy batch
            kl = utils.item(sum(log.get("kl", 0) for log in logging_outputs))
            self.rate_controller.observe(kl / sentences)

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return utils.item(sum(log.get(key, 0) for log in logging_outputs))

        nsentences = total("nsentences")
        ntokens = total("ntokens")
        if nsentences == 0:
            return
        nll, kl = total("nll"), total("kl")
        metrics.log_scalar("loss", total("loss") / nsentences, nsentences, round=3)
        metrics.log_scalar("nll", nll / nsentences, nsentences, round=3)
        metrics.log_scalar("kl", kl / nsentences, nsentences, round=3)
        metrics.log_scalar("neg_elbo", (nll + kl) / nsentences, nsentences, round=3)
        metrics.log_scalar("kl_weight", total("kl_weight_x_sentences") / nsentences, nsentences, round=4)
        if any(BAG_OF_WORDS_NLL in log for log in logging_outputs):
            metrics.log_scalar("bow_nll", total(BAG_OF_WORDS_NLL) / nsentences, nsentences, round=3)
        if ntokens > 0:
            metrics.log_scalar("nll_per_token", nll / ntokens, ntokens, round=4)
            metrics.log_scalar("neg_elbo_per_token", (nll + kl) / ntokens, ntokens, round=4)
            metrics.log_derived(
                "ppl", lambda meters: utils.get_perplexity(meters["neg_elbo_per_token"].avg, base=math.e)
            )
        log_latent_statistics(logging_outputs, total)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


def kl_of(extra) -> torch.Tensor:
    """KL per sentence and latent dimension of a model's output: against the learned prior the
    output carries (a conditional VAE's p(z|x)), else against N(0, I)."""
    if extra.get(PRIOR_MEAN) is not None:
        return kl_between_gaussians(extra[POSTERIOR_MEAN], extra[POSTERIOR_LOGVAR],
                                    extra[PRIOR_MEAN], extra[PRIOR_LOGVAR])
    return kl_to_standard_normal(extra[POSTERIOR_MEAN], extra[POSTERIOR_LOGVAR])


# Sentences of a training batch under --target-kl: marks the logging outputs the rate
# controller steps on (validation batches and empty dummy batches carry none).
RATE_CONTROL_SENTENCES = "rate_control_sentences"


# --- Validation-only latent statistics (mutual information, active units) ---------------------
# Logging-output keys. Every value is a scalar that is right when fairseq sums it over batches
# and workers: per-dimension sums of the posterior mean and of its square, and the per-batch MI
# estimate (and its ceiling log B) times the batch's sentences.
MI_X_SENTENCES = "mi_x_sentences"
MI_BOUND_X_SENTENCES = "mi_bound_x_sentences"
LATENT_SENTENCES = "latent_sentences"
MEAN_SUM = "mu_sum_{}"
MEAN_SQUARE_SUM = "mu_sq_sum_{}"
# Meters behind valid_active_units: a leading underscore keeps fairseq from printing them
# (MetersDict.get_smoothed_values skips such keys).
_METER_SENTENCES = "_latent_sentences"
_METER_MEAN_SUM = "_mu_sum_{}"
_METER_MEAN_SQUARE_SUM = "_mu_sq_sum_{}"


def latent_statistics(posterior_mean, posterior_logvar) -> dict:
    """The validation batch's summable MI and active-unit terms (see the module docstring).

    MI uses one fresh z ~ q(z|x) per sentence (the model does not return the z its decoder
    read). The estimate of a batch of B sentences is at most log B; its expectation lies in
    [0, log B] (a generalized Jensen-Shannon divergence of the B posteriors), but one draw can
    fall slightly below 0 when the posteriors barely differ.
    """
    sentences, latent_dim = posterior_mean.shape
    mean = posterior_mean.detach().double()
    # One transfer to python floats (fp64), rather than 2 * latent_dim device scalars.
    mean_sum, mean_square_sum = torch.stack([mean.sum(dim=0), mean.pow(2).sum(dim=0)]).tolist()
    output = {LATENT_SENTENCES: sentences}
    if sentences > 0:
        latent = reparameterize(posterior_mean.detach(), posterior_logvar.detach())
        mi = mutual_information(posterior_mean.detach(), posterior_logvar.detach(), latent)
        output[MI_X_SENTENCES] = mi * sentences
        output[MI_BOUND_X_SENTENCES] = math.log(sentences) * sentences
    else:
        output[MI_X_SENTENCES] = output[MI_BOUND_X_SENTENCES] = 0.0
    for dim in range(latent_dim):
        output[MEAN_SUM.format(dim)] = mean_sum[dim]
        output[MEAN_SQUARE_SUM.format(dim)] = mean_square_sum[dim]
    return output


def _active_units_of(meters, latent_dim: int):
    sentences = meters[_METER_SENTENCES].sum
    if sentences < 2:
        return 0  # no variance over fewer than two sentences: no dimension is shown to vary
    mean_sum = [meters[_METER_MEAN_SUM.format(d)].sum for d in range(latent_dim)]
    mean_square_sum = [meters[_METER_MEAN_SQUARE_SUM.format(d)].sum for d in range(latent_dim)]
    return count_active_units(posterior_mean_variance_from_sums(mean_sum, mean_square_sum, sentences))


def log_latent_statistics(logging_outputs, total) -> None:
    """valid_mi, valid_mi_bound and valid_active_units, from the terms of :func:`latent_statistics`.

    Validation calls reduce_metrics once per batch into one aggregator (fairseq-validate once
    with every batch): the MI meters keep the sentence-weighted mean of the per-batch estimates,
    sum meters keep the per-dimension sums, and the active units are derived from the sums of
    the whole set when the log is printed.
    """
    sentences = total(LATENT_SENTENCES)
    if sentences == 0:  # a training step, or nothing in this batch
        return
    metrics.log_scalar("mi", total(MI_X_SENTENCES) / sentences, sentences, round=3)
    metrics.log_scalar("mi_bound", total(MI_BOUND_X_SENTENCES) / sentences, sentences, round=3)
    latent_dim = 0
    while MEAN_SUM.format(latent_dim) in logging_outputs[0]:
        latent_dim += 1
    metrics.log_scalar_sum(_METER_SENTENCES, sentences)
    for dim in range(latent_dim):
        metrics.log_scalar_sum(_METER_MEAN_SUM.format(dim), total(MEAN_SUM.format(dim)))
        metrics.log_scalar_sum(_METER_MEAN_SQUARE_SUM.format(dim), total(MEAN_SQUARE_SUM.format(dim)))
    metrics.log_derived("active_units", lambda meters: _active_units_of(meters, latent_dim), priority=10)
