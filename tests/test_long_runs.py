"""Reliability in long runs (issue 25), with real fairseq-train processes on the Brown slice:
resuming on several ranks, one run per save directory, saving that survives a full disk."""

import os
import socket
import subprocess
import tempfile

import torch

from fairseq_svae.checkpoint_io import load_checkpoint_state

from conftest import BIN, json_log_records, train_args

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


def test_the_broadcast_classes_are_allowed_only_while_a_state_is_received():
    from omegaconf import DictConfig

    from fairseq.distributed import utils as distributed_utils

    import fairseq_svae  # noqa: F401  (installs the wrappers)
    from fairseq_svae.checkpoint_io import BROADCAST_STATE_GLOBALS, FAIRSEQ_CHECKPOINT_GLOBALS

    assert hasattr(distributed_utils._broadcast_object_slow, "__wrapped__")
    allowed = torch.serialization.get_safe_globals()
    assert all(name in allowed for name in FAIRSEQ_CHECKPOINT_GLOBALS)
    assert DictConfig in BROADCAST_STATE_GLOBALS and DictConfig not in allowed
