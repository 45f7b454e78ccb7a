"""Checkpoints load with torch's weights-only protection on; unsafe or broken files are refused
clearly; fairseq's checkpoint copies cannot be left half-written."""

import os
import pickle
import shutil
import zipfile

import pytest
import torch
from fairseq.file_io import PathManager

from fairseq_svae.checkpoint_io import (
    DamagedCheckpointError,
    UnsafeCheckpointError,
    load_checkpoint_state,
)

from conftest import PLUGIN_DIR, run_command


class _RunsAShellCommand:
    """What a malicious checkpoint looks like: unpickling it calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_malicious_checkpoint(path, marker, good_checkpoint):
    state = load_checkpoint_state(good_checkpoint)
    state["extra_state"]["payload"] = _RunsAShellCommand(marker)
    torch.save(state, path)


def validate(data_bin, checkpoint):
    return run_command("fairseq-validate", data_bin, "--user-dir", PLUGIN_DIR, "--task", "sentence_vae",
                       "--path", checkpoint, "--cpu", "--max-tokens", "4000", check=False)


def test_fairseq_validate_loads_plugin_checkpoints_with_weights_only_on(data_bin, trained_model):
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
    result = validate(data_bin, trained_model[0] / "checkpoint_best.pt")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "valid on 'valid' subset" in result.stdout + result.stderr


def test_a_checkpoint_that_would_run_code_is_refused(data_bin, trained_model, tmp_path):
    marker = tmp_path / "code-was-executed"
    evil = tmp_path / "evil.pt"
    write_malicious_checkpoint(evil, marker, trained_model[0] / "checkpoint_best.pt")

    with pytest.raises(UnsafeCheckpointError, match=r"refusing to load .*evil\.pt: its pickle names posix\.system"):
        load_checkpoint_state(evil)

    result = validate(data_bin, evil)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "UnsafeCheckpointError: refusing to load" in output and "posix.system" in output
    assert not marker.exists()


@pytest.mark.parametrize("kept_bytes", [10_000, "half"])
def test_a_truncated_checkpoint_gets_a_clear_error(data_bin, trained_model, tmp_path, kept_bytes):
    good = trained_model[0] / "checkpoint_best.pt"
    truncated = tmp_path / "truncated.pt"
    size = good.stat().st_size // 2 if kept_bytes == "half" else kept_bytes
    truncated.write_bytes(good.read_bytes()[:size])
    with pytest.raises(DamagedCheckpointError, match="incomplete or not a torch checkpoint"):
        load_checkpoint_state(truncated)
    result = validate(data_bin, truncated)
    assert result.returncode != 0
    assert "DamagedCheckpointError: cannot read checkpoint" in result.stdout + result.stderr


def test_the_plugin_only_allows_what_fairseq_checkpoints_contain(trained_model):
    checkpoint = trained_model[0] / "checkpoint_best.pt"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(checkpoint) == []
    allowed = torch.serialization.get_safe_globals()
    try:
        torch.serialization.clear_safe_globals()
        # Besides tensors and plain containers, a plugin checkpoint holds exactly this class.
        assert torch.serialization.get_unsafe_globals_in_checkpoint(checkpoint) == ["argparse.Namespace"]
    finally:
        torch.serialization.add_safe_globals(allowed)


def test_an_interrupted_checkpoint_copy_leaves_the_old_file_intact(tmp_path, monkeypatch):
    source = tmp_path / "checkpoint7.pt"
    source.write_bytes(b"new checkpoint " * 1000)
    last = tmp_path / "checkpoint_last.pt"
    last.write_bytes(b"good old checkpoint")

    def copy_that_dies_half_way(src, dst, *args, **kwargs):
        with open(dst, "wb") as handle:
            handle.write(open(src, "rb").read()[:100])
        raise KeyboardInterrupt  # the run is killed in the middle of the copy

    monkeypatch.setattr(shutil, "copyfile", copy_that_dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        PathManager.copy(str(source), str(last), overwrite=True)
    assert last.read_bytes() == b"good old checkpoint"

    monkeypatch.undo()
    assert PathManager.copy(str(source), str(last), overwrite=True)
    assert last.read_bytes() == source.read_bytes()
