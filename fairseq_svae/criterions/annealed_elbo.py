"""``--criterion annealed_elbo``: reconstruction NLL + kl_weight(update) * KL(q(z|x) || N(0, I)).

All figures are in nats. ``loss``, ``nll``, ``kl`` and ``neg_elbo`` are per sentence (the unit
in which text-VAE results are reported); ``nll_per_token`` and ``neg_elbo_per_token`` count
end-of-sentence as a token, and ``ppl`` = exp(neg_elbo_per_token) is an upper bound on the
model's perplexity. In validation, ``loss`` is the un-annealed negative ELBO (weight 1, no free
bits), so ``checkpoint_best.pt`` follows the real objective.
"""

import math
from dataclasses import dataclass, field

from fairseq import utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.logging import metrics

from fairseq_svae.errors import OptionError
from fairseq_svae.gaussian import kl_to_standard_normal
from fairseq_svae.kl_control import KL_SCHEDULES, KLSchedule, free_bits_kl
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


@register_criterion("annealed_elbo", dataclass=AnnealedELBOConfig)
class AnnealedELBOCriterion(FairseqCriterion):
    def __init__(self, task, kl_schedule, kl_max_weight, kl_logistic_slope, kl_logistic_midpoint,
                 kl_anneal_updates, kl_cycles, kl_cycle_rise_fraction, free_bits):
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
        self.num_updates = 0

    def set_num_updates(self, num_updates):
        self.num_updates = num_updates

    def forward(self, model, sample, reduce=True):
        features, extra = model(**sample["net_input"], features_only=True)
        target = sample["target"]
        is_token = target.ne(self.padding_idx)
        # Logits only where there is a real target token: the vocabulary projection is most of
        # the arithmetic, and padding positions would only be thrown away.
        logits = model.decoder.output_layer(features[is_token])
        nll = token_nll(logits, target[is_token]).sum()

        kl_per_dimension = kl_to_standard_normal(extra[POSTERIOR_MEAN], extra[POSTERIOR_LOGVAR])
        kl = kl_per_dimension.sum()
        if model.training:
            kl_weight = self.kl_schedule(self.num_updates)
            loss = nll + kl_weight * free_bits_kl(kl_per_dimension, self.free_bits)
        else:
            kl_weight = 1.0
            loss = nll + kl

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
        return loss, nsentences, logging_output

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
        if ntokens > 0:
            metrics.log_scalar("nll_per_token", nll / ntokens, ntokens, round=4)
            metrics.log_scalar("neg_elbo_per_token", (nll + kl) / ntokens, ntokens, round=4)
            metrics.log_derived(
                "ppl", lambda meters: utils.get_perplexity(meters["neg_elbo_per_token"].avg, base=math.e)
            )

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
