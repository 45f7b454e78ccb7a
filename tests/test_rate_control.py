"""--target-kl end to end: fairseq-train holds the training KL near the asked rate, logs the
weight it uses, saves the controller in the checkpoint and carries it over a resume."""

import numpy as np
from fairseq_svae.checkpoint_io import load_checkpoint_state

from conftest import json_log_records, run_command, train_args

TARGET_KL = 15.0


def test_training_holds_the_target_kl_and_resumes_the_controller(data_bin, tmp_path):
    save_dir = tmp_path / "rate"
    options = ("--target-kl", str(TARGET_KL), "--target-kl-gain", "0.002", "--no-epoch-checkpoints",
               "--log-interval", "1")
    first = run_command("fairseq-train", *train_args(data_bin, save_dir, "--max-epoch", "9", *options))
    records = json_log_records(first.stdout + first.stderr, "train_inner")
    kl = np.array([float(r["kl"]) for r in records])
    weights = np.array([float(r["kl_weight"]) for r in records])
    assert weights[0] == 0.0 and (weights >= 0).all() and (weights <= 1).all()
    # Without a target this model's KL would fall towards the ELBO's own small rate; held, the
    # second half of the run averages near the target (batches of one length make single
    # updates noisy, hence the wide band).
    second_half = kl[len(kl) // 2:]
    assert 0.6 * TARGET_KL < second_half.mean() < 1.5 * TARGET_KL, second_half.mean()

    state = load_checkpoint_state(str(save_dir / "checkpoint_last.pt"))
    control = state["task_state"]["kl_rate_control"]
    assert control["target_kl"] == TARGET_KL
    assert control["updates_seen"] == int(records[-1]["num_updates"])
    saved_weight = control["weight"]

    # One more epoch from checkpoint_last.pt: the first update uses the saved weight, not 0.
    resumed = run_command("fairseq-train", *train_args(data_bin, save_dir, "--max-epoch", "10", *options))
    after = json_log_records(resumed.stdout + resumed.stderr, "train_inner")
    assert int(after[0]["num_updates"]) == int(records[-1]["num_updates"]) + 1
    assert float(after[0]["kl_weight"]) == round(saved_weight, 4)
