"""The task's data handling and errors, and the criterion's loss and logging, in-process."""

import os
import shutil
import subprocess

import pytest
import torch
from fairseq.logging import metrics

from fairseq_svae.criterions.annealed_elbo import AnnealedELBOCriterion
from fairseq_svae.gaussian import kl_to_standard_normal
from fairseq_svae.tasks.sentence_vae import SentenceVAETask, SentenceVAETaskConfig

from fairseq_svae.errors import MissingDataError

from conftest import BIN, PLUGIN_DIR, SLICE_LINES, run_command
from model_helpers import build_small_model, encode_sentences

SENTENCES = ["the cat sat on a mat", "a dog ran away from the big red house", "the cat"]


def test_missing_data_directory_names_the_path_and_the_preprocess_command(tmp_path):
    missing = tmp_path / "no-such-dir"
    with pytest.raises(FileNotFoundError, match=r"no-such-dir.*does not exist.*fairseq-preprocess --only-source"):
        SentenceVAETask.setup_task(SentenceVAETaskConfig(data=str(missing)))


def test_fairseq_train_reports_a_missing_data_directory_in_one_line(tmp_path):
    missing = tmp_path / "no-such-dir"
    result = run_command("fairseq-train", missing, "--user-dir", PLUGIN_DIR, "--task", "sentence_vae",
                         "--arch", "sentence_vae", "--criterion", "annealed_elbo", "--batch-size", "8", "--cpu",
                         check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"fairseq-train: error: MissingDataError: data directory '{missing}' does not exist; create it with")


def test_missing_dictionary_names_the_file_and_a_fresh_destination(tmp_path):
    with pytest.raises(MissingDataError, match=rf"dict\.txt.*not found.*fairseq-preprocess.*--destdir {tmp_path}$"):
        SentenceVAETask.setup_task(SentenceVAETaskConfig(data=str(tmp_path)))
    # A directory that already holds files is never the suggested --destdir.
    (tmp_path / "train.bin").write_bytes(b"keep me")
    with pytest.raises(MissingDataError, match=rf"--destdir {tmp_path}-binarized$"):
        SentenceVAETask.setup_task(SentenceVAETaskConfig(data=str(tmp_path)))


def run_suggested_command(message: str, cwd):
    command = message.split("copy it in: ", 1)[1]
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("split", ["dev", "valid2"])
def test_the_command_a_missing_split_suggests_adds_it_and_changes_no_existing_file(
        split, data_bin, brown_slice, tmp_path):
    corpus = tmp_path / "mycorpus"
    shutil.copytree(data_bin, corpus)
    before = {path.name: path.read_bytes() for path in corpus.iterdir()}
    task = SentenceVAETask.setup_task(SentenceVAETaskConfig(data=str(corpus)))
    with pytest.raises(MissingDataError) as caught:
        task.load_dataset(split)
    message = str(caught.value)
    assert message.startswith(f"split {split!r} not found: no {corpus / split}.bin/.idx. Splits in {corpus}: "
                              f"test, train, valid. fairseq-preprocess names what it writes train, valid, test")
    assert (f"never writes a split called {split!r}" in message) == (split == "dev")

    # Followed literally, with the user's text under the name the message uses.
    shutil.copy(brown_slice / "valid.txt", tmp_path / f"{split}.txt")
    result = run_suggested_command(message, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for name, content in before.items():
        assert (corpus / name).read_bytes() == content, f"{name} changed"
    task.load_dataset(split)
    task.load_dataset("valid")
    added, valid = task.dataset(split), task.dataset("valid")
    assert len(added) == len(valid) == SLICE_LINES["valid"]
    assert all(torch.equal(added[i]["source"], valid[i]["source"]) for i in range(len(valid)))

    # Run again, it still replaces nothing (cp -n), not even the split it added.
    added_bytes = (corpus / f"{split}.bin").read_bytes()
    (tmp_path / f"{split}.txt").write_text("other text\n", encoding="utf-8")
    run_suggested_command(message, tmp_path)
    assert (corpus / f"{split}.bin").read_bytes() == added_bytes
    for name, content in before.items():
        assert (corpus / name).read_bytes() == content


def test_samples_feed_the_sentence_to_the_encoder_and_predict_it_with_eos(data_bin, brown_slice):
    task = SentenceVAETask.setup_task(SentenceVAETaskConfig(data=str(data_bin)))
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    first_line = (brown_slice / "valid.txt").read_text().splitlines()[0]
    sample = dataset.collater([dataset[0]])
    eos = task.dictionary.eos()
    words = task.dictionary.encode_line(first_line, add_if_not_exist=False, append_eos=False).long()
    expected_target = torch.cat([words, torch.tensor([eos])])
    assert torch.equal(sample["target"][0], expected_target)
    assert torch.equal(sample["net_input"]["src_tokens"][0], expected_target)
    assert torch.equal(sample["net_input"]["prev_output_tokens"][0], torch.cat([torch.tensor([eos]), words]))


def test_empty_lines_train_and_validate(tmp_path):
    lines = ["the cat sat", "", "a dog ran", "", "the cat ran"] * 20
    for split in ("train", "valid"):
        (tmp_path / f"{split}.txt").write_text("\n".join(lines) + "\n")
    run_command("fairseq-preprocess", "--only-source", "--trainpref", tmp_path / "train.txt",
                "--validpref", tmp_path / "valid.txt", "--destdir", tmp_path / "bin")
    result = run_command("fairseq-train", tmp_path / "bin", "--user-dir", PLUGIN_DIR, "--task", "sentence_vae",
                         "--arch", "sentence_vae", "--encoder-embed-dim", "8", "--encoder-hidden-size", "8",
                         "--latent-dim", "2", "--criterion", "annealed_elbo", "--optimizer", "adam",
                         "--lr", "1e-3", "--batch-size", "8", "--max-epoch", "1", "--cpu", "--no-save",
                         "--num-workers", "0")
    assert "valid on 'valid' subset" in result.stdout + result.stderr


def small_sample(model):
    src, lengths, prev, target = encode_sentences(model.decoder.dictionary, SENTENCES)
    return {
        "net_input": {"src_tokens": src, "src_lengths": lengths, "prev_output_tokens": prev},
        "target": target,
        "ntokens": int(lengths.sum()),
        "nsentences": len(SENTENCES),
    }


def build_criterion(task, **overrides):
    options = dict(kl_schedule="linear", kl_max_weight=1.0, kl_logistic_slope=0.0025,
                   kl_logistic_midpoint=2500, kl_anneal_updates=100, kl_cycles=4,
                   kl_cycle_rise_fraction=0.5, free_bits=0.0)
    options.update(overrides)
    return AnnealedELBOCriterion(task, **options)


def reference_terms(model, sample, seed):
    """NLL and KL of the same z draw, computed with PyTorch's own cross entropy."""
    torch.manual_seed(seed)
    logits, extra = model(**sample["net_input"])
    nll = torch.nn.functional.cross_entropy(
        logits.view(-1, logits.size(-1)), sample["target"].view(-1),
        ignore_index=model.decoder.dictionary.pad(), reduction="sum")
    kl = kl_to_standard_normal(extra["posterior_mean"], extra["posterior_logvar"]).sum()
    return nll.item(), kl.item()


def test_training_loss_is_nll_plus_scheduled_kl_and_validation_loss_the_negative_elbo():
    model = build_small_model()
    task = SentenceVAETask(SentenceVAETaskConfig(), model.decoder.dictionary)
    criterion = build_criterion(task)
    sample = small_sample(model)

    model.train()
    criterion.set_num_updates(25)  # linear over 100 updates: weight 0.25
    nll, kl = reference_terms(model, sample, seed=7)
    torch.manual_seed(7)
    loss, sample_size, log = criterion(model, sample)
    assert sample_size == 3
    assert log["kl_weight_x_sentences"] == pytest.approx(0.25 * 3)
    assert loss.item() == pytest.approx(nll + 0.25 * kl, rel=1e-5)

    model.eval()
    nll, kl = reference_terms(model, sample, seed=8)
    torch.manual_seed(8)
    loss, _, log = criterion(model, sample)
    assert loss.item() == pytest.approx(nll + kl, rel=1e-5)
    assert log["kl_weight_x_sentences"] == 3.0


def test_free_bits_change_the_training_loss_but_not_the_validation_negative_elbo():
    model = build_small_model()
    task = SentenceVAETask(SentenceVAETaskConfig(), model.decoder.dictionary)
    criterion = build_criterion(task, kl_schedule="constant", free_bits=5.0)
    sample = small_sample(model)
    model.train()
    torch.manual_seed(1)
    loss, _, log = criterion(model, sample)
    # Every dimension is under a 5-nat floor: the KL term is 3 sentences x 6 dims x 5 nats.
    assert loss.item() == pytest.approx(log["nll"].item() + 3 * 6 * 5.0, rel=1e-5)
    model.eval()
    torch.manual_seed(1)
    loss, _, log = criterion(model, sample)
    assert loss.item() == pytest.approx(log["nll"].item() + log["kl"].item(), rel=1e-5)


def test_logged_figures_are_per_sentence_and_per_token_after_summing_workers():
    logging_outputs = [
        {"loss": 300.0, "nll": 280.0, "kl": 30.0, "kl_weight_x_sentences": 1.0, "ntokens": 40,
         "nsentences": 2, "sample_size": 2},
        {"loss": 100.0, "nll": 90.0, "kl": 10.0, "kl_weight_x_sentences": 1.0, "ntokens": 20,
         "nsentences": 2, "sample_size": 2},
    ]
    with metrics.aggregate() as aggregator:
        AnnealedELBOCriterion.reduce_metrics(logging_outputs)
        values = aggregator.get_smoothed_values()
    assert values["loss"] == pytest.approx(100.0)
    assert values["nll"] == pytest.approx(92.5)
    assert values["kl"] == pytest.approx(10.0)
    assert values["neg_elbo"] == pytest.approx(102.5)
    assert values["kl_weight"] == pytest.approx(0.5)
    assert values["nll_per_token"] == pytest.approx(370 / 60, abs=1e-4)
    assert values["ppl"] == pytest.approx(2.718281828 ** (410 / 60), rel=1e-3)
    assert AnnealedELBOCriterion.logging_outputs_can_be_summed()


def test_half_precision_forward_keeps_the_kl_in_fp32_and_finite():
    model = build_small_model().to(torch.bfloat16)
    task = SentenceVAETask(SentenceVAETaskConfig(), model.decoder.dictionary)
    criterion = build_criterion(task)
    sample = small_sample(model)
    model.train()
    loss, _, log = criterion(model, sample)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert log["kl"].dtype == torch.float32
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.fixture(scope="module")
def odd_sized_data_bin(brown_slice, tmp_path_factory):
    """203 test sentences: a count fairseq 0.12 cannot split into batches that are all multiples of 8."""
    root = tmp_path_factory.mktemp("odd")
    lines = (brown_slice / "train.txt").read_text().splitlines()
    (root / "train.txt").write_text("\n".join(lines[:500]) + "\n")
    (root / "test.txt").write_text("\n".join(lines[500:703]) + "\n")
    run_command("fairseq-preprocess", "--only-source", "--trainpref", root / "train.txt",
                "--testpref", root / "test.txt", "--destdir", root / "bin")
    return root / "bin"


@pytest.mark.parametrize("max_tokens", [500, 1500, 4000])
def test_batches_cover_every_sentence_exactly_once(odd_sized_data_bin, max_tokens):
    # fairseq 0.12 alone drops a last batch whose size is not a multiple of 8 (issue #5036).
    task = SentenceVAETask.setup_task(SentenceVAETaskConfig(data=str(odd_sized_data_bin)))
    task.load_dataset("test")
    dataset = task.dataset("test")
    iterator = task.get_batch_iterator(dataset, max_tokens=max_tokens, required_batch_size_multiple=8,
                                       max_positions=task.max_positions())
    ids = [int(i) for batch in iterator.next_epoch_itr(shuffle=False) for i in batch["id"]]
    assert sorted(ids) == list(range(203))
