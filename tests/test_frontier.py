"""examples/brown/frontier.py: real svae-eval and fairseq-generate runs summed into one table."""

import json

from conftest import REPO, run_command


def test_the_frontier_scores_each_setting_and_reads_its_training_cost(data_bin, trained_model, tmp_path):
    save_dir, log_text = trained_model
    log = tmp_path / "vae.log"
    log.write_text(log_text)
    out = tmp_path / "frontier"
    result = run_command(
        "python", REPO / "examples" / "brown" / "frontier.py", "--data-bin", data_bin, "--split", "valid",
        "--iw-samples", "3", "--first-sentences", "40", "--out-dir", out,
        "--setting", f"small vae={save_dir / 'checkpoint_best.pt'}:{log}",
        "--setting", f"twice={save_dir / 'checkpoint_best.pt'}:{log}:{log}",
    )
    summary = json.loads((out / "frontier.json").read_text())
    once, twice = summary["settings"]
    figures = once["figures"]
    assert figures["sentences"] == 40 and figures["iw_samples"] == 3
    assert figures["iw_nll"] <= figures["neg_elbo_sampled"] + 1e-6  # the IW bound is the tighter one
    assert 0 <= figures["greedy_reconstruction_bleu"] <= 100
    last_train = [line for line in log_text.splitlines() if "| train | " in line][-1]
    assert once["updates"] == int(json.loads(last_train.split("| train | ", 1)[1])["train_num_updates"])
    assert twice["updates"] == 2 * once["updates"] and twice["seconds"] == 2 * once["seconds"]
    table = (out / "frontier.md").read_text()
    assert "| small vae |" in table and "| twice |" in table and "small vae" in result.stdout
    assert (out / "frontier.png").stat().st_size > 0
