"""Mutual information and active units in the validation log (``valid_mi``, ``valid_active_units``)."""

import math

import pytest
import torch
import torch.nn as nn
from fairseq.logging import metrics

from fairseq_svae.criterions.annealed_elbo import AnnealedELBOCriterion
from fairseq_svae.gaussian import reparameterize
from fairseq_svae.importance_sampling import (
    active_units,
    mutual_information,
    posterior_mean_variance,
    posterior_mean_variance_from_sums,
)
from fairseq_svae.models.sentence_vae_encoder import POSTERIOR_LOGVAR, POSTERIOR_MEAN
from fairseq_svae.tasks.sentence_vae import SentenceVAETask, SentenceVAETaskConfig

from conftest import SLICE_LINES, SMALL_MODEL, json_log_records
from model_helpers import build_small_model, small_dictionary

LATENT_KEYS = {"mi", "mi_bound", "active_units"}
BATCH_SIZES = [40, 64, 7, 39, 1]  # a one-sentence batch too: its MI is 0 and its bound log 1 = 0
LATENT_DIM = 8


class FixedPosteriorModel(nn.Module):
    """Stands in for the Sentence VAE: sentence i (its first source token) has the posterior
    N(means[i], exp(logvars[i])); the decoder features are zeros."""

    def __init__(self, means, logvars, vocabulary_size):
        super().__init__()
        self.means, self.logvars = means, logvars
        self.decoder = nn.Module()
        self.decoder.output_layer = nn.Linear(4, vocabulary_size)

    def forward(self, src_tokens, src_lengths, prev_output_tokens, features_only=False, **kwargs):
        index = src_tokens[:, 0]
        features = torch.zeros(*prev_output_tokens.shape, 4)
        return features, {POSTERIOR_MEAN: self.means[index], POSTERIOR_LOGVAR: self.logvars[index]}


def build_criterion(task):
    return AnnealedELBOCriterion(
        task, kl_schedule="constant", kl_max_weight=1.0, kl_logistic_slope=0.0025,
        kl_logistic_midpoint=2500, kl_anneal_updates=100, kl_cycles=4, kl_cycle_rise_fraction=0.5,
        free_bits=0.0)


def known_posteriors():
    """Means whose variances over the sentences lie far on either side of the 0.01 threshold
    (standard deviations 1 ... 0.001; one dimension with a large offset, one constant)."""
    generator = torch.Generator().manual_seed(1234)
    sentences = sum(BATCH_SIZES)
    scales = torch.tensor([1.0, 0.5, 0.3, 0.2, 0.03, 0.01, 0.001, 0.0])
    means = torch.randn(sentences, LATENT_DIM, generator=generator) * scales
    means[:, 3] += 7.0  # a mean far from 0: the sum-of-squares variance must not lose it
    logvars = torch.rand(sentences, LATENT_DIM, generator=generator) * 2.0 - 3.0
    return means, logvars


def batch_of(first: int, size: int):
    words = torch.full((size, 3), 4, dtype=torch.long)
    index = words.clone()
    index[:, 0] = torch.arange(first, first + size)  # tells FixedPosteriorModel the sentence
    return {
        "net_input": {"src_tokens": index, "src_lengths": torch.full((size,), 3),
                      "prev_output_tokens": words},
        "target": words.clone(),
        "ntokens": 3 * size,
        "nsentences": size,
    }


def validation_logging_outputs():
    """The criterion's validation outputs for BATCH_SIZES, and each batch's reference MI from
    mutual_information on the same z draw."""
    means, logvars = known_posteriors()
    model = FixedPosteriorModel(means, logvars, vocabulary_size=len(small_dictionary()))
    criterion = build_criterion(SentenceVAETask(SentenceVAETaskConfig(), small_dictionary()))
    model.eval()
    outputs, reference_mi, first = [], [], 0
    for batch, size in enumerate(BATCH_SIZES):
        torch.manual_seed(100 + batch)
        with torch.no_grad():
            _, _, logging_output = criterion(model, batch_of(first, size))
        outputs.append(logging_output)
        rows = slice(first, first + size)
        torch.manual_seed(100 + batch)  # the criterion draws z with the same call
        latent = reparameterize(means[rows], logvars[rows])
        reference_mi.append(mutual_information(means[rows], logvars[rows], latent))
        first += size
    return outputs, reference_mi, means


def reduced(groups_of_outputs):
    """fairseq's validation: reduce_metrics once per step, into one aggregator."""
    with metrics.aggregate(new_root=True) as aggregator:
        for outputs in groups_of_outputs:
            AnnealedELBOCriterion.reduce_metrics(outputs)
        return aggregator.get_smoothed_values(), aggregator


def summed_like_workers(outputs):
    """What fairseq's _fast_stat_sync_sum hands reduce_metrics: every key summed."""
    return {key: sum(output[key] for output in outputs) for key in outputs[0]}


def test_variance_from_sums_is_the_variance_of_the_means():
    means, _ = known_posteriors()
    variance = posterior_mean_variance_from_sums(
        means.double().sum(0), means.double().pow(2).sum(0), means.size(0))
    assert torch.allclose(variance, posterior_mean_variance(means), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError):
        posterior_mean_variance_from_sums(means[:1].sum(0), means[:1].pow(2).sum(0), 1)


def test_validation_figures_over_batches_and_workers_equal_the_whole_set_formulas():
    outputs, reference_mi, means = validation_logging_outputs()
    for output in outputs:
        # Every value fairseq sums is a scalar.
        assert all(isinstance(value, (int, float)) or value.dim() == 0 for value in output.values())

    expected_units, variance = active_units(means)
    # Not a degenerate case: some dimensions in, some out, none near the threshold.
    assert 0 < expected_units < LATENT_DIM
    assert bool(((variance - 0.01).abs() > 1e-3).all())
    sizes = torch.tensor(BATCH_SIZES, dtype=torch.float64)
    expected_mi = float((torch.tensor(reference_mi, dtype=torch.float64) * sizes).sum() / sizes.sum())
    expected_bound = float((sizes * sizes.log()).sum() / sizes.sum())

    one_worker = [[output] for output in outputs]  # fairseq-train, one process
    two_workers = [[summed_like_workers(outputs[i:i + 2])] for i in range(0, len(outputs), 2)]
    one_call = [outputs]  # fairseq-validate: every batch at once
    for steps in (one_worker, two_workers, one_call):
        values, aggregator = reduced(steps)
        assert values["active_units"] == expected_units
        assert aggregator["mi"].avg == pytest.approx(expected_mi, abs=1e-9)
        assert values["mi"] == pytest.approx(expected_mi, abs=6e-4)  # printed to 3 decimals
        assert aggregator["mi_bound"].avg == pytest.approx(expected_bound, abs=1e-9)
        assert values["mi"] <= values["mi_bound"] + 1e-3
        # The per-dimension sums are meters, but not printed.
        assert LATENT_KEYS <= set(values)
        assert not [key for key in values if "mu_" in key or "latent_sentences" in key]
        assert any(key.startswith("_mu_sum_") for key in aggregator)

    # The batch-mixture MI of a batch cannot exceed log(batch size).
    for mi, size in zip(reference_mi, BATCH_SIZES):
        assert mi <= math.log(size) + 1e-9


def test_only_validation_pays_for_the_latent_statistics():
    model = build_small_model()
    task = SentenceVAETask(SentenceVAETaskConfig(), model.decoder.dictionary)
    criterion = build_criterion(task)
    from model_helpers import encode_sentences

    src, lengths, prev, target = encode_sentences(
        model.decoder.dictionary, ["the cat sat on a mat", "a dog ran away", "the big red house"])
    sample = {"net_input": {"src_tokens": src, "src_lengths": lengths, "prev_output_tokens": prev},
              "target": target, "ntokens": int(lengths.sum()), "nsentences": 3}

    model.train()
    _, _, training = criterion(model, sample)
    assert not [key for key in training if key.startswith("mu_") or key.startswith("mi")]
    values, _ = reduced([[training]])
    assert not LATENT_KEYS & set(values)

    model.eval()
    with torch.no_grad():
        _, _, validation = criterion(model, sample)
    latent_dim = model.encoder.latent_dim
    assert {f"mu_sum_{d}" for d in range(latent_dim)} <= set(validation)
    assert f"mu_sum_{latent_dim}" not in validation
    values, _ = reduced([[validation]])
    assert 0 <= values["active_units"] <= latent_dim
    assert values["mi_bound"] == pytest.approx(math.log(3), abs=1e-3)


def test_fairseq_train_logs_mi_and_active_units_every_validation(trained_model):
    _, log = trained_model
    valid = json_log_records(log, "valid")
    assert valid
    latent_dim = int(SMALL_MODEL[SMALL_MODEL.index("--latent-dim") + 1])
    for record in valid:
        assert {f"valid_{key}" for key in LATENT_KEYS} <= set(record)
        assert not [key for key in record if "mu_" in key or "latent_sentences" in key]
        units = float(record["valid_active_units"])
        assert units == int(units) and 0 <= units <= latent_dim
        mi, bound = float(record["valid_mi"]), float(record["valid_mi_bound"])
        assert math.isfinite(mi)
        # Each batch's estimate is at most log(its sentences), so their weighted mean is at most
        # the weighted mean of the logs, itself at most log(validation sentences). The estimate's
        # expectation is >= 0 (a generalized Jensen-Shannon divergence of the batch posteriors)
        # but one z per sentence leaves Monte Carlo noise: with Var ~ 2 MI / N for posteriors
        # that barely differ, the worst case is about -(k^2 / 2N) at k standard deviations, so
        # -0.1 is over 6 sigma for the N = 200 validation sentences (a collapsed model logs ~0).
        assert 0 < bound <= math.log(SLICE_LINES["valid"]) + 1e-3
        assert -0.1 <= mi <= bound + 1e-3
    for record in json_log_records(log, "train_inner"):
        assert not LATENT_KEYS & set(record)
