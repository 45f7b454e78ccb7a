"""Training on two CPU processes (issue 25, item 2), with real fairseq-train processes on the Brown
slice: torchrun restarts a group whose rank was killed and the run resumes from checkpoint_last.pt;
without torchrun (ranks started by hand, fairseq's own spawn) a lost rank stops the run in one line
instead of leaving the other rank waiting."""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from fairseq_svae.checkpoint_io import load_checkpoint_state
from fairseq_svae.save_dir_lock import LOCK_NAME

from conftest import BIN, json_log_records, train_args

RUN_TIMEOUT = 240  # seconds; a run that has not ended by then hangs
SAVE_INTERVAL = 4
MAX_UPDATE = 12


def start(command, log_path, **popen) -> subprocess.Popen:
    """A command started in a session of its own (so that a hung one is ended with all its
    processes), its output into ``log_path``."""
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    cwd = tempfile.mkdtemp(prefix="svae-test-cwd-", dir=os.environ.get("PYTEST_SCRATCH"))
    with open(log_path, "w") as log:
        return subprocess.Popen([str(part) for part in command], stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd=cwd, start_new_session=True, **popen)


def end(process: subprocess.Popen, timeout: float = RUN_TIMEOUT):
    """The exit status of a started command, or None when it outlived ``timeout`` (then it and
    every process it started are killed)."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return None


def wait_for(condition, process, timeout=RUN_TIMEOUT, interval=0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def descendants(pid: int):
    """Process ids under ``pid`` (Linux /proc)."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for thread in threads:
            try:
                with open(f"/proc/{parent}/task/{thread}/children") as handle:
                    children = [int(child) for child in handle.read().split()]
            except FileNotFoundError:
                continue
            found += children
            frontier += children
    return found


def process_text(pid: int, name: str) -> str:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def torchrun_rank(torchrun_pid: int, rank: int):
    """The process id of torchrun's worker with ``RANK=rank``, or None."""
    for pid in descendants(torchrun_pid):
        if f" RANK={rank} " in " " + process_text(pid, "environ"):
            return pid
    return None


def error_lines(text: str):
    return [line for line in text.splitlines() if ": error: " in line]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the ranks' processes in /proc")
def test_torchrun_restarts_a_killed_rank_and_the_run_resumes_and_finishes(data_bin, tmp_path):
    save_dir = tmp_path / "torchrun"
    log_path = tmp_path / "torchrun.log"
    # The README's command: torchrun's options, then fairseq-train's own, no distributed flags.
    torchrun = start([BIN / "torchrun", "--standalone", "--nproc-per-node", "2", "--max-restarts", "1",
                      "-m", "fairseq_cli.train",
                      *train_args(data_bin, save_dir, "--max-update", MAX_UPDATE, "--log-interval", "1",
                                  "--save-interval-updates", SAVE_INTERVAL, "--no-epoch-checkpoints")],
                     log_path)
    last = save_dir / "checkpoint_last.pt"
    try:
        assert wait_for(last.exists, torchrun), log_path.read_text()[-5000:]
        victim = torchrun_rank(torchrun.pid, 1)
        assert victim is not None, "torchrun's rank 1 was not found"
        os.kill(victim, signal.SIGKILL)  # in the middle of training: saved at 4, stops at 12
        saved_when_killed = load_checkpoint_state(last)["optimizer_history"][-1]["num_updates"]
        status = end(torchrun)
    finally:
        if torchrun.poll() is None:
            os.killpg(torchrun.pid, signal.SIGKILL)
    output = log_path.read_text()
    assert status == 0, output[-6000:]

    # Two attempts of the group, the second after torchrun stopped the first.
    assert output.count("2 CPU processes (torchrun): rank 0,") == 2, output[-6000:]
    first_attempt, second_attempt = output.split("Loaded checkpoint", 1)
    resumed_at = int(re.match(r" \S+ \(epoch \d+ @ (\d+) updates\)", second_attempt).group(1))
    assert resumed_at == saved_when_killed and resumed_at >= SAVE_INTERVAL
    # At most one save interval of updates was lost: those trained after the last save.
    trained_before = [int(record["num_updates"]) for record in json_log_records(first_attempt, "train_inner")]
    assert trained_before and resumed_at <= max(trained_before) <= resumed_at + SAVE_INTERVAL
    resumed_updates = [int(record["num_updates"]) for record in json_log_records(second_attempt, "train_inner")]
    assert resumed_updates == list(range(resumed_at + 1, MAX_UPDATE + 1))

    # The same number of updates as a run that nobody interrupted.
    assert load_checkpoint_state(last)["optimizer_history"][-1]["num_updates"] == MAX_UPDATE
    assert not (save_dir / LOCK_NAME).exists()  # the restarted rank 0 took the lock, and let go
    assert "Traceback" not in second_attempt and not error_lines(output)


def distributed_by_hand(rank: int, port: int):
    """What a user types on each rank without torchrun: the layout, nothing about backends."""
    return ["--distributed-world-size", "2", "--distributed-rank", rank, "--distributed-no-spawn",
            "--distributed-init-method", f"tcp://127.0.0.1:{port}"]


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


HEARTBEAT_TIMEOUT = 5  # seconds: a live rank on a busy machine beats several times in it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="stops a process with SIGSTOP")
def test_without_torchrun_a_stopped_rank_stops_the_other_in_one_line_within_the_timeout(data_bin, tmp_path):
    save_dir = tmp_path / "by-hand"
    port = free_port()
    logs = [tmp_path / f"rank{rank}.log" for rank in (0, 1)]
    ranks = [start([BIN / "fairseq-train",
                    *train_args(data_bin, save_dir, "--max-update", "1000", "--log-interval", "1",
                                "--heartbeat-timeout", HEARTBEAT_TIMEOUT, *distributed_by_hand(rank, port))],
                   logs[rank]) for rank in (0, 1)]
    try:
        assert wait_for(lambda: json_log_records(logs[0].read_text(), "train_inner"), ranks[0]), \
            logs[0].read_text()[-5000:] + logs[1].read_text()[-3000:]
        # A stopped process keeps its sockets open: gloo alone would wait 30 minutes.
        ranks[1].send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        status = end(ranks[0], timeout=60)
        waited = time.monotonic() - stopped_at
    finally:
        for process in ranks:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    output = logs[0].read_text()
    assert status == 1, output[-5000:]
    # Silent for the timeout since its last beat heard, up to one beat (timeout / 5) before the stop.
    assert HEARTBEAT_TIMEOUT * 0.8 - 0.5 <= waited < HEARTBEAT_TIMEOUT + 30, waited
    assert "Traceback" not in output, output[-5000:]
    lines = error_lines(output)
    assert len(lines) == 1, output[-5000:]
    assert lines[0].startswith(
        f"fairseq-train: error: LostRankError: rank 1 (process {ranks[1].pid}) has not been heard "
        f"from for {HEARTBEAT_TIMEOUT} s (it was killed, crashed, or is stopped or stuck); rank 0 "
        f"stops rather than wait for it. Start all 2 ranks again with the same commands: training "
        f"resumes from checkpoint_last.pt"), lines[0]
    assert "torchrun --max-restarts" in lines[0] and "--heartbeat-timeout" in lines[0]
    # The plugin chose the CPU backends the user left out.
    assert "2 CPU processes (given): rank 0, init tcp://127.0.0.1" in output
    assert "backend gloo, --ddp-backend legacy_ddp" in output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the ranks' processes in /proc")
def test_fairseq_spawn_on_cpu_trains_two_ranks_and_a_killed_one_stops_the_run_in_one_line(data_bin, tmp_path):
    save_dir = tmp_path / "spawn"
    log_path = tmp_path / "spawn.log"
    parent = start([BIN / "fairseq-train",
                    *train_args(data_bin, save_dir, "--max-update", "1000", "--log-interval", "1",
                                "--distributed-world-size", "2")], log_path)
    try:
        assert wait_for(lambda: json_log_records(log_path.read_text(), "train_inner"), parent), \
            log_path.read_text()[-5000:]
        spawned = [pid for pid in descendants(parent.pid) if "spawn_main" in process_text(pid, "cmdline")]
        assert len(spawned) == 2, spawned  # one process per rank, not one per GPU (none)
        os.kill(spawned[1], signal.SIGKILL)
        status = end(parent, timeout=60)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()
    output = log_path.read_text()
    assert "2 CPU processes (spawn)" in output and "distributed init (rank 1)" in output
    assert status == 1, output[-5000:]
    assert "Traceback" not in output, output[-5000:]
    lines = error_lines(output)
    assert len(lines) == 1, output[-5000:]
    # Said by the spawning process, which saw its child die; or, should the other rank's watchdog
    # have seen it first (it checks every 2 s by default), by that rank.
    assert re.fullmatch(
        rf"fairseq-train: error: LostRankError: rank [01] \(process {spawned[1]}\) (was killed by SIGKILL; "
        rf"the other ranks were stopped\. Run the same command again|has ended \(it was killed or crashed\); "
        rf"rank [01] stops rather than wait for it\. Start all 2 ranks again with the same commands): training "
        rf"resumes from checkpoint_last\.pt in --save-dir, losing at most one save interval\. "
        rf".*torchrun --max-restarts.*", lines[0]), lines[0]


NON_FINITE_LINE = (r"fairseq-train: error: NonFiniteLossError: the loss or its gradients became NaN or infinite in "
                   r"update \d+ \(.*")


@pytest.mark.parametrize("launch", ["torchrun", "by hand"])
def test_a_user_error_after_the_process_group_exists_is_the_plugins_line_on_every_rank(launch, data_bin, tmp_path):
    # Plain SGD at 1e38: update 1's weights overflow, so update 2's gradients are NaN on every
    # rank (they are all-reduced) and every rank raises NonFiniteLossError, after torch's
    # init_process_group has wrapped sys.excepthook in its [rankN]: prefixer.
    def command(*distributed):
        return [BIN / "fairseq-train", *train_args(data_bin, tmp_path / "save", "--optimizer", "sgd", "--lr", "1e38",
                                                   "--max-update", "5", *distributed)]

    if launch == "torchrun":  # torchrun --standalone --nproc-per-node 2 $(which fairseq-train) ...
        logs = [tmp_path / "torchrun.log"]
        processes = [start([BIN / "torchrun", "--standalone", "--nproc-per-node", "2", *command()], logs[0])]
    else:
        port = free_port()
        logs = [tmp_path / f"rank{rank}.log" for rank in (0, 1)]
        processes = [start(command(*distributed_by_hand(rank, port)), logs[rank]) for rank in (0, 1)]
    statuses = [end(process) for process in processes]
    outputs = [log.read_text() for log in logs]
    assert statuses == [1] * len(processes), "\n".join(output[-5000:] for output in outputs)

    output = "\n".join(outputs)
    assert "[rank" not in output, output[-5000:]
    lines = error_lines(output)
    # Each rank says it in the plugin's one line (a rank that learns of its peer's error first
    # says that, in the same format); none in another format.
    assert any(re.fullmatch(NON_FINITE_LINE, line) for line in lines), lines
    assert 1 <= len(lines) <= 2 and all(
        re.fullmatch(NON_FINITE_LINE, line) or line.startswith("fairseq-train: error: LostRankError: rank ")
        for line in lines), lines
