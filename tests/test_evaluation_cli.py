"""svae-eval end to end: the real command on checkpoints written by the real fairseq-train."""

import argparse
import json
import math
import re

import pytest
import torch

from fairseq_svae.checkpoint_io import load_checkpoint_state
from fairseq_svae.precision import native_bf16_cpu

from conftest import PLUGIN_DIR, run_command

EXPECTED_KEYS = {"iw_nll", "ppl", "neg_elbo", "rec_nll", "kl", "mi", "active_units", "iw_samples",
                 "sentences", "tokens"}


def first_sentences_tokens(text_path, count=None):
    """Tokens incl. end-of-sentence of the first ``count`` lines, counted from the plain text."""
    with open(text_path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    lines = lines if count is None else lines[:count]
    return len(lines), sum(len(line.split()) + 1 for line in lines)


def svae_eval(data_bin, checkpoint, out_json, *extra, check=True):
    result = run_command(
        "svae-eval", data_bin, "--path", checkpoint, "--gen-subset", "test", "--cpu",
        "--json", out_json, "--no-progress-bar", *extra, check=check,
        env={"OMP_NUM_THREADS": "1"},
    )
    return result, (json.loads(out_json.read_text()) if result.returncode == 0 else None)


def test_vae_evaluation_of_a_prefix(trained_model, data_bin, brown_slice, tmp_path):
    save_dir, _ = trained_model
    result, report = svae_eval(
        data_bin, save_dir / "checkpoint_best.pt", tmp_path / "vae.json",
        "--iw-samples", "20", "--first-sentences", "50", "--batch-size", "16", "--seed", "4",
    )
    assert EXPECTED_KEYS <= set(report)
    sentences, tokens = first_sentences_tokens(brown_slice / "test.txt", 50)
    assert (report["sentences"], report["tokens"], report["iw_samples"]) == (sentences, tokens, 20)
    # PPL from the per-sentence NLL and the token count with </s>.
    assert report["ppl"] == pytest.approx(math.exp(report["iw_nll"] * sentences / tokens), rel=1e-9)
    assert report["neg_elbo"] == pytest.approx(report["rec_nll"] + report["kl"], abs=1e-9)
    # The bound, on the same samples, and the same bound in expectation for the analytic KL.
    assert report["iw_nll"] <= report["neg_elbo_sampled"]
    assert report["iw_nll"] < report["neg_elbo"]
    assert report["kl"] > 0 and report["iw_nll"] > report["rec_nll"] - report["kl"]
    # MI can reach at most log N with N sentences in the aggregate posterior.
    assert -0.05 < report["mi"] <= math.log(50) + 1e-9
    variances = report["posterior_mean_variance"]
    assert len(variances) == report["latent_dim"] == 16
    assert report["active_units"] == sum(v > 0.01 for v in variances)
    # The printed table holds the same numbers as the JSON.
    assert f"| {report['iw_nll']:.2f} (IW, K=20) | {report['ppl']:.2f} |" in result.stdout
    assert "expected time:" in result.stdout and "done in" in result.stdout
    # The estimate's plumbing (its accuracy is measured, never asserted: it is a timing).
    assert report["precision"] == "fp32"
    assert math.isfinite(report["expected_seconds"]) and report["expected_seconds"] > 0
    assert 0 < report["expected_from_share"] <= 1 and report["seconds"] > 0

    # The same seed gives the same estimate, whatever the batching.
    _, again = svae_eval(
        data_bin, save_dir / "checkpoint_best.pt", tmp_path / "again.json",
        "--iw-samples", "20", "--first-sentences", "50", "--max-tokens", "300", "--seed", "4",
    )
    assert again["iw_nll"] == pytest.approx(report["iw_nll"], abs=1e-4)
    assert again["mi"] == pytest.approx(report["mi"], abs=1e-4)


def test_bf16_scores_agree_with_fp32(trained_model, data_bin, tmp_path):
    # Few sentences and samples: a CPU without bf16 instructions emulates it, 10x slower.
    checkpoint = trained_model[0] / "checkpoint_best.pt"
    common = ("--iw-samples", "4", "--first-sentences", "12", "--seed", "2")
    _, fp32 = svae_eval(data_bin, checkpoint, tmp_path / "fp32.json", *common)
    result, bf16 = svae_eval(data_bin, checkpoint, tmp_path / "bf16.json", *common, "--bf16")
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert all(math.isfinite(bf16[key]) for key in ("iw_nll", "rec_nll", "kl", "neg_elbo_sampled", "mi"))
    # The vocabulary projection is bf16 (8 significant bits per logit; the softmax and every sum
    # in fp32 or fp64), and the LSTMs too on a CPU with native bf16: the NLL moves by far less
    # than 2%; the KL not at all where the encoder stays fp32, by bf16's rounding where not.
    assert bf16["iw_nll"] == pytest.approx(fp32["iw_nll"], rel=0.02)
    assert bf16["kl"] == (pytest.approx(fp32["kl"], rel=0.02) if native_bf16_cpu() else fp32["kl"])
    assert ("no native bfloat16" in result.stdout) == (not native_bf16_cpu())


def test_fp16_with_bf16_is_refused_clearly(data_bin, tmp_path):
    result = run_command("svae-eval", data_bin, "--path", tmp_path / "any.pt", "--cpu", "--fp16",
                         "--bf16", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "svae-eval: error: OptionError: --fp16 and --bf16 cannot be combined: keep one")


def eval_lm_loss_and_perplexity(data_bin, checkpoint):
    result = run_command(
        "fairseq-eval-lm", data_bin, "--path", checkpoint, "--user-dir", PLUGIN_DIR,
        "--gen-subset", "test", "--sample-break-mode", "eos", "--cpu", "--max-tokens", "4000",
        "--num-workers", "0",
    )
    output = result.stdout + result.stderr
    match = re.search(r"Loss \(base 2\): ([\d.]+), Perplexity: ([\d.]+)", output)
    assert match, output[-2000:]
    tokens = int(re.search(r"Evaluated ([\d,]+) tokens", output).group(1).replace(",", ""))
    return float(match.group(1)), float(match.group(2)), tokens


def test_language_model_nll_matches_fairseq_eval_lm(trained_language_model, data_bin, brown_slice, tmp_path):
    result, report = svae_eval(data_bin, trained_language_model, tmp_path / "lm.json")
    loss_base2, perplexity, eval_lm_tokens = eval_lm_loss_and_perplexity(data_bin, trained_language_model)

    sentences, tokens = first_sentences_tokens(brown_slice / "test.txt")
    assert (report["sentences"], report["tokens"]) == (sentences, tokens)
    assert eval_lm_tokens == tokens
    assert report["exact_nll"] is True and report["model"] == "language_model"
    # fairseq prints 4 decimals of the base-2 loss and 2 of the perplexity.
    assert report["nll_per_token"] / math.log(2) == pytest.approx(loss_base2, abs=1.5e-4)
    assert report["ppl"] == pytest.approx(perplexity, abs=0.015)
    assert report["nll"] == pytest.approx(report["nll_per_token"] * tokens / sentences, rel=1e-9)
    assert f"| {report['nll']:.2f} (exact) |" in result.stdout


def test_a_missing_split_names_the_path_and_the_command(trained_language_model, data_bin, tmp_path):
    result = run_command(
        "svae-eval", data_bin, "--path", trained_language_model, "--gen-subset", "valid7",
        "--cpu", check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("svae-eval: error: MissingDataError: split 'valid7' not found")
    assert f"{data_bin}/valid7.bin" in result.stderr
    assert "Splits in " in result.stderr and "test, train, valid." in result.stderr
    assert f"--srcdict {data_bin}/dict.txt --testpref valid7.txt --destdir {data_bin}-valid7 " in result.stderr


def test_a_checkpoint_of_another_kind_is_refused_clearly(trained_language_model, data_bin, tmp_path):
    # The language model's checkpoint relabelled as fairseq's LSTM translation model.
    state = load_checkpoint_state(trained_language_model)
    model_config = state["cfg"]["model"]
    assert isinstance(model_config, argparse.Namespace)
    model_config.arch = model_config._name = "lstm"
    translation = tmp_path / "translation.pt"
    torch.save(state, translation)
    result = run_command("svae-eval", data_bin, "--path", translation, "--cpu", check=False)
    assert result.returncode == 1
    assert "holds a 'lstm' model" in result.stderr and "sentence_vae" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def other_dictionary_bin(brown_slice, tmp_path_factory):
    """The slice's test split binarized with a dictionary built from itself: not the models'."""
    destination = tmp_path_factory.mktemp("other-dictionary")
    run_command("fairseq-preprocess", "--only-source", "--trainpref", brown_slice / "test.txt",
                "--testpref", brown_slice / "test.txt", "--destdir", destination)
    return destination


@pytest.mark.parametrize("kind", ["sentence_vae", "lstm_lm"])
def test_a_checkpoint_trained_with_another_dictionary_is_refused_clearly(
        kind, trained_model, trained_language_model, other_dictionary_bin):
    checkpoint = trained_model[0] / "checkpoint_best.pt" if kind == "sentence_vae" else trained_language_model
    result = run_command("svae-eval", other_dictionary_bin, "--path", checkpoint, "--gen-subset", "test",
                         "--cpu", check=False)
    assert result.returncode == 1
    assert f"{other_dictionary_bin}/dict.txt" in result.stderr
    assert "--srcdict" in result.stderr and "Traceback" not in result.stderr
