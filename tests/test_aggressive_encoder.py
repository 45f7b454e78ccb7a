"""He et al.'s aggressive encoder updates (--aggressive-encoder-updates): the inner loop, the two
stopping rules, the decoder-only update, resuming, and what is refused."""

import dataclasses
import re

import numpy as np
import pytest
import torch
from fairseq.optim.adam import FairseqAdam, FairseqAdamConfig
from omegaconf import OmegaConf

from fairseq_svae.checkpoint_io import load_checkpoint_state
from fairseq_svae.criterions.annealed_elbo import AnnealedELBOConfig, AnnealedELBOCriterion
from fairseq_svae.errors import OptionError
from fairseq_svae.tasks.aggressive_encoder import (
    ENCODER_STEPS,
    AggressiveEncoderUpdates,
    AggressiveSchedule,
    InnerLoss,
    encoder_only_parameters,
    restored_checkpoint_path,
)
from fairseq_svae.tasks.sentence_vae import SentenceVAETask, SentenceVAETaskConfig

from conftest import json_log_records, run_command, train_args
from model_helpers import build_small_model, small_dictionary

SENTENCES = ["the cat sat on a mat", "a dog ran away", "the big red house", "the dog sat",
             "a cat ran from the house", "red mat", "the cat ran", "a big dog sat on the mat"]
MAX_ENCODER_STEPS = 6


# --- the rules ---------------------------------------------------------------------------------


def test_the_inner_loop_stops_after_the_first_window_that_does_not_improve():
    rule = InnerLoss(window=2)
    # Windows of 2 steps, loss per token: 5.0, 4.0, 4.0 (not below 4.0: stop).
    steps = [(50.0, 10), (50.0, 10), (40.0, 10), (40.0, 10), (30.0, 10), (50.0, 10)]
    stops = [rule.add(loss, tokens) for loss, tokens in steps]
    assert stops == [False, False, False, False, False, True]


def test_the_phase_lasts_while_valid_mi_rises():
    updates = AggressiveEncoderUpdates(AggressiveSchedule(), seed=1)
    assert updates.is_active(0)
    for update, mi in [(10, 0.5), (20, 0.7)]:
        updates.record_validation({"mi": mi * 32, "n": 32}, "mi", "n")
        assert updates.is_active(update)
    updates.record_validation({"mi": 0.69 * 32, "n": 32}, "mi", "n")
    assert not updates.is_active(30)
    assert updates.ended_at == 30 and updates.best_mi == pytest.approx(0.7)
    updates.record_validation({"mi": 2.0 * 32, "n": 32}, "mi", "n")
    assert not updates.is_active(40), "the phase does not come back"


def test_the_phase_ends_at_its_update_limit_even_while_mi_rises():
    updates = AggressiveEncoderUpdates(AggressiveSchedule(max_updates=5), seed=1)
    assert updates.is_active(4)
    assert not updates.is_active(5)


@pytest.mark.parametrize("option, value", [("max_encoder_steps", 0), ("window", 0), ("max_updates", -1)])
def test_out_of_range_options_name_the_option(option, value):
    flag = "--aggressive-" + option.replace("_", "-")
    with pytest.raises(OptionError, match=flag):
        AggressiveSchedule(**{option: value})


def test_the_resumed_checkpoint_is_found_as_fairseq_finds_it(tmp_path):
    last = tmp_path / "checkpoint_last.pt"
    assert restored_checkpoint_path(str(tmp_path), "checkpoint_last.pt", "", None) is None
    last.write_bytes(b"x")
    assert restored_checkpoint_path(str(tmp_path), "checkpoint_last.pt", "", None) == str(last)
    other = tmp_path / "other.pt"
    other.write_bytes(b"x")
    assert restored_checkpoint_path(str(tmp_path), str(other), "", None) == str(other)
    assert restored_checkpoint_path(str(tmp_path / "new"), "checkpoint_last.pt", "", str(other)) == str(other)


# --- one update, in process --------------------------------------------------------------------


def aggressive_task(tmp_path) -> SentenceVAETask:
    cfg = SentenceVAETaskConfig(
        aggressive_encoder_updates=True, aggressive_max_encoder_steps=MAX_ENCODER_STEPS,
        aggressive_window=2, seed=1, train_subset="train", save_dir=str(tmp_path),
        restore_file="checkpoint_last.pt", checkpoint_suffix="", continue_once=None,
    )
    dictionary = small_dictionary()
    task = SentenceVAETask(cfg, dictionary)
    sentences = [dictionary.encode_line(s, add_if_not_exist=False).long() for s in SENTENCES]
    task.datasets["train"] = task.sentence_pairs(sentences, np.array([len(s) for s in sentences]))
    return task


def one_update(tmp_path, model):
    task = aggressive_task(tmp_path)
    config = AnnealedELBOConfig(kl_schedule="constant")
    criterion = AnnealedELBOCriterion(task, **{f.name: getattr(config, f.name)
                                               for f in dataclasses.fields(config) if f.name != "_name"})
    optimizer = FairseqAdam(OmegaConf.structured(FairseqAdamConfig(lr=[1e-2], tpu=False)), list(model.parameters()))
    dataset = task.datasets["train"]
    sample = dataset.collater([dataset[i] for i in range(4)])
    return task, task.train_step(sample, model, criterion, optimizer, update_num=0), optimizer


def test_in_the_phase_the_encoder_trains_alone_then_the_update_is_the_decoders(tmp_path):
    model = build_small_model()
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    task, (loss, sample_size, log), optimizer = one_update(tmp_path, model)

    assert 1 <= log[ENCODER_STEPS] <= MAX_ENCODER_STEPS
    moved = {name for name, param in model.named_parameters() if not torch.equal(param, before[name])}
    assert moved and all(name.startswith("encoder.") for name in moved), \
        "the encoder's own steps move the encoder and nothing else"
    encoder = encoder_only_parameters(model)
    assert all(param.grad is None for param in encoder)
    assert all(param.grad is not None for param in model.decoder.parameters())

    optimizer.step()  # what fairseq's trainer does next: moves the decoder only
    for name, param in model.named_parameters():
        if name.startswith("encoder."):
            assert name in moved or torch.equal(param, before[name])
        else:
            assert not torch.equal(param, before[name]), name


def test_parameters_shared_with_the_decoder_are_left_to_the_ordinary_update():
    model = build_small_model(share_encoder_decoder_embed=True, decoder_embed_dim=16)
    shared = model.decoder.embed_tokens.weight
    assert model.encoder.embed_tokens.weight is shared
    assert all(param is not shared for param in encoder_only_parameters(model))


def test_fp16_parameters_are_refused_with_the_fix(tmp_path):
    with pytest.raises(OptionError, match="--fp16"):
        one_update(tmp_path, build_small_model().half())


# --- fairseq-train -----------------------------------------------------------------------------

PHASE = ("--aggressive-encoder-updates", "--aggressive-max-encoder-steps", "4", "--aggressive-window", "2",
         "--aggressive-max-updates", "9", "--validate-interval-updates", "3", "--log-interval", "1")


def test_a_run_logs_its_encoder_steps_ends_the_phase_by_its_rule_and_resumes_exactly(data_bin, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    result = run_command("fairseq-train", *train_args(data_bin, straight, "--max-update", "12", *PHASE))
    log = result.stdout + result.stderr

    ends = re.findall(r"aggressive encoder updates end after (\d+) updates \((.*)\)", log)
    assert len(ends) == 1, log[-3000:]
    ended_after, why = int(ends[0][0]), ends[0][1]
    assert ended_after <= 9
    steps = {int(r["num_updates"]): float(r["encoder_steps"]) for r in json_log_records(log, "train_inner")}
    assert sorted(steps) == list(range(1, 13))
    for update, taken in steps.items():  # num_updates counts the update just made
        assert (1 <= taken <= 4) if update <= ended_after else taken == 0, (update, taken)
    mi = {int(r["valid_num_updates"]): float(r["valid_mi"]) for r in json_log_records(log, "valid")}
    if ended_after < 9:  # the MI rule, on the validations logged before the end
        assert "valid MI" in why
        assert mi[ended_after] <= max(v for u, v in mi.items() if u < ended_after) + 1e-3
    else:
        assert "--aggressive-max-updates=9" in why
        assert all(mi[u] > mi[u - 3] - 1e-3 for u in (6, 9))

    # Interrupted right after a validation, then resumed: the same phase, the same model.
    run_command("fairseq-train", *train_args(data_bin, resumed, "--max-update", "6", *PHASE))
    second = run_command("fairseq-train", *train_args(data_bin, resumed, "--max-update", "12", *PHASE))
    assert "@ 6 updates" in second.stdout + second.stderr
    expected = load_checkpoint_state(straight / "checkpoint_last.pt")
    got = load_checkpoint_state(resumed / "checkpoint_last.pt")
    assert expected["task_state"][AggressiveEncoderUpdates.STATE_KEY]["ended_at"] == ended_after
    assert got["task_state"][AggressiveEncoderUpdates.STATE_KEY]["ended_at"] == ended_after
    for name, value in expected["model"].items():
        assert torch.allclose(value, got["model"][name], atol=1e-6), name
