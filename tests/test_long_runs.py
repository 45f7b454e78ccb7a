"""Reliability in long runs (issue 25), with real fairseq-train processes on the Brown slice:
resuming on several ranks, one run per save directory, saving that survives a full disk."""

import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.file_io import PathManager

from fairseq_svae.checkpoint_io import (
    TEMPORARY_NAME,
    DiskFullError,
    _file_mode,
    load_checkpoint_state,
    remove_stale_temporary_files,
)
from fairseq_svae.errors import UserError
from fairseq_svae.save_dir_lock import LOCK_NAME

from conftest import BIN, json_log_records, run_command, train_args

RANK_TIMEOUT = 240  # seconds; a rank that has not finished by then is stuck (e.g. waiting for a peer)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def distributed_args(rank: int, port: int, world_size: int = 2) -> list:
    return ["--distributed-world-size", str(world_size), "--distributed-rank", str(rank),
            "--distributed-no-spawn", "--device-id", "0",
            "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--distributed-backend", "gloo",
            "--ddp-backend", "legacy_ddp"]


def start_train(args, cwd=None, **popen) -> subprocess.Popen:
    """fairseq-train started, not waited for (output in .stdout/.stderr pipes)."""
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    if cwd is None:
        cwd = tempfile.mkdtemp(prefix="svae-test-cwd-", dir=os.environ.get("PYTEST_SCRATCH"))
    return subprocess.Popen([str(BIN / "fairseq-train"), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd, **popen)


def finish(process: subprocess.Popen, timeout: float = RANK_TIMEOUT):
    """(exit status, stdout + stderr) of a started process; killed if it outlives ``timeout``."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        return None, out + err
    return process.returncode, out + err


def train_on_two_ranks(data_bin, save_dir, *extra):
    """Both ranks of a two-process CPU (gloo) run; [(exit status, output)] per rank."""
    port = free_port()
    ranks = [start_train(train_args(data_bin, save_dir, *extra, *distributed_args(rank, port)))
             for rank in (0, 1)]
    return [finish(process) for process in ranks]


def assert_ranks_succeeded(results):
    for rank, (status, output) in enumerate(results):
        assert status == 0, f"rank {rank} exited with {status}\n{output[-5000:]}"


def test_a_two_rank_run_resumes_from_checkpoint_last(data_bin, tmp_path):
    save_dir = tmp_path / "two-ranks"
    first = train_on_two_ranks(data_bin, save_dir, "--max-update", "4", "--no-epoch-checkpoints")
    assert_ranks_succeeded(first)
    assert (save_dir / "checkpoint_last.pt").exists()

    resumed = train_on_two_ranks(data_bin, save_dir, "--max-update", "8", "--no-epoch-checkpoints")
    assert_ranks_succeeded(resumed)
    rank0 = resumed[0][1]
    assert "Loaded checkpoint" in rank0 and "@ 4 updates" in rank0, rank0[-3000:]
    for _, output in resumed:
        assert "Unsupported global" not in output and "UnpicklingError" not in output
    final = json_log_records(rank0, "train")[-1]
    assert int(final["train_num_updates"]) == 8
    state = load_checkpoint_state(save_dir / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["num_updates"] == 8
    # Rank 0 alone took the save directory's lock, and let go of it.
    assert not (save_dir / LOCK_NAME).exists()


def test_the_broadcast_classes_are_allowed_only_while_a_state_is_received():
    from omegaconf import DictConfig

    from fairseq.distributed import utils as distributed_utils

    import fairseq_svae  # noqa: F401  (installs the wrappers)
    from fairseq_svae.checkpoint_io import (
        BROADCAST_STATE_GLOBALS, FAIRSEQ_CHECKPOINT_GLOBALS, fairseq_checkpoint_classes,
    )

    assert hasattr(distributed_utils._broadcast_object_slow, "__wrapped__")
    allowed = torch.serialization.get_safe_globals()
    # The process's allowlist is torch's own; the classes are allowed inside the region only.
    assert not any(name in allowed for name in (*FAIRSEQ_CHECKPOINT_GLOBALS, *BROADCAST_STATE_GLOBALS)
                   if name not in (int, dict, list))
    assert DictConfig in BROADCAST_STATE_GLOBALS
    with fairseq_checkpoint_classes(BROADCAST_STATE_GLOBALS):
        inside = torch.serialization.get_safe_globals()
        assert all(name in inside for name in (*FAIRSEQ_CHECKPOINT_GLOBALS, *BROADCAST_STATE_GLOBALS))
    assert set(torch.serialization.get_safe_globals()) == set(allowed)


# --- 2. One run per save directory ---------------------------------------------------------------

def wait_for(condition, timeout=120.0, interval=0.05, process=None):
    """Poll ``condition()`` until it is true; False after ``timeout`` or once ``process`` ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process is not None and process.poll() is not None:
            return bool(condition())
        time.sleep(interval)
    return False


def error_lines(output: str):
    return [line for line in output.splitlines() if ": error: " in line]


def test_a_second_run_on_a_save_dir_in_use_refuses_and_a_killed_runs_lock_does_not_block(data_bin, tmp_path):
    save_dir = tmp_path / "one-run"
    lock = save_dir / LOCK_NAME
    first = start_train(train_args(data_bin, save_dir, "--max-epoch", "200", "--no-epoch-checkpoints"))
    try:
        assert wait_for(lambda: lock.exists() and f'"pid": {first.pid}' in lock.read_text(), process=first), \
            finish(first, timeout=1)[1][-3000:]
        second = run_command("fairseq-train", *train_args(data_bin, save_dir, "--max-update", "2"), check=False)
        assert second.returncode == 1, second.stderr[-3000:]
        assert "Traceback" not in second.stderr
        lines = error_lines(second.stdout + second.stderr)
        assert len(lines) == 1, second.stderr[-3000:]
        assert lines[0].startswith(
            f"fairseq-train: error: SaveDirectoryInUseError: --save-dir {save_dir} is in use by "
            f"fairseq-train process {first.pid}, started "), lines[0]
        assert f"kill {first.pid}" in lines[0] and "another --save-dir" in lines[0]
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    # The killed run's lock file is still there, with its (now dead) process id.
    assert f'"pid": {first.pid}' in lock.read_text()

    resumable = (save_dir / "checkpoint_last.pt").exists()
    third = run_command("fairseq-train", *train_args(data_bin, save_dir, "--max-update", "3",
                                                     "--no-epoch-checkpoints"))
    assert ("Loaded checkpoint" in third.stdout) == resumable
    assert not lock.exists()  # a run that ends removes its lock
    assert not temporary_files(save_dir)


def temporary_files(directory):
    return sorted(path.name for path in directory.iterdir() if TEMPORARY_NAME.fullmatch(path.name))


def test_temporary_checkpoint_files_are_unique_per_writer(tmp_path, monkeypatch):
    source = tmp_path / "checkpoint3.pt"
    source.write_bytes(b"checkpoint" * 1000)
    renamed = []
    real_replace = os.replace

    def replace(src, dst):
        renamed.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    for destination in ("checkpoint_last.pt", "checkpoint_last.pt", "checkpoint_best.pt"):
        assert PathManager.copy(str(source), str(tmp_path / destination), overwrite=True)
    checkpoint_utils.torch_persistent_save({"model": {}}, str(tmp_path / "checkpoint_last.pt"))
    temporaries = [src for src, _ in renamed]
    assert len(set(temporaries)) == len(temporaries) == 4
    for temporary, destination in renamed:
        name = os.path.basename(temporary)
        assert os.path.dirname(temporary) == str(tmp_path)  # same directory: the rename is atomic
        assert name.startswith(f"{os.path.basename(destination)}.tmp-{os.getpid()}-")
        assert TEMPORARY_NAME.fullmatch(name)
    assert temporary_files(tmp_path) == []
    assert (tmp_path / "checkpoint_best.pt").read_bytes() == source.read_bytes()
    assert oct((tmp_path / "checkpoint_best.pt").stat().st_mode & 0o777) == oct(_file_mode())


def test_only_temporary_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"checkpoint_last.pt.tmp-{dead.pid}-abc123"
    mine = tmp_path / f"checkpoint_last.pt.tmp-{os.getpid()}-def456"
    other = tmp_path / "checkpoint_last.pt.tmp"  # not ours (fairseq's own name): left alone
    for path in (stale, mine, other):
        path.write_bytes(b"half")
    assert remove_stale_temporary_files(tmp_path) == [str(stale)]
    assert not stale.exists() and mine.exists() and other.exists()


# --- 3. Saving that survives a full disk or a kill during a save ----------------------------------

def file_size_limit(limit_bytes: int):
    """preexec_fn: a process whose writes past ``limit_bytes`` into any one file fail with EFBIG
    (an OSError) instead of killing it with SIGXFSZ."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.RLIM_INFINITY))
    return limit


def test_a_full_disk_during_a_save_stops_in_one_line_and_the_same_command_resumes(data_bin, tmp_path):
    save_dir = tmp_path / "full-disk"
    command = train_args(data_bin, save_dir, "--no-epoch-checkpoints")
    run_command("fairseq-train", *command, "--max-update", "4")
    last = save_dir / "checkpoint_last.pt"
    before = last.read_bytes()

    # The same run, continued, with room for less than half a checkpoint per file.
    limited = start_train([*command, "--max-update", "8"], preexec_fn=file_size_limit(len(before) // 2))
    status, output = finish(limited)
    assert status == 1, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    lines = error_lines(output)
    assert len(lines) == 1, output[-4000:]
    match = re.fullmatch(
        rf"fairseq-train: error: DiskFullError: no room to save (checkpoint_\w+\.pt) in {re.escape(str(save_dir))}: "
        rf"File too large \[EFBIG\] after ([\d,]+) bytes \(([\d.]+) MiB needed, [\d.]+ [KMGT]iB free there\); "
        rf"nothing was left half-written\. To go on, raise the file-size limit \(ulimit -f\) of the run to at "
        rf"least \3 MiB, then run the same command again: it resumes from checkpoint_last\.pt, the last "
        rf"checkpoint saved whole", lines[0])
    assert match, lines[0]
    assert int(match.group(2).replace(",", "")) <= len(before) // 2
    assert abs(float(match.group(3)) - len(before) / 2**20) < 0.1  # the checkpoint's size
    assert temporary_files(save_dir) == []
    assert last.read_bytes() == before  # the last checkpoint written whole, untouched
    assert not (save_dir / LOCK_NAME).exists()

    resumed = run_command("fairseq-train", *command, "--max-update", "8")
    assert "Loaded checkpoint" in resumed.stdout and "(epoch 1 @ 4 updates)" in resumed.stdout
    assert json_log_records(resumed.stdout, "train")[-1]["train_num_updates"] == "8"
    assert load_checkpoint_state(last)["optimizer_history"][-1]["num_updates"] == 8


def test_a_run_killed_during_a_save_leaves_checkpoint_last_whole_and_resumes(data_bin, tmp_path):
    # A wider model, so that a save takes long enough to be caught in the act.
    command = train_args(data_bin, tmp_path / "unused", "--no-epoch-checkpoints", "--save-interval-updates", "2",
                         "--max-update", "12", "--encoder-hidden-size", "512", "--latent-dim", "64")
    caught = None
    for attempt in range(3):
        save_dir = tmp_path / f"killed-{attempt}"
        command[command.index("--save-dir") + 1] = save_dir
        process = start_train(command)
        saving = wait_for(lambda: save_dir.exists() and temporary_files(save_dir), timeout=RANK_TIMEOUT,
                          interval=0.001, process=process)
        if saving and process.poll() is None:
            process.send_signal(signal.SIGKILL)  # in the middle of writing a checkpoint
            process.communicate()
            caught = save_dir
            break
        finish(process)
    if caught is None:
        pytest.skip("no save was caught in progress in three runs (this machine saves too fast)")

    left = temporary_files(caught)
    assert left, "the kill left no temporary file: it did not fall during a save"
    last = caught / "checkpoint_last.pt"
    updates = None
    if last.exists():  # whole, whatever the kill interrupted
        updates = load_checkpoint_state(last)["optimizer_history"][-1]["num_updates"]

    resumed = run_command("fairseq-train", *command)
    if updates is not None:
        assert f"@ {updates} updates)" in resumed.stdout
    assert json_log_records(resumed.stdout, "train")[-1]["train_num_updates"] == "12"
    assert temporary_files(caught) == []  # the killed writer's temporary file is gone


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs under tmp_path, where writing more fails with ENOSPC; skipped where this
    process may not mount one (not root, a container without the capability)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_no_space_left_on_a_device_is_one_user_error_and_leaves_the_old_file(small_tmpfs, tmp_path):
    big = tmp_path / "checkpoint9.pt"
    big.write_bytes(os.urandom(3 * 2**20))
    last = small_tmpfs / "checkpoint_last.pt"
    last.write_bytes(b"the previous checkpoint")
    with pytest.raises(DiskFullError) as raised:
        PathManager.copy(str(big), str(last), overwrite=True)
    message = str(raised.value)
    assert message.startswith(f"no room to save checkpoint_last.pt in {small_tmpfs}: No space left on device "
                              f"[ENOSPC] after "), message
    assert f"(3.0 MiB needed, " in message and f"free at least 3.0 MiB in {small_tmpfs}" in message
    assert isinstance(raised.value, UserError)
    assert last.read_bytes() == b"the previous checkpoint"
    assert temporary_files(small_tmpfs) == []
    with pytest.raises(DiskFullError, match="No space left on device"):
        checkpoint_utils.torch_persistent_save({"model": {"w": torch.zeros(2**20)}}, str(last))
    assert last.read_bytes() == b"the previous checkpoint" and temporary_files(small_tmpfs) == []
