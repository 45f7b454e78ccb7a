"""examples/brown/frontier.py: real svae-eval and fairseq-generate runs summed into one table."""

import json
import shutil

from conftest import REPO, json_log_records, run_command, train_args


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
        "--report", "--prior-samples 20 --reconstructions 5 --homotopies 0 --imputations 0 "
                    "--paraphrase-group-size 5 --probe-sentences 40", "--fit-prior",
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
    # svae-report's figures of each point: prior samples and the probes.
    prior = figures["prior_samples"]
    assert 0 <= prior["hit_length_cap"] <= 1 and 0 < prior["distinct_2"] <= 1
    paraphrase = figures["probes"]["paraphrase"]
    assert paraphrase["chance"] == 4 / (paraphrase["sentences"] - 1)
    assert 0 <= paraphrase["recall_at_1_z"] <= 1
    table = (out / "frontier.md").read_text()
    assert "recall@1 z" in table.splitlines()[0]
    assert "| small vae |" in table and "| twice |" in table and "small vae" in result.stdout
    assert (out / "frontier.png").stat().st_size > 0
    # --fit-prior: a mixture fitted to each model's codes, and its samples beside N(0, I)'s.
    assert (out / "small_vae.prior.pt").stat().st_size > 0
    fitted = figures["fitted_prior_samples"]
    assert 0 <= fitted["hit_length_cap"] <= 1 and 0 < fitted["distinct_2"] <= 1
    assert (out / "frontier-rate.png").stat().st_size > 0


def test_a_frontier_grows_reading_back_what_it_scored_before(data_bin, trained_model, tmp_path):
    save_dir, log_text = trained_model
    log = tmp_path / "vae.log"
    log.write_text(log_text)
    out = tmp_path / "frontier"
    checkpoint = save_dir / "checkpoint_best.pt"
    command = ["python", REPO / "examples" / "brown" / "frontier.py", "--data-bin", data_bin, "--split", "valid",
               "--iw-samples", "2", "--first-sentences", "20", "--out-dir", out,
               "--setting", f"small vae={checkpoint}:{log}"]
    first = run_command(*command)
    assert "read back" not in first.stdout
    scores = out / "small_vae.json"
    figures = json.loads(scores.read_text())
    assert figures["frontier_protocol"] == {"split": "valid", "iw_samples": 2, "first_sentences": 20}

    # Again, with a row scored elsewhere (a bare svae-eval JSON without a training log).
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(dict(figures, greedy_reconstruction_bleu=None)))
    second = run_command(*command, "--setting", f"scored elsewhere={elsewhere}")
    assert "small_vae.json: scored before with this protocol, read back" in second.stdout
    summary = json.loads((out / "frontier.json").read_text())
    assert summary["settings"][0]["figures"] == figures
    assert summary["settings"][1]["updates"] is None
    assert "| scored elsewhere |" in (out / "frontier.md").read_text()

    # Another protocol, or --rescore, scores again.
    third = run_command(*[c if c != "20" else "21" for c in command])
    assert "read back" not in third.stdout
    assert json.loads(scores.read_text())["sentences"] == 21
    fourth = run_command(*[c if c != "20" else "21" for c in command], "--rescore")
    assert "read back" not in fourth.stdout


def test_a_checkpoint_without_logs_brings_its_own_cost_over_a_resumed_run(data_bin, tmp_path):
    """A run stopped after two epochs and resumed for a third: its checkpoint counts all three."""
    save_dir = tmp_path / "run"
    updates = []
    for epochs in ("2", "3"):
        result = run_command("fairseq-train", *train_args(data_bin, save_dir, "--max-epoch", epochs))
        updates.append(int(json_log_records(result.stdout + result.stderr, "train")[-1]["train_num_updates"]))
        if epochs == "2":
            shutil.copy(save_dir / "checkpoint_last.pt", tmp_path / "after-two-epochs.pt")
    assert updates[1] > updates[0] > 0  # the second process went on from the first's checkpoint

    out = tmp_path / "frontier"
    run_command("python", REPO / "examples" / "brown" / "frontier.py", "--data-bin", data_bin,
                "--split", "valid", "--iw-samples", "2", "--first-sentences", "10", "--out-dir", out,
                "--setting", f"two epochs={tmp_path / 'after-two-epochs.pt'}",
                "--setting", f"resumed={save_dir / 'checkpoint_last.pt'}")
    first, resumed = json.loads((out / "frontier.json").read_text())["settings"]
    assert first["logs"] == resumed["logs"] == []
    assert (first["updates"], resumed["updates"]) == (updates[0], updates[1])
    # The resumed process trained one epoch, the first two: only a time carried over the resume
    # can exceed the first process's.
    assert resumed["seconds"] > first["seconds"] > 0
