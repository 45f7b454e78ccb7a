"""The batched scorers of svae-eval against sentence-by-sentence computations on small models."""

import argparse
import math
import random

import pytest
import torch
import torch.nn.functional as F
from fairseq.models.lstm_lm import LSTMLanguageModel
from fairseq.sequence_scorer import SequenceScorer
from torch.distributions import Normal
from torch.nn.utils.rnn import PackedSequence

from fairseq_svae import sentence_scorer
from fairseq_svae.criterions.annealed_elbo import AnnealedELBOCriterion
from fairseq_svae.models.sentence_vae_encoder import LATENT
from fairseq_svae.precision import bf16_autocast, native_bf16_cpu
from fairseq_svae.sentence_scorer import LanguageModelScorer, SentenceVAEScorer
from fairseq_svae.tasks.sentence_vae import SentenceVAETask, SentenceVAETaskConfig
from model_helpers import WORDS, build_small_model, encode_sentences, small_dictionary

SENTENCES = [
    "the cat sat on a mat",
    "a dog ran away",
    "",
    "the big red house and the cat sat on the mat",
    "dog",
    "the red cat ran from the big dog and away from the house",
]


def make_sample(dictionary, sentences, ids=None):
    src, lengths, prev, target = encode_sentences(dictionary, sentences)
    ids = list(range(len(sentences))) if ids is None else ids
    return {
        "id": torch.tensor(ids),
        "net_input": {"src_tokens": src, "src_lengths": lengths, "prev_output_tokens": prev},
        "target": target,
    }


def reference_log_likelihood(model, sample, latent):
    """log p(x_b | z_kb), one sentence and one sample at a time, with F.cross_entropy."""
    pad = model.decoder.dictionary.pad()
    samples, sentences, _ = latent.shape
    result = torch.zeros(samples, sentences, dtype=torch.float64)
    for b in range(sentences):
        target = sample["target"][b]
        length = int(target.ne(pad).sum())
        prev = sample["net_input"]["prev_output_tokens"][b, :length].unsqueeze(0)
        for k in range(samples):
            logits, _ = model.decoder(prev, encoder_out={LATENT: latent[k, b].unsqueeze(0)})
            result[k, b] = -F.cross_entropy(logits[0].double(), target[:length], reduction="sum")
    return result


def reference_log_weights(model, sample, scorer):
    """log p(x|z) + log p(z) - log q(z|x) with the scorer's samples, by torch.distributions."""
    net_input = sample["net_input"]
    with torch.no_grad():
        mean, logvar = model.encoder.posterior(net_input["src_tokens"], net_input["src_lengths"])
        latent = scorer.posterior_samples(sample["id"].tolist(), mean, logvar)
        log_likelihood = reference_log_likelihood(model, sample, latent)
    log_prior = Normal(0.0, 1.0).log_prob(latent).sum(-1)
    log_posterior = Normal(mean, torch.exp(0.5 * logvar)).log_prob(latent).sum(-1)
    return log_likelihood, log_likelihood + log_prior.double() - log_posterior.double()


@pytest.fixture(scope="module")
def model():
    return build_small_model(seed=3).eval()


def test_one_sample_score_is_the_one_sample_elbo(model):
    sample = make_sample(model.decoder.dictionary, SENTENCES)
    scorer = SentenceVAEScorer(model, iw_samples=1, seed=7, max_logit_rows=1000)
    result = scorer.score(sample)
    _, log_weights = reference_log_weights(model, sample, scorer)
    assert torch.allclose(result["iw_nll"], -log_weights[0], atol=1e-4)
    assert torch.allclose(result["sampled_neg_elbo"], result["iw_nll"], atol=1e-9)


def test_batched_chunked_scores_equal_sentence_by_sentence_ones(model, monkeypatch):
    # Tiny chunks: several decoder calls per batch and several projections per call.
    monkeypatch.setattr(sentence_scorer, "DECODER_TOKENS_PER_CALL", 50)
    sample = make_sample(model.decoder.dictionary, SENTENCES)
    scorer = SentenceVAEScorer(model, iw_samples=6, seed=7, max_logit_rows=7)
    result = scorer.score(sample)
    log_likelihood, log_weights = reference_log_weights(model, sample, scorer)
    expected_iw = -(torch.logsumexp(log_weights, dim=0) - math.log(6))
    assert torch.allclose(result["iw_nll"], expected_iw, atol=1e-4)
    assert torch.allclose(result["rec_nll"], -log_likelihood.mean(0), atol=1e-4)
    assert result["tokens"].tolist() == [len(s.split()) + 1 for s in SENTENCES]


def test_kl_is_the_training_criterion_kl(model):
    sample = make_sample(model.decoder.dictionary, SENTENCES)
    sample.update(ntokens=int(sample["target"].ne(model.decoder.dictionary.pad()).sum()),
                  nsentences=len(SENTENCES))
    task = SentenceVAETask(SentenceVAETaskConfig(), small_dictionary())
    criterion = AnnealedELBOCriterion(task, "linear", 1.0, 0.0025, 2500, 100, 4, 0.5, 0.0)
    with torch.no_grad():
        _, _, logging_output = criterion(model, sample)
    result = SentenceVAEScorer(model, iw_samples=2, seed=1, max_logit_rows=100).score(sample)
    assert float(result["kl"].sum()) == pytest.approx(float(logging_output["kl"]), rel=1e-5)


def test_a_sentence_gets_the_same_samples_whatever_its_batch(model):
    dictionary = model.decoder.dictionary
    scorer = SentenceVAEScorer(model, iw_samples=8, seed=11, max_logit_rows=64)
    together = scorer.score(make_sample(dictionary, SENTENCES))
    apart = scorer.score(make_sample(dictionary, [SENTENCES[3], SENTENCES[1]], ids=[3, 1]))
    assert torch.allclose(apart["iw_nll"], together["iw_nll"][[3, 1]], atol=1e-5)
    # Equal up to the encoder's float rounding, which depends on the batch shape.
    assert torch.allclose(apart["latent"], together["latent"][[3, 1]], atol=1e-6)
    reseeded = SentenceVAEScorer(model, iw_samples=8, seed=12, max_logit_rows=64)
    reseeded_iw_nll = reseeded.score(make_sample(dictionary, SENTENCES))["iw_nll"]
    assert not torch.allclose(reseeded_iw_nll, together["iw_nll"])


def test_iw_nll_is_below_the_sampled_elbo_and_falls_with_more_samples():
    # A poor proposal (q(z|x) about 7 times wider than an untrained encoder makes it) spreads
    # the importance weights, so that more samples help by much more than the estimates' noise;
    # 60 sentences make it an average, as the bound is only monotone in expectation.
    model = build_small_model(seed=3).eval()
    with torch.no_grad():
        model.encoder.to_posterior.bias[model.latent_dim:] += 2.0  # the log-variance half
    rng = random.Random(0)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12))) for _ in range(60)]
    sample = make_sample(model.decoder.dictionary, sentences)
    averages = []
    for samples in (1, 10, 100):
        result = SentenceVAEScorer(model, iw_samples=samples, seed=5, max_logit_rows=512).score(sample)
        # Jensen, sentence by sentence, on the same samples.
        assert bool((result["iw_nll"] <= result["sampled_neg_elbo"] + 1e-9).all())
        averages.append(float(result["iw_nll"].mean()))
    assert averages[0] > averages[1] + 0.5 > averages[2] + 1.0
    # With many samples the sampled ELBO is close to the analytic-KL one (same expectation).
    assert float(result["sampled_neg_elbo"].mean()) == pytest.approx(
        float((result["rec_nll"] + result["kl"]).mean()), rel=0.02)


def test_scores_count_flops_of_every_matmul(model):
    # sentence_vae small: LSTM 16 -> 24 in both networks, z of 6 dims, 20-word vocabulary.
    dictionary_size = len(model.decoder.dictionary)
    lstm = 4 * 24 * (16 + 24)
    encoder = 2 * (lstm + 24 * 12)
    decoder = 2 * (lstm + 6 * 48 + 24 * dictionary_size)
    assert SentenceVAEScorer(model, 3, 0, 10).flops_per_token() == encoder + 3 * decoder


def small_language_model(criterion: str):
    """A small fairseq lstm_lm; with adaptive_loss fairseq gives it an adaptive softmax."""
    torch.manual_seed(0)
    task = SentenceVAETask(SentenceVAETaskConfig(), small_dictionary())
    args = argparse.Namespace(decoder_embed_dim=12, decoder_hidden_size=20, decoder_out_embed_dim=16,
                              dropout=0.0, criterion=criterion, adaptive_softmax_cutoff="8,14")
    return LSTMLanguageModel.build_model(args, task).eval()


@pytest.mark.parametrize("criterion", ["cross_entropy", "adaptive_loss"])
def test_language_model_scores_equal_fairseq_sequence_scorer(criterion):
    lm = small_language_model(criterion)
    assert (lm.decoder.adaptive_softmax is not None) == (criterion == "adaptive_loss")
    dictionary = lm.decoder.dictionary
    sample = make_sample(dictionary, SENTENCES)
    ours = LanguageModelScorer(lm, dictionary.pad(), max_logit_rows=5).score(sample)

    # What fairseq-eval-lm does: the model reads </s> w_1 .. w_n, SequenceScorer gathers the
    # log-probabilities of w_1 .. w_n </s>.
    fairseq_sample = {
        "net_input": {"src_tokens": sample["net_input"]["prev_output_tokens"],
                      "src_lengths": sample["net_input"]["src_lengths"]},
        "target": sample["target"],
    }
    with torch.no_grad():
        hypotheses = SequenceScorer(dictionary).generate([lm], fairseq_sample)
    expected = torch.tensor([-float(h[0]["positional_scores"].sum()) for h in hypotheses],
                            dtype=torch.float64)
    assert torch.allclose(ours["nll"], expected, atol=1e-4)
    assert ours["tokens"].tolist() == [len(s.split()) + 1 for s in SENTENCES]


def output_dtypes(modules):
    """Record the dtype of every output of each named module: (dict name -> set, hook handles)."""
    seen = {name: set() for name in modules}

    def hook(name):
        def record(module, inputs, output):
            if isinstance(output, tuple) and not isinstance(output, PackedSequence):
                output = output[0]  # an LSTM's (output, (h, c))
            seen[name].add(output.data.dtype)  # .data: a packed sequence's tensor
        return record

    return seen, [module.register_forward_hook(hook(name)) for name, module in modules.items()]


def test_bf16_autocast_puts_the_projection_and_where_the_cpu_has_one_the_lstms_in_bf16():
    model = build_small_model(seed=3).eval()
    sample = make_sample(model.decoder.dictionary, SENTENCES)
    fp32 = SentenceVAEScorer(model, iw_samples=4, seed=7, max_logit_rows=64).score(sample)
    seen, handles = output_dtypes({
        "encoder LSTM": model.encoder.lstm, "posterior head": model.encoder.to_posterior,
        "z to state": model.decoder.latent_to_state, "decoder LSTM": model.decoder.lstm,
        "vocabulary projection": model.decoder.output_projection,
    })
    bf16_scorer = SentenceVAEScorer(model, iw_samples=4, seed=7, max_logit_rows=64,
                                    precision=bf16_autocast)
    bf16 = bf16_scorer.score(sample)
    for handle in handles:
        handle.remove()
    assert seen.pop("vocabulary projection") == {torch.bfloat16}
    # The LSTMs run in bf16 where oneDNN has a bf16 LSTM (a CPU with native bf16), else fp32;
    # the posterior head and the map from z to the decoder's state are fp32 on every CPU.
    lstm_dtype = torch.bfloat16 if native_bf16_cpu() else torch.float32
    assert seen.pop("encoder LSTM") == seen.pop("decoder LSTM") == {lstm_dtype}
    assert all(dtypes == {torch.float32} for dtypes in seen.values()), seen
    # With an fp32 encoder the posterior and its samples are the fp32 ones exactly; with a bf16
    # LSTM they move by bf16's rounding. The sums over tokens and samples are fp64 either way.
    if lstm_dtype == torch.float32:
        assert torch.equal(bf16["kl"], fp32["kl"]) and torch.equal(bf16["latent"], fp32["latent"])
    else:
        assert torch.allclose(bf16["kl"], fp32["kl"], rtol=0.05, atol=1e-3)
    assert bf16["iw_nll"].dtype == bf16["rec_nll"].dtype == torch.float64
    assert torch.allclose(bf16["iw_nll"], fp32["iw_nll"], rtol=0.02)


def test_language_model_scorer_takes_the_precision_context():
    lm = small_language_model("cross_entropy")
    sample = make_sample(lm.decoder.dictionary, SENTENCES)
    fp32 = LanguageModelScorer(lm, lm.decoder.dictionary.pad(), max_logit_rows=5).score(sample)
    entered = []

    def precision():
        entered.append(True)
        return bf16_autocast()

    bf16 = LanguageModelScorer(lm, lm.decoder.dictionary.pad(), max_logit_rows=5,
                               precision=precision).score(sample)
    assert entered and bf16["nll"].dtype == torch.float64
    assert torch.allclose(bf16["nll"], fp32["nll"], rtol=0.02)
