"""Checkpoints load with torch's weights-only protection on; unsafe files are refused as unsafe,
damaged ones (empty, truncated, not a checkpoint, bytes altered) as damaged with the reason;
fairseq's checkpoint copies cannot be left half-written."""

import argparse
import os
import pickle
import random
import re
import shutil
import struct
import zipfile

import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.file_io import PathManager

from fairseq_svae.checkpoint_io import (
    DamagedCheckpointError,
    UnsafeCheckpointError,
    _load_checkpoint_to_cpu_explained,
    fairseq_checkpoint_classes,
    load_checkpoint_state,
)
from fairseq_svae.errors import UserError

from conftest import PLUGIN_DIR, run_command, train_args


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


def damaged_files(good: bytes, tmp_path):
    """Files that are not a usable checkpoint, each with the reason its error must give."""
    legacy_plain_dict = tmp_path / "legacy-plain-dict.pt"
    torch.save({"weights": [1.0, 2.0]}, legacy_plain_dict, _use_new_zipfile_serialization=False)
    return {
        "random-bytes": (random.Random(0).randbytes(100_000),
                         r"not a zip archive nor a pickle torch can read: it begins with the bytes "
                         r"([0-9a-f]{2} ){7}[0-9a-f]{2} \(100,000 bytes\)"),
        "empty": (b"", r"the file is empty \(0 bytes\)"),
        "plain-pickle": (pickle.dumps([1, 2, 3]),
                         r"not a zip archive nor a pickle torch can read: it is a plain pickle "
                         r"\(protocol \d\) without the header torch.save writes"),
        "legacy-plain-dict": (legacy_plain_dict.read_bytes(),
                              r"not a fairseq checkpoint: its dict has no 'model' entry \(keys: 'weights'\)"),
        "truncated-10000": (good[:10_000],
                            r"truncated: the zip archive stops after 10,000 bytes, before its index"),
        "truncated-half": (good[:len(good) // 2],
                           rf"truncated: the zip archive stops after {len(good) // 2:,} bytes, before its index"),
    }


def assert_one_line_damaged_error(result, path, reason):
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if "DamagedCheckpointError:" in line]
    assert len(lines) == 1, output[-3000:]
    assert re.search(rf"DamagedCheckpointError: cannot use checkpoint {re.escape(str(path))}: {reason}",
                     lines[0]), lines[0]
    assert "checkpoint_best.pt or an epoch checkpoint" in lines[0]
    assert "weights_only" not in output


DAMAGED_KINDS = ["random-bytes", "empty", "plain-pickle", "legacy-plain-dict", "truncated-10000",
                 "truncated-half"]


@pytest.mark.parametrize("kind", DAMAGED_KINDS)
def test_a_damaged_file_is_called_damaged_with_its_reason(data_bin, trained_model, tmp_path, kind):
    good = (trained_model[0] / "checkpoint_best.pt").read_bytes()
    content, reason = damaged_files(good, tmp_path)[kind]
    checkpoint = tmp_path / f"{kind}.pt"
    checkpoint.write_bytes(content)

    with pytest.raises(DamagedCheckpointError) as raised:
        load_checkpoint_state(checkpoint)
    assert re.search(rf"cannot use checkpoint {re.escape(str(checkpoint))}: {reason}", str(raised.value))
    assert isinstance(raised.value, UserError) and not isinstance(raised.value, UnsafeCheckpointError)

    assert_one_line_damaged_error(validate(data_bin, checkpoint), checkpoint, reason)


def altered_weight_checkpoint(good, altered):
    """A copy of ``good`` with 64 bytes flipped in the middle of its largest model weight; returns
    that weight's name and its record in the zip archive."""
    state = load_checkpoint_state(good)
    name, weight = max(state["model"].items(), key=lambda item: item[1].numel())
    content = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as archive:
        # The record whose bytes are this tensor's values (found by content, not by name).
        info = next(info for info in archive.infolist()
                    if "/data/" in info.filename and archive.read(info) == weight.numpy().tobytes())
    # The record's data follow its local header: 30 bytes, the name and the local extra field
    # (whose length, padding for alignment, differs from the central directory's).
    name_length, extra_length = struct.unpack_from("<HH", content, info.header_offset + 26)
    data_start = info.header_offset + 30 + name_length + extra_length
    middle = data_start + info.file_size // 2
    content[middle:middle + 64] = bytes(byte ^ 0xFF for byte in content[middle:middle + 64])
    altered.write_bytes(content)
    return name, info.filename


def test_altered_bytes_inside_a_weight_are_detected_before_use(data_bin, trained_model, tmp_path):
    good = trained_model[0] / "checkpoint_best.pt"
    altered = tmp_path / "altered.pt"
    weight, record = altered_weight_checkpoint(good, altered)
    # torch alone loads the altered file without a word, with other values in that weight.
    with fairseq_checkpoint_classes():
        unchecked = torch.load(altered, map_location="cpu", weights_only=True)
    assert not torch.equal(unchecked["model"][weight], load_checkpoint_state(good)["model"][weight])

    reason = (rf"record {re.escape(record)} \(the values of tensor '{re.escape(weight)}'\) fails its "
              rf"CRC-32 check \(stored [0-9a-f]{{8}}, now [0-9a-f]{{8}}\): bytes inside the archive were "
              rf"altered after it was written")
    with pytest.raises(DamagedCheckpointError, match=reason):
        load_checkpoint_state(altered)
    with pytest.raises(DamagedCheckpointError, match=reason):
        checkpoint_utils.load_checkpoint_to_cpu(str(altered))
    assert_one_line_damaged_error(validate(data_bin, altered), altered, reason)


def test_resuming_training_from_an_altered_checkpoint_stops_with_the_reason(data_bin, trained_model, tmp_path):
    save_dir = tmp_path / "resume"
    save_dir.mkdir()
    weight, record = altered_weight_checkpoint(trained_model[0] / "checkpoint_last.pt",
                                               save_dir / "checkpoint_last.pt")
    result = run_command("fairseq-train", *train_args(data_bin, save_dir, "--max-epoch", "4"), check=False)
    assert_one_line_damaged_error(result, save_dir / "checkpoint_last.pt",
                                  rf"record {re.escape(record)} \(the values of tensor '{re.escape(weight)}'\)")


def test_remote_checkpoints_are_left_to_fairseq(tmp_path):
    calls = []

    def original(path, *args, **kwargs):
        calls.append(path)
        return {"model": {}}

    load = _load_checkpoint_to_cpu_explained(original)
    assert load("s3://bucket/checkpoint_best.pt") == {"model": {}}  # nothing local was opened
    assert calls == ["s3://bucket/checkpoint_best.pt"]
    (tmp_path / "local.pt").write_bytes(b"")
    with pytest.raises(DamagedCheckpointError, match="the file is empty"):
        load(str(tmp_path / "local.pt"))
    assert len(calls) == 1  # a damaged local file never reaches fairseq's loader


def test_the_plugin_only_allows_what_fairseq_checkpoints_contain(trained_model):
    checkpoint = trained_model[0] / "checkpoint_best.pt"
    # Allowed while a checkpoint is read, and only then: the process's allowlist stays torch's.
    with fairseq_checkpoint_classes():
        assert torch.serialization.get_unsafe_globals_in_checkpoint(checkpoint) == []
    assert argparse.Namespace not in torch.serialization.get_safe_globals()
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
