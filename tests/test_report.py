"""svae-report end to end: the real command on checkpoints of the real fairseq-train, every figure
checked against what holds by construction or a direct computation on the same sentences."""

import json

import pytest
import sacrebleu
import torch

from fairseq_svae import SentenceVAEModel
from fairseq_svae.evaluation.inputs import load_model, load_split
from fairseq_svae.sample_report import choose_sentences
from fairseq_svae.sentence_scorer import LanguageModelScorer
from fairseq_svae.text_statistics import set_statistics

from conftest import run_command

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PRIOR, RECONSTRUCTIONS, HOMOTOPIES, STEPS, MAX_WORDS, IMPUTATIONS = 40, 25, 3, 5, 12, 8


def svae_report(data_bin, checkpoint, out_json, *extra):
    result = run_command(
        "svae-report", data_bin, "--path", checkpoint, "--cpu", "--gen-subset", "test",
        "--prior-samples", PRIOR, "--reconstructions", RECONSTRUCTIONS, "--homotopies", HOMOTOPIES,
        "--homotopy-steps", STEPS, "--max-len-b", MAX_WORDS, "--seed", "5", "--json", out_json,
        "--imputations", IMPUTATIONS, "--imputation-iterations", "2",
        "--no-progress-bar", *extra,
    )
    return result, json.loads(out_json.read_text())


@pytest.fixture(scope="module")
def report(trained_model, trained_language_model, data_bin, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.json"
    result, figures = svae_report(data_bin, trained_model[0] / "checkpoint_best.pt", out,
                                  "--critic-path", trained_language_model)
    return result.stdout, figures


def test_the_reference_row_is_the_chosen_sentences_of_the_split(report, data_bin, trained_language_model):
    _, figures = report
    task, dataset = load_split(str(data_bin), "test")
    chosen = choose_sentences(PRIOR, len(dataset), seed=5)
    assert len(set(chosen)) == PRIOR
    texts = [task.dictionary.string(dataset[i]["source"]) for i in chosen]
    expected = set_statistics(texts, "<unk>")
    for key, value in expected.items():
        assert figures["reference"][key] == pytest.approx(value), key

    # Its critic perplexity: the language model's exact perplexity of those sentences.
    model, _, _ = load_model(str(trained_language_model), str(data_bin), task)
    scorer = LanguageModelScorer(model.eval(), task.dictionary.pad(), max_logit_rows=512)
    batch = dataset.collater([dataset[i] for i in chosen])
    scored = scorer.score(batch)
    ppl = float(torch.exp(scored["nll"].sum() / scored["tokens"].sum()))
    assert figures["reference"]["critic_ppl"] == pytest.approx(ppl, rel=1e-5)


def test_prior_samples_are_the_hubs_and_the_cap_counts_cut_off_sentences(report, trained_model, data_bin):
    stdout, figures = report
    outputs = figures["outputs"]["prior_samples"]
    assert len(outputs) == figures["prior_samples"]["sentences"] == PRIOR
    hub = SentenceVAEModel.from_pretrained(trained_model[0], data_name_or_path=str(data_bin))
    assert outputs == hub.sample(PRIOR, seed=5, max_len_b=MAX_WORDS)
    lengths = [len(text.split()) for text in outputs]
    assert max(lengths) <= MAX_WORDS
    assert figures["prior_samples"]["hit_length_cap"] == pytest.approx(
        sum(n == MAX_WORDS for n in lengths) / PRIOR)
    assert figures["settings"]["length_cap_tokens"] == MAX_WORDS + 1  # the words and </s>
    recomputed = set_statistics(outputs, "<unk>")
    for key in ("mean_length", "length_std", "repeated_3gram", "unk_share", "distinct_1", "distinct_2", "self_bleu"):
        assert figures["prior_samples"][key] == pytest.approx(recomputed[key]), key
    assert 0 < figures["prior_samples"]["critic_ppl"] < float("inf")
    assert figures["examples"]["prior_samples"] == outputs[:5]
    assert "| prior samples, N(0, I) | 40 |" in stdout and "fitted prior" not in stdout and "reconstruction BLEU" in stdout


def test_reconstruction_figures(report):
    _, figures = report
    pairs = figures["outputs"]["reconstructions"]
    assert len(pairs) == figures["reconstructions"]["sentences"] == RECONSTRUCTIONS
    hypotheses = [pair["reconstruction"] for pair in pairs]
    targets = [pair["sentence"] for pair in pairs]
    assert figures["reconstructions"]["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [targets]).score)
    assert figures["reconstructions"]["exact_match"] == pytest.approx(
        sum(h == t for h, t in zip(hypotheses, targets)) / RECONSTRUCTIONS)


def test_homotopy_figures(report):
    _, figures = report
    paths = figures["outputs"]["homotopies"]
    assert len(paths) == HOMOTOPIES and all(len(path) == STEPS for path in paths)
    homotopies = figures["homotopies"]
    assert homotopies["distinct_sentences_per_path"] == pytest.approx(
        sum(len(set(path)) for path in paths) / HOMOTOPIES)
    assert 1 <= homotopies["min_distinct_sentences"] <= STEPS
    # Greedy decoding of a path's endpoints alone gives the path's first and last sentences.
    assert homotopies["endpoints_equal_reconstructions"] == 1.0


def test_the_report_is_seeded(report, trained_model, data_bin, tmp_path):
    _, figures = report
    _, again = svae_report(data_bin, trained_model[0] / "checkpoint_best.pt", tmp_path / "again.json")
    for key in ("prior_samples", "reconstructions", "homotopies"):
        assert again["outputs"][key] == figures["outputs"][key]
    assert [row["vae"] for row in again["outputs"]["imputation"]] == [
        row["vae"] for row in figures["outputs"]["imputation"]]
    assert "language_model" not in again["imputation"]
    assert again["prior_samples"]["distinct_2"] == figures["prior_samples"]["distinct_2"]
    assert again["reference"]["critic_ppl"] is None  # no critic this time
    _, other = svae_report(data_bin, trained_model[0] / "checkpoint_best.pt", tmp_path / "other.json",
                           "--seed", "6")
    assert other["outputs"]["prior_samples"] != figures["outputs"]["prior_samples"]


def test_imputation_figures_and_the_language_model_baseline(report):
    stdout, figures = report
    rows = figures["outputs"]["imputation"]
    imputation = figures["imputation"]
    assert len(rows) == imputation["sentences"] == IMPUTATIONS
    for row in rows:
        words = row["truth"].split()
        kept = len(row["beginning"].split())
        missing = len(words) - kept
        assert words[:kept] == row["beginning"].split()
        assert missing == max(1, round(0.2 * len(words)))
    true_ends = [" ".join(row["truth"].split()[len(row["beginning"].split()):]) for row in rows]
    for name in ("vae", "language_model"):  # the critic gives the baseline
        ends = [row[name] for row in rows]
        assert imputation[name]["missing_words_bleu"] == pytest.approx(sacrebleu.corpus_bleu(ends, [true_ends]).score)
        assert imputation[name]["missing_words_exact"] == pytest.approx(
            sum(e == t for e, t in zip(ends, true_ends)) / IMPUTATIONS)
        # --max-len-b bounds what follows the longest beginning of the batch.
        longest = max(len(row["beginning"].split()) for row in rows)
        assert all(len(row["beginning"].split()) + len(row[name].split()) <= longest + MAX_WORDS for row in rows)
    assert imputation["true_completion_length"] == pytest.approx(
        sum(len(t.split()) for t in true_ends) / IMPUTATIONS)
    assert "imputation of the last 20% of words (through z)" in stdout
    assert "imputation of the last 20% of words (critic LM, beam 5)" in stdout
