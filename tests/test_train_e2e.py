"""Real fairseq-preprocess + fairseq-train runs on a slice of Brown."""

import socket
import subprocess

import pytest
import torch

from fairseq_svae.checkpoint_io import load_checkpoint_state

from conftest import BIN, PLUGIN_DIR, json_log_records, run_command, train_args

LOGGED_KEYS = {"loss", "nll", "kl", "neg_elbo", "kl_weight", "nll_per_token", "neg_elbo_per_token", "ppl"}


def test_training_lowers_the_loss_and_logs_the_elbo_terms(trained_model):
    _, log = trained_model
    inner = json_log_records(log, "train_inner")
    valid = json_log_records(log, "valid")
    assert len(valid) == 3 and len(inner) >= 6
    assert LOGGED_KEYS <= set(inner[0])
    assert {f"valid_{key}" for key in LOGGED_KEYS} <= set(valid[0])

    valid_loss = [float(r["valid_loss"]) for r in valid]
    assert valid_loss[0] > valid_loss[1] > valid_loss[2]
    assert valid_loss[2] < valid_loss[0] - 2  # nats per sentence, not noise
    first_nll, last_nll = float(inner[0]["nll_per_token"]), float(inner[-1]["nll_per_token"])
    assert last_nll < first_nll - 1.0

    for record in valid:
        # Validation reports the un-annealed negative ELBO as the loss.
        assert float(record["valid_kl_weight"]) == 1.0
        assert float(record["valid_loss"]) == pytest.approx(float(record["valid_neg_elbo"]), abs=2e-3)
        assert float(record["valid_neg_elbo"]) == pytest.approx(
            float(record["valid_nll"]) + float(record["valid_kl"]), abs=2e-3)
    # Linear schedule over 40 updates: the weight rises, then reaches 1.
    weights = [float(r["kl_weight"]) for r in inner]
    assert weights[0] < 0.2 and weights[-1] == 1.0


def test_best_checkpoint_follows_the_validation_negative_elbo(trained_model):
    save_dir, log = trained_model
    valid_loss = [float(r["valid_loss"]) for r in json_log_records(log, "valid")]
    state = load_checkpoint_state(save_dir / "checkpoint_best.pt")
    assert state["extra_state"]["best"] == pytest.approx(min(valid_loss), abs=2e-3)


def final_parameters(save_dir):
    return load_checkpoint_state(save_dir / "checkpoint_last.pt")["model"]


def test_interrupted_run_resumes_where_it_stopped(data_bin, tmp_path):
    straight = tmp_path / "straight"
    run_command("fairseq-train", *train_args(data_bin, straight, "--max-update", "30"))

    resumed = tmp_path / "resumed"
    # Stop in the middle of the second epoch (an epoch here is about 21 updates) ...
    run_command("fairseq-train", *train_args(data_bin, resumed, "--max-update", "26"))
    # ... and start the same command again with the later stopping point.
    second = run_command("fairseq-train", *train_args(data_bin, resumed, "--max-update", "30"))
    output = second.stdout + second.stderr
    assert "@ 26 updates" in output  # fairseq: "loaded checkpoint ... (epoch 2 @ 26 updates)"
    assert json_log_records(output, "train_inner")[0]["num_updates"] == "30"

    # fairseq re-seeds every update from --seed and the update number, and the data iterator
    # restarts mid-epoch, so the resumed run ends on exactly the same parameters.
    expected, got = final_parameters(straight), final_parameters(resumed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-6), name


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_gloo_processes_train_together(data_bin, tmp_path):
    save_dir = tmp_path / "ddp"
    init = f"tcp://127.0.0.1:{free_port()}"
    ranks = []
    for rank in (0, 1):
        command = [
            str(BIN / "fairseq-train"),
            *map(str, train_args(data_bin, save_dir, "--max-epoch", "1",
                                 "--distributed-world-size", "2", "--distributed-rank", str(rank),
                                 "--distributed-no-spawn", "--device-id", "0",
                                 "--distributed-init-method", init,
                                 "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp")),
        ]
        ranks.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      cwd=tmp_path))
    outputs = [process.communicate(timeout=600)[0] for process in ranks]
    for rank, process in enumerate(ranks):
        assert process.returncode == 0, f"rank {rank} failed:\n{outputs[rank][-5000:]}"

    single = run_command("fairseq-train", *train_args(data_bin, tmp_path / "one", "--max-epoch", "1"))
    one_epoch = json_log_records(single.stdout, "train")[0]
    two_epoch = json_log_records(outputs[0], "train")[0]
    # The two ranks split each epoch between them: half the updates, twice the words per batch.
    assert "distributed init (rank 1)" in outputs[1]
    assert int(two_epoch["train_num_updates"]) <= int(one_epoch["train_num_updates"]) // 2 + 1
    assert float(two_epoch["train_wpb"]) > 1.8 * float(one_epoch["train_wpb"])
    assert float(two_epoch["train_nll_per_token"]) < float(
        json_log_records(outputs[0], "train_inner")[0]["nll_per_token"])
    assert (save_dir / "checkpoint_last.pt").exists()


def validate_in_one_batch(data_bin, checkpoint, *extra):
    result = run_command("fairseq-validate", data_bin, "--user-dir", PLUGIN_DIR, "--task", "sentence_vae",
                         "--path", checkpoint, "--cpu", "--batch-size", "1000", "--max-tokens", "100000",
                         "--log-format", "json", *extra)
    output = result.stdout + result.stderr
    return output, json_log_records(output, "valid")[0]


def test_long_sentences_are_skipped_with_a_count_or_truncated(data_bin, brown_slice, trained_model):
    checkpoint = trained_model[0] / "checkpoint_best.pt"
    lengths = [len(line.split()) for line in (brown_slice / "valid.txt").read_text().splitlines()]
    too_long = sum(n > 10 for n in lengths)
    assert too_long > 50

    output, stats = validate_in_one_batch(data_bin, checkpoint, "--max-sentence-length", "10")
    assert f"skipped {too_long} of {len(lengths)} sentences longer than --max-sentence-length=10" in output
    assert int(float(stats["valid_bsz"])) == len(lengths) - too_long

    output, stats = validate_in_one_batch(data_bin, checkpoint, "--max-sentence-length", "10",
                                          "--truncate-long-sentences")
    assert "skipped" not in output
    assert int(float(stats["valid_bsz"])) == len(lengths)
    # Each sentence keeps at most 10 words plus its end-of-sentence token.
    assert int(float(stats["valid_wpb"])) == sum(min(n, 10) + 1 for n in lengths)
