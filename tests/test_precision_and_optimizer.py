"""bf16 training (--bf16-autocast, here on a CPU) and the fused Adam optimizer (--optimizer fused_adam)."""

import pytest
import torch
from fairseq.optim.adam import Adam as FairseqAdamKernel
from omegaconf import OmegaConf

from fairseq_svae.errors import USER_ERROR_EXIT_STATUS, OptionError
from fairseq_svae.models.sentence_vae_encoder import POSTERIOR_LOGVAR, POSTERIOR_MEAN
from fairseq_svae.optim.fused_adam import FusedAdam, parse_betas
from fairseq_svae.precision import bf16_autocast, full_precision, native_bf16_cpu
from fairseq_svae.token_nll import token_nll

from conftest import json_log_records, run_command, train_args
from model_helpers import build_small_model

# --- the optimizer -------------------------------------------------------------------------


def fused_adam(params, **options):
    cfg = OmegaConf.create(dict({"adam_betas": "(0.9, 0.98)", "adam_eps": 1e-8, "weight_decay": 0.0,
                                 "lr": [1e-2]}, **options))
    return FusedAdam(cfg, params)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_fused_adam_takes_the_steps_of_fairseqs_adam(weight_decay):
    generator = torch.Generator().manual_seed(0)
    start = [torch.randn(50, 7, generator=generator), torch.randn(13, generator=generator)]
    ours = [p.clone().requires_grad_() for p in start]
    theirs = [p.clone().requires_grad_() for p in start]
    optimizer = fused_adam(ours, weight_decay=weight_decay)
    reference = FairseqAdamKernel(theirs, lr=1e-2, betas=(0.9, 0.98), eps=1e-8, weight_decay=weight_decay)
    for _ in range(20):
        grads = [torch.randn(p.shape, generator=generator) for p in start]
        for params in (ours, theirs):
            for param, grad in zip(params, grads):
                param.grad = grad.clone()
        optimizer.step()
        reference.step()
    moved = sum((a - b).abs().max() for a, b in zip(theirs, start))
    assert moved > 0.1  # 20 steps of lr 1e-2 move the parameters ...
    for a, b in zip(ours, theirs):  # ... and both optimizers to the same place
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("betas, expected", [("(0.9, 0.98)", (0.9, 0.98)), ("[0.8,0.9]", (0.8, 0.9)),
                                             ((0.5, 0.999), (0.5, 0.999))])
def test_adam_betas_are_read_as_fairseq_writes_them(betas, expected):
    assert parse_betas(betas) == pytest.approx(expected)


@pytest.mark.parametrize("betas", ["0.9", "(0.9, 1.5)", "(a, b)"])
def test_bad_adam_betas_name_the_option(betas):
    with pytest.raises(OptionError, match="--adam-betas"):
        parse_betas(betas)


def test_a_fused_adam_run_resumes_exactly(data_bin, tmp_path):
    options = ("--optimizer", "fused_adam", "--weight-decay", "0.01", "--clip-norm", "0.5",
               "--adam-betas", "(0.9, 0.98)")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_command("fairseq-train", *train_args(data_bin, straight, "--max-update", "30", *options))
    run_command("fairseq-train", *train_args(data_bin, resumed, "--max-update", "26", *options))
    second = run_command("fairseq-train", *train_args(data_bin, resumed, "--max-update", "30", *options))
    assert "@ 26 updates" in second.stdout + second.stderr

    from fairseq_svae.checkpoint_io import load_checkpoint_state

    expected = load_checkpoint_state(straight / "checkpoint_last.pt")
    got = load_checkpoint_state(resumed / "checkpoint_last.pt")
    assert expected["last_optimizer_state"]["state"], "the optimizer state is saved"
    for name, value in expected["model"].items():
        assert torch.allclose(value, got["model"][name], atol=1e-6), name


# --- bf16 on a CPU -------------------------------------------------------------------------


def test_under_bf16_autocast_the_posterior_and_the_loss_stay_fp32_and_the_lstms_follow_the_cpu():
    model = build_small_model().train()
    vocabulary = len(model.decoder.dictionary)
    tokens = torch.randint(4, vocabulary, (3, 6))
    with bf16_autocast():
        features, extra = model(tokens, torch.tensor([6, 6, 6]), tokens, features_only=True)
        logits = model.decoder.output_layer(features.reshape(-1, features.size(-1)))
        with full_precision():
            assert model.decoder.output_layer(features[:1, 0].float()).dtype == torch.float32
    assert logits.dtype == torch.bfloat16
    # The decoder LSTM's features are bf16 where oneDNN has a bf16 LSTM (a CPU with native bf16),
    # fp32 elsewhere; the posterior and the loss are fp32 on every CPU.
    assert features.dtype == (torch.bfloat16 if native_bf16_cpu() else torch.float32)
    assert extra[POSTERIOR_MEAN].dtype == extra[POSTERIOR_LOGVAR].dtype == torch.float32
    loss = token_nll(logits, tokens.reshape(-1)).sum()
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    assert model.decoder.output_projection.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("layers", [1, 2])
def test_a_one_direction_encoder_reads_padded_batches_as_a_packed_lstm_does(layers):
    # The encoder runs a one-direction LSTM unpacked and reads each sentence's output at its last
    # word: that must be the final hidden state a packed run gives, whatever the padding after it.
    model = build_small_model(encoder_layers=layers).eval()
    encoder = model.encoder
    lengths = torch.tensor([7, 3, 5, 1])
    tokens = torch.randint(4, len(model.decoder.dictionary), (4, 7))
    for row, length in enumerate(lengths):
        tokens[row, length:] = model.decoder.dictionary.pad()
    mean, logvar = encoder.posterior(tokens, lengths)
    embedded = encoder.embed_tokens(tokens.t())
    packed = torch.nn.utils.rnn.pack_padded_sequence(embedded, lengths, enforce_sorted=False)
    _, (final_hidden, _) = encoder.lstm(packed)
    expected_mean, _ = encoder.to_posterior(final_hidden[-1]).chunk(2, dim=-1)
    if encoder.mean_norm is not None:
        expected_mean = encoder.mean_norm(expected_mean)
    torch.testing.assert_close(mean, expected_mean, rtol=1e-5, atol=1e-6)
    # Padding changes nothing: the same sentences padded wider give the same codes.
    wider = torch.cat([tokens, torch.full((4, 3), model.decoder.dictionary.pad())], dim=1)
    torch.testing.assert_close(encoder.posterior(wider, lengths)[0], mean, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_trains_like_fp32_and_its_earlier_name_means_the_same(data_bin, tmp_path):
    logs = {}
    for name, extra in (("fp32", ()), ("bf16", ("--bf16-autocast",)), ("cpu-bf16", ("--cpu-bf16",))):
        result = run_command("fairseq-train", *train_args(
            data_bin, tmp_path / name, "--max-update", "12", "--max-epoch", "1", "--no-save",
            "--log-interval", "4", "--kl-schedule", "constant", *extra))
        logs[name] = result.stdout + result.stderr
    fp32, bf16, cpu_bf16 = (json_log_records(logs[name], "train_inner") for name in ("fp32", "bf16", "cpu-bf16"))
    assert len(fp32) == len(bf16) == 3
    # The same option under two names: the same arithmetic, so the same losses (fp32's differ
    # from bf16's by far more than this tolerance).
    assert [float(r["loss"]) for r in cpu_bf16] == pytest.approx([float(r["loss"]) for r in bf16], rel=1e-4)
    for a, b in zip(fp32, bf16):
        # The same batches from the same start: bf16 rounds the logits to 3 significant digits,
        # which moves a per-sentence loss of ~100 nats by far less than 2%.
        assert float(b["loss"]) == pytest.approx(float(a["loss"]), rel=0.02)
        assert float(b["kl"]) == pytest.approx(float(a["kl"]), rel=0.25, abs=0.05)
    # It learns: 12 updates from a uniform-ish start lower the per-token NLL by about 0.4 nats.
    assert float(bf16[-1]["nll_per_token"]) < float(bf16[0]["nll_per_token"]) - 0.1


def test_fairseqs_own_bf16_on_a_cpu_stops_with_one_line_naming_the_plugins_option(data_bin, tmp_path):
    result = run_command("fairseq-train", *train_args(data_bin, tmp_path / "x", "--bf16", "--max-update", "1"),
                         check=False)
    assert result.returncode == USER_ERROR_EXIT_STATUS
    error_lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(error_lines) == 1 and "--bf16-autocast" in error_lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_bf16_autocast_with_fp16_is_refused(data_bin, tmp_path):
    result = run_command("fairseq-train", *train_args(
        data_bin, tmp_path / "x", "--bf16-autocast", "--fp16", "--max-update", "1"), check=False)
    assert result.returncode == USER_ERROR_EXIT_STATUS
    assert "--bf16-autocast cannot be combined with --fp16" in result.stderr
