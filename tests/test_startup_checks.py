"""Checks at start-up and during training (issue 25, items 5-7), with real fairseq commands on
real damaged files: a --save-dir that cannot be used, a --restore-file of another model, a
damaged or half-missing binarized split, a missing, damaged or wrong-model --path in fairseq's
evaluation commands, and a NaN loss. Each ends in one line and exit status 1, no traceback."""

import os
import re
import shutil
import subprocess

import pytest
import torch
from fairseq.data import Dictionary

from fairseq_svae.checkpoint_io import load_checkpoint_state

from conftest import PLUGIN_DIR, run_command, train_args

FIX = "Binarize the text again with fairseq-preprocess into a new directory and pass that one: fairseq-preprocess "


def one_error_line(result, program="fairseq-train"):
    """The one ``PROG: error: ...`` line a failed command printed (asserting there is exactly one,
    no traceback and exit status 1)."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    lines = [line for line in output.splitlines() if ": error: " in line]
    assert len(lines) == 1, output[-4000:]
    assert lines[0].startswith(f"{program}: error: "), lines[0]
    return lines[0]


def train(data_dir, save_dir, *extra, check=True):
    return run_command("fairseq-train", *train_args(data_dir, save_dir, "--no-epoch-checkpoints", *extra),
                       check=check)


@pytest.fixture(scope="module")
def resumable(data_bin, tmp_path_factory):
    """A save directory holding the checkpoints of 3 updates of the small model."""
    save_dir = tmp_path_factory.mktemp("resumable")
    train(data_bin, save_dir, "--max-update", "3")
    return save_dir


def copy_of(save_dir, tmp_path):
    copy = tmp_path / "checkpoints"
    shutil.copytree(save_dir, copy)
    return copy


# --- 5. --save-dir -----------------------------------------------------------------------------

def test_a_save_dir_that_is_a_file_is_refused_in_one_line(data_bin, tmp_path):
    a_file = tmp_path / "checkpoints"
    a_file.write_text("not a directory")
    line = one_error_line(train(data_bin, a_file, "--max-update", "1", check=False))
    assert line == (f"fairseq-train: error: SaveDirectoryError: --save-dir {a_file} is a file, not a "
                    f"directory: fairseq-train saves its checkpoints into a directory of that name. Pass "
                    f"another --save-dir, or move the file away")
    below = a_file / "run1"
    line = one_error_line(train(data_bin, below, "--max-update", "1", check=False))
    assert line == (f"fairseq-train: error: SaveDirectoryError: --save-dir {below} cannot be created: "
                    f"{a_file} is a file, not a directory. Pass another --save-dir, or move the file away")
    assert a_file.read_text() == "not a directory"


@pytest.fixture
def read_only_directory(tmp_path):
    """A directory nobody, root included, may create files in: immutable (chattr +i) where the
    file system allows it, else a read-only tmpfs; skipped where neither can be made."""
    directory = tmp_path / "read-only"
    directory.mkdir()
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(directory)],
                                                 capture_output=True).returncode == 0:
        try:
            yield directory, "EPERM"
        finally:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        return
    if os.geteuid() == 0 and shutil.which("mount") and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(directory)],
            capture_output=True).returncode == 0:
        try:
            yield directory, "EROFS"
        finally:
            subprocess.run(["umount", str(directory)], check=True)
        return
    if os.geteuid() != 0:  # an ordinary user: a directory without write permission will do
        directory.chmod(0o555)
        try:
            yield directory, "EACCES"
        finally:
            directory.chmod(0o755)
        return
    pytest.skip("neither chattr +i nor a read-only tmpfs is possible here")


def test_a_read_only_save_dir_is_refused_in_one_line(data_bin, read_only_directory):
    directory, code = read_only_directory
    line = one_error_line(train(data_bin, directory, "--max-update", "1", check=False))
    assert line.startswith(f"fairseq-train: error: SaveDirectoryError: --save-dir {directory} cannot be "
                           f"written into: "), line
    assert f"[{code}], creating a file there. fairseq-train saves its checkpoints into it: " in line
    assert "pass a --save-dir" in line
    assert os.listdir(directory) == []


# --- 5. --restore-file of another model ----------------------------------------------------------

def test_resuming_with_another_latent_dim_is_refused_naming_both(data_bin, resumable, tmp_path):
    save_dir = copy_of(resumable, tmp_path)
    result = train(data_bin, save_dir, "--max-update", "5", "--latent-dim", "32",
                   "--encoder-bidirectional", check=False)
    line = one_error_line(result)
    dictionary_size = len(Dictionary.load(str(data_bin / "dict.txt")))
    assert line == (
        f"fairseq-train: error: IncompatibleCheckpointError: cannot resume from {save_dir}/checkpoint_last.pt: "
        f"it holds a model of --arch sentence_vae with --latent-dim 16 and a dictionary of {dictionary_size:,} "
        f"types, and this run builds --arch sentence_vae with --latent-dim 32 and a dictionary of "
        f"{dictionary_size:,} types; they also differ in --encoder-bidirectional (False in the checkpoint, "
        f"True here). To resume it, run with the options and the data directory it was trained with; to train "
        f"this model from scratch, give it another --save-dir (fairseq-train resumes from --restore-file, "
        f"by default checkpoint_last.pt in --save-dir {save_dir})")
    assert "Cannot load model parameters" not in result.stdout + result.stderr


def test_resuming_with_another_dictionary_or_architecture_is_refused(
        data_bin, short_sentences_bin, resumable, tmp_path):
    last = resumable / "checkpoint_last.pt"
    types = len(Dictionary.load(str(short_sentences_bin / "dict.txt")))
    result = train(short_sentences_bin, tmp_path / "other-data", "--max-update", "5",
                   "--restore-file", last, check=False)
    line = one_error_line(result)
    assert re.fullmatch(
        rf"fairseq-train: error: IncompatibleCheckpointError: cannot resume from {re.escape(str(last))}: it "
        rf"holds a model of --arch sentence_vae with --latent-dim 16 and a dictionary of [\d,]+ types, and "
        rf"this run builds --arch sentence_vae with --latent-dim 16 and a dictionary of {types:,} types\. "
        rf"To resume it, .*", line), line

    # Another architecture: fairseq's lstm_lm under the sentence_vae task.
    lm_dir = tmp_path / "lm"
    run_command("fairseq-train", data_bin, "--user-dir", PLUGIN_DIR, "--task", "language_modeling",
                "--sample-break-mode", "eos", "--arch", "lstm_lm", "--decoder-embed-dim", "16",
                "--decoder-hidden-size", "16", "--decoder-out-embed-dim", "16", "--optimizer", "adam",
                "--lr", "1e-3", "--max-tokens", "2000", "--max-update", "1", "--cpu", "--save-dir", lm_dir,
                "--no-epoch-checkpoints", "--num-workers", "0")
    result = train(data_bin, tmp_path / "from-lm", "--max-update", "2", "--restore-file",
                   lm_dir / "checkpoint_last.pt", check=False)
    line = one_error_line(result)
    assert f"cannot resume from {lm_dir}/checkpoint_last.pt: it holds a model of --arch lstm_lm and a " \
           f"dictionary of " in line and "this run builds --arch sentence_vae with --latent-dim 16" in line, line


# --- 5. Damaged or half-missing binarized splits ---------------------------------------------------

def truncate(path, by):
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) - by)


def overwrite(path, offset, data):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


DAMAGES = {
    # name: (how to damage DATA, the file the message names, what it says then)
    "truncated-bin": (lambda d: truncate(d / "train.bin", 10), "train.bin",
                      r"it is [\d,]+ bytes long where its index \S+train\.idx lists 2,000 sentences of [\d,]+ "
                      r"word ids \([\d,]+ bytes\): truncated, as after an interrupted copy or a full disk"),
    "altered-bin": (lambda d: overwrite(d / "train.bin", 1000, b"\xff" * 64), "train.bin",
                    r"sentence \d+ holds the word id 65535, and the dictionary \S+dict\.txt has [\d,]+ types "
                    r"\(ids 0 to [\d,]+\): the file was altered, or binarized with another dictionary"),
    "idx-header": (lambda d: overwrite(d / "train.idx", 0, b"XXXX"), "train.idx",
                   r"it does not begin with the header fairseq-preprocess writes \(4d 4d 49 44 49 44 58 00 "
                   r"00\) but with 58 58 58 58 49 44 58 00 00; it is the index of \S+train\.bin"),
    "idx-lengths": (lambda d: overwrite(d / "train.idx", 26 + 4 * 10, b"\x07\x00\x00\x00"), "train.idx",
                    r"the byte offset of sentence 12 \([\d,]+\) does not follow from the lengths of the "
                    r"sentences before it \([\d,]+\): the index was altered; it is the index of \S+train\.bin"),
    "truncated-idx": (lambda d: truncate(d / "valid.idx", 8), "valid.idx",
                      r"it is [\d,]+ bytes long where the 200 sentences its header counts need [\d,]+ "
                      r"\(truncated\); it is the index of \S+valid\.bin"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_split_is_refused_naming_the_file_and_fairseq_preprocess(damage, data_bin, tmp_path):
    corpus = tmp_path / "data-bin"
    shutil.copytree(data_bin, corpus)
    damage_files, named, reason = DAMAGES[damage]
    damage_files(corpus)
    line = one_error_line(train(corpus, tmp_path / "checkpoints", "--max-update", "1", check=False))
    assert re.fullmatch(
        rf"fairseq-train: error: DamagedDataError: {re.escape(str(corpus / named))} is damaged: {reason}\. "
        rf"{re.escape(FIX)}--only-source --srcdict {re.escape(str(corpus / 'dict.txt'))} --trainpref train\.txt "
        rf"--validpref valid\.txt --testpref test\.txt --destdir {re.escape(str(corpus))}-rebinarized", line), line


@pytest.mark.parametrize("missing,present", [("valid.idx", "valid.bin"), ("valid.bin", "valid.idx")])
def test_half_a_split_names_exactly_the_missing_file(missing, present, data_bin, tmp_path):
    corpus = tmp_path / "data-bin"
    shutil.copytree(data_bin, corpus)
    (corpus / missing).unlink()
    line = one_error_line(train(corpus, tmp_path / "checkpoints", "--max-update", "1", check=False))
    assert line.startswith(
        f"fairseq-train: error: MissingDataError: split 'valid' is incomplete: {corpus / missing} is missing "
        f"({corpus / present} is there); fairseq-preprocess writes the two together. {FIX}"), line
    # Not the message for a split that is not there at all
    assert "not found" not in line


def test_an_intact_data_directory_passes_the_check(data_bin):
    from fairseq_svae.startup_checks import check_split_files

    dictionary = Dictionary.load(str(data_bin / "dict.txt"))
    for split in ("train", "valid", "test"):
        check_split_files(str(data_bin / split), dictionary, combine=True)
    check_split_files(str(data_bin / "absent"), dictionary)  # not there: the task's own message


# --- 6. --path of fairseq-generate, fairseq-validate, fairseq-eval-lm --------------------------------

EVALUATION_COMMANDS = {
    "fairseq-generate": ["--task", "sentence_vae", "--gen-subset", "valid", "--beam", "1", "--batch-size", "50"],
    "fairseq-validate": ["--task", "sentence_vae", "--valid-subset", "valid", "--batch-size", "50"],
    "fairseq-eval-lm": ["--gen-subset", "valid", "--batch-size", "50"],
}


def evaluate(program, data_dir, path):
    return run_command(program, data_dir, "--user-dir", PLUGIN_DIR, "--path", path, "--cpu",
                       *EVALUATION_COMMANDS[program], check=False)


@pytest.mark.parametrize("program", sorted(EVALUATION_COMMANDS))
def test_a_missing_or_damaged_path_is_one_line_in_fairseq_commands(program, data_bin, resumable, tmp_path):
    missing = tmp_path / "no-such-checkpoint.pt"
    line = one_error_line(evaluate(program, data_bin, missing), program)
    assert line == (f"{program}: error: MissingCheckpointError: checkpoint {str(missing)!r} not found; pass "
                    f"--path SAVE_DIR/checkpoint_best.pt, where SAVE_DIR is the --save-dir of a fairseq-train "
                    f"run (it holds checkpoint_best.pt and checkpoint_last.pt)")

    damaged = tmp_path / "checkpoint_best.pt"
    content = (resumable / "checkpoint_best.pt").read_bytes()
    damaged.write_bytes(content[: len(content) // 2])
    line = one_error_line(evaluate(program, data_bin, damaged), program)
    assert line.startswith(f"{program}: error: DamagedCheckpointError: cannot use checkpoint {damaged}: "
                           f"truncated: "), line


def test_a_wrong_model_path_is_one_line_in_fairseq_commands(data_bin, short_sentences_bin, resumable):
    checkpoint = resumable / "checkpoint_best.pt"
    # A Sentence VAE is no language model for fairseq-eval-lm.
    line = one_error_line(evaluate("fairseq-eval-lm", data_bin, checkpoint), "fairseq-eval-lm")
    assert line == (f"fairseq-eval-lm: error: IncompatibleCheckpointError: fairseq-eval-lm scores language "
                    f"models, and {checkpoint} holds a Sentence VAE: score it with svae-eval DATA_DIR --path "
                    f"{checkpoint} (importance-weighted NLL and perplexity), or pass a language model's "
                    f"checkpoint (fairseq-train --task language_modeling)")
    # A model of another data directory's dictionary, in fairseq-generate and fairseq-validate.
    for program in ("fairseq-generate", "fairseq-validate"):
        line = one_error_line(evaluate(program, short_sentences_bin, checkpoint), program)
        assert line.startswith(f"{program}: error: DictionaryMismatchError: the dictionary "), line


# --- 7. NaN and infinity in training ---------------------------------------------------------------

def test_a_nan_loss_stops_in_one_line_and_keeps_the_last_good_checkpoint(data_bin, resumable, tmp_path):
    save_dir = copy_of(resumable, tmp_path)
    last = save_dir / "checkpoint_last.pt"
    good = last.read_bytes()
    # The same run continued at a learning rate that sends the weights to 1e30 in one Adam step:
    # the next update's gradients are NaN or infinite.
    result = train(data_bin, save_dir, "--max-update", "20", "--lr", "1e30", check=False)
    line = one_error_line(result)
    match = re.fullmatch(
        rf"fairseq-train: error: NonFiniteLossError: the loss or its gradients became NaN or infinite in "
        rf"update (\d+) \(gradients are Nan/Inf\): training stopped before that update changed a weight, and "
        rf"the checkpoints in {re.escape(str(save_dir))} are as they were\. Usual causes: a learning rate too "
        rf"high \(--lr is 1e\+30: lower it, or add --clip-norm 1\.0\), fp16 overflow \(with --fp16: try --amp, "
        rf"or train in fp32\), or bad data \(a damaged split: binarize it again\)\. Fix it and run the same "
        rf"command again: it resumes from checkpoint_last\.pt", line)
    assert match, line
    assert int(match.group(1)) > 3  # an update of this run, after the 3 the checkpoint holds
    assert last.read_bytes() == good
    state = load_checkpoint_state(last)
    assert state["optimizer_history"][-1]["num_updates"] == 3
    assert all(torch.isfinite(tensor).all() for tensor in state["model"].values() if tensor.is_floating_point())


def test_weights_that_overflowed_are_never_saved(data_bin, resumable, tmp_path):
    save_dir = tmp_path / "sgd"
    # Plain SGD at 1e38: finite gradients times the rate overflow float32, and the update's
    # weights hold inf before any gradient is NaN; the save after it is refused.
    result = train(data_bin, save_dir, "--optimizer", "sgd", "--lr", "1e38", "--max-update", "5",
                   "--save-interval-updates", "1", check=False)
    line = one_error_line(result)
    assert re.fullmatch(
        rf"fairseq-train: error: NonFiniteLossError: not saving a checkpoint after update 1: the weight \S+ "
        rf"holds NaN or infinite values, so nothing was saved in {re.escape(str(save_dir))}\. Usual causes: "
        rf"a learning rate too high \(--lr is 1e\+38: .*", line), line
    assert not (save_dir / "checkpoint_last.pt").exists()


def test_the_new_errors_are_user_errors_and_the_builtin_errors_callers_catch():
    from fairseq_svae.errors import DamagedDataError, NonFiniteLossError, SaveDirectoryError, UserError

    assert issubclass(SaveDirectoryError, UserError) and issubclass(SaveDirectoryError, OSError)
    assert issubclass(NonFiniteLossError, UserError) and issubclass(NonFiniteLossError, FloatingPointError)
    assert issubclass(DamagedDataError, UserError) and issubclass(DamagedDataError, ValueError)


def test_resuming_with_a_dictionary_of_the_same_size_but_other_words_is_refused(data_bin, resumable, tmp_path):
    corpus = tmp_path / "data-bin"
    shutil.copytree(data_bin, corpus)
    lines = (corpus / "dict.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    lines[0], lines[1] = lines[1], lines[0]  # two words trade ids: same size, other dictionary
    (corpus / "dict.txt").write_text("".join(lines), encoding="utf-8")
    save_dir = copy_of(resumable, tmp_path)
    line = one_error_line(train(corpus, save_dir, "--max-update", "5", check=False))
    assert re.fullmatch(
        rf"fairseq-train: error: IncompatibleCheckpointError: cannot resume from {re.escape(str(save_dir))}"
        rf"/checkpoint_last\.pt: it was trained with another dictionary \([\d,]+ types, sha256 \w+\) than "
        rf"this run's \([\d,]+ types, sha256 \w+\): every embedding row would stand for another word\. To "
        rf"resume it, .*", line), line
