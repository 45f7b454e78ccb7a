"""examples/brown/recipe.sh run as a user runs it on a corpus of their own (TEXT_DIR), end to end:
real fairseq-preprocess, both fairseq-train runs, both svae-eval scorings and the training plot."""

import json
import math
import os
import subprocess

from conftest import BIN, REPO, json_log_records, write_first_lines

RECIPE = REPO / "examples" / "brown" / "recipe.sh"


def run_recipe(tmp_path, text_dir, epochs="1"):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "WORK_DIR": str(tmp_path / "work"),
           "TEXT_DIR": str(text_dir), "EPOCHS": epochs, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(RECIPE)], capture_output=True, text=True, env=env, cwd=tmp_path)


def test_the_recipe_runs_on_another_corpus_and_scales_its_annealing_to_the_run(brown_slice, tmp_path):
    corpus = write_first_lines(brown_slice, tmp_path / "corpus", {"train": 200, "valid": 40, "test": 20})
    result = run_recipe(tmp_path, corpus)
    assert result.returncode == 0, result.stderr[-6000:]
    work = tmp_path / "work"

    vae_log = (work / "vae.log").read_text()
    lm_log = (work / "lm.log").read_text()
    # fairseq logs the model's options as a Namespace (name=value), the criterion's as a dict.
    # 200 sentences in batches of 32 are 7 updates an epoch. The LM trains EPOCHS=1 epoch, the
    # VAE twice as many; its 14 updates are fewer than 5,000, so the KL weight reaches 1 after 60%
    # of them: int(14 x 0.6) = 8.
    assert "'kl_anneal_updates': 8," in vae_log
    assert "posterior_mean_bn_gamma=1.0," in vae_log and "feed_latent=True," in vae_log
    assert "encoder_dropout=0.0," in vae_log and ", dropout=0.4," in vae_log
    assert ", dropout=0.3," in lm_log  # each model at its own better dropout on Brown's valid split
    assert int(json_log_records(vae_log, "train")[-1]["train_num_updates"]) == 14
    assert int(json_log_records(lm_log, "train")[-1]["train_num_updates"]) == 7

    vae = json.loads((work / "vae-test.json").read_text())
    lm = json.loads((work / "lm-test.json").read_text())
    assert vae["model"] == "sentence_vae" and lm["model"] == "language_model"
    assert vae["sentences"] == lm["sentences"] == 20 and vae["tokens"] == lm["tokens"]
    assert vae["iw_samples"] == 500 and math.isfinite(vae["iw_nll"])
    assert vae["iw_nll"] <= vae["neg_elbo_sampled"] + 1e-6  # the importance-weighted bound is the tighter
    assert lm["exact_nll"] and math.isfinite(lm["nll"])
    assert (work / "vae-training.png").stat().st_size > 0


def test_the_recipe_names_a_missing_split_of_the_corpus(brown_slice, tmp_path):
    corpus = write_first_lines(brown_slice, tmp_path / "corpus", {"train": 50, "valid": 10})
    result = run_recipe(tmp_path, corpus)
    assert result.returncode == 1
    assert f"prepare_data.sh: error: MissingDataError: {corpus}/test.txt is missing or empty" in result.stderr
    assert not (tmp_path / "work" / "data-bin").exists()
