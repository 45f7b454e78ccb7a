"""Checkpoints that do not fit: another task's model, another dictionary. Clear errors, raised
before any weight is loaded, from the hub, fairseq-generate and svae-interpolate alike."""

import shutil

import pytest

from fairseq_svae import SentenceVAEModel
from fairseq_svae.errors import DictionaryMismatchError, IncompatibleCheckpointError

from conftest import run_command
from generation_helpers import generate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_a_checkpoint_from_another_task_is_refused(trained_language_model, data_bin):
    with pytest.raises(IncompatibleCheckpointError,
                       match=r"holds a model of fairseq-train --task language_modeling --arch lstm_lm"):
        SentenceVAEModel.from_pretrained(trained_language_model.parent,
                                         checkpoint_file=trained_language_model.name,
                                         data_name_or_path=str(data_bin))

    result = generate(data_bin, trained_language_model, "--gen-subset", "valid", check=False)
    assert result.returncode != 0
    assert last_line(result.stderr).startswith(
        "fairseq-generate: error: IncompatibleCheckpointError: --task sentence_vae needs a Sentence VAE model")
    assert "Traceback" not in result.stderr
    assert "holds a model of --arch lstm_lm" in result.stderr

    interpolated = run_command("svae-interpolate", data_bin, "--path", trained_language_model, "--cpu",
                               "a b", "c d", check=False)
    assert interpolated.returncode == 1 and "Traceback" not in interpolated.stderr
    assert last_line(interpolated.stderr).startswith(
        "svae-interpolate: error: IncompatibleCheckpointError: --task sentence_vae needs a Sentence VAE model")
    assert "holds a model of fairseq-train --task language_modeling --arch lstm_lm" in interpolated.stderr


def test_another_dictionary_is_refused_before_the_weights_are_loaded(latent_model, data_bin, short_sentences_bin):
    with pytest.raises(DictionaryMismatchError, match=r"dict.txt \(\d+ types, sha256 \w+\) is not the one "
                                                      r"this checkpoint was trained with \(\d+ types"):
        SentenceVAEModel.from_pretrained(latent_model.parent, checkpoint_file=latent_model.name,
                                         data_name_or_path=str(data_bin))

    result = generate(data_bin, latent_model, "--gen-subset", "valid", check=False)
    assert result.returncode != 0
    assert last_line(result.stderr).startswith("fairseq-generate: error: DictionaryMismatchError: the dictionary")
    assert "Traceback" not in result.stderr
    assert "size mismatch" not in result.stderr  # torch's error from deep inside load_state_dict

    prior = generate(data_bin, latent_model, "--sample-from-prior", "--prior-samples", "3", check=False)
    assert prior.returncode != 0 and "DictionaryMismatchError" in prior.stderr


def test_a_dictionary_of_the_same_size_in_another_order_is_refused(latent_model, short_sentences_bin, tmp_path):
    # Same number of types, two words swapped: the weights would load and decode the wrong words.
    lines = (short_sentences_bin / "dict.txt").read_text(encoding="utf-8").splitlines()
    lines[10], lines[11] = lines[11], lines[10]
    other = tmp_path / "data-bin"
    shutil.copytree(short_sentences_bin, other)
    (other / "dict.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DictionaryMismatchError) as caught:
        SentenceVAEModel.from_pretrained(latent_model.parent, checkpoint_file=latent_model.name,
                                         data_name_or_path=str(other))
    message = str(caught.value)
    types = len(lines) + 4  # fairseq's four special symbols come before dict.txt's lines
    assert message.count(f"({types} types, sha256") == 2  # same size, different contents
    assert "--srcdict" in message


def test_prior_sample_count_must_be_positive(short_sentences_bin, latent_model):
    result = generate(short_sentences_bin, latent_model, "--sample-from-prior", "--prior-samples", "0",
                      check=False)
    assert result.returncode != 0
    assert last_line(result.stderr) == "fairseq-generate: error: OptionError: --prior-samples must be at least 1, got 0"
    assert "Traceback" not in result.stderr

    shown = generate(short_sentences_bin, latent_model, "--sample-from-prior", "--prior-samples", "0",
                     check=False, env={"SVAE_TRACEBACK": "1"})
    assert "Traceback" in shown.stderr and "OptionError: --prior-samples must be at least 1" in shown.stderr
