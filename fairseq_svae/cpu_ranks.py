"""Training on several CPU processes, started the ways fairseq users start it.

fairseq 0.12 reads a multi-process run's layout from its own options and, on a machine without
GPUs, gets it wrong:

- under ``torchrun`` it ignores torchrun's environment unless given
  ``--distributed-init-method env://`` with each process's rank and the world size, which one
  command line cannot give each process; without them every process trains alone into the same
  save directory, silently, and with ``--distributed-world-size`` it divides by
  ``torch.cuda.device_count()`` (ZeroDivisionError);
- its own spawn (``--distributed-world-size N``) starts ``min(GPUs, N)`` processes: none;
- its defaults, the nccl backend and ``--ddp-backend pytorch_ddp`` (DistributedDataParallel given
  ``device_ids=[0]``), cannot run on CPU.

:func:`install` wraps fairseq's ``distributed_utils.call_main``, which every fairseq command runs
its ``main`` through, so that on CPU (``--cpu``, or no GPU) the plugin fills in what fairseq needs:

- under torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` in the
  environment): the rank and world size from it, one process per rank (no spawn), and a
  rendezvous that reads torchrun's store under a key prefix of its own per restart
  (:data:`TORCHRUN_SCHEME`; see :func:`_torchrun_rendezvous` for the hang it avoids);
- ``--distributed-world-size N`` without torchrun or an init method: N processes spawned on this
  host, meeting at a free local port;
- always, with more than one process: the gloo backend and ``--ddp-backend legacy_ddp``.

Options the user gave explicitly (an init method, a backend other than fairseq's GPU defaults)
are kept. Each rank then trains under a :class:`fairseq_svae.rank_watchdog.RankWatchdog` unless
torchrun, whose agent restarts the group when a rank dies (``--max-restarts``), started it.
"""

import logging
import os
import socket
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing
from fairseq.distributed import utils as distributed_utils
from omegaconf import open_dict

from fairseq_svae import rank_watchdog
from fairseq_svae.errors import (
    USER_ERROR_EXIT_STATUS,
    OptionError,
    UserError,
    report_user_errors_first,
    user_error_line,
)

logger = logging.getLogger(__name__)

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
TORCHRUN_SCHEME = "svae-torchrun"
# fairseq's defaults that only run on GPUs, and what runs on CPU in their place.
CPU_BACKEND = {"nccl": "gloo"}
CPU_DDP_BACKEND = {"pytorch_ddp": "legacy_ddp", "c10d": "legacy_ddp"}


def launched_by_torchrun(environ=None) -> bool:
    environ = os.environ if environ is None else environ
    return all(environ.get(name) for name in TORCHRUN_VARIABLES)


def on_cpu(cfg) -> bool:
    return bool(cfg.common.cpu) or not torch.cuda.is_available()


def _free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun_rendezvous(url: str, timeout: timedelta = dist.constants.default_pg_timeout, **kwargs):
    """``env://`` with a key prefix per torchrun restart.

    torchrun's workers share the rendezvous's TCP store (``TORCHELASTIC_USE_AGENT_STORE``), which
    outlives a restart; torch's ``env://`` reads it without a prefix, so a restarted group finds
    the addresses the previous attempt's processes published (gloo's, the start-up barrier's) and
    a rank waits on a peer that no longer exists. Under a prefix per restart each attempt meets
    in keys of its own. The restart count is the agent's, the same for every rank of a one-host
    run; hosts of a multi-host run can count differently, so there (or without a shared store)
    the prefix is left out and torch's own behaviour applies (see the README)."""
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    store = dist.TCPStore(host, port, world_size, is_master=not shared and rank == 0,
                          timeout=timeout, multi_tenant=not shared)
    if shared and os.environ.get("GROUP_WORLD_SIZE", "1") == "1":
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"svae/attempt_{attempt}", store)
    yield store, rank, world_size
    raise RuntimeError(f"{TORCHRUN_SCHEME}:// cannot rendezvous twice; torchrun restarts the group")


def _use_cpu_backends(training) -> None:
    backend = CPU_BACKEND.get(training.distributed_backend)
    if backend:
        training.distributed_backend = backend
    ddp_backend = CPU_DDP_BACKEND.get(training.ddp_backend)
    if ddp_backend:
        training.ddp_backend = ddp_backend


def _take_torchrun_layout(training) -> None:
    world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    if training.distributed_world_size not in (1, world_size):
        raise OptionError(
            f"--distributed-world-size {training.distributed_world_size} but torchrun started "
            f"{world_size} processes (WORLD_SIZE): leave --distributed-world-size out under "
            f"torchrun, or start --nnodes x --nproc-per-node = {training.distributed_world_size} "
            f"processes")
    training.distributed_init_method = f"{TORCHRUN_SCHEME}://"
    training.distributed_world_size = world_size
    training.distributed_rank = rank
    training.distributed_no_spawn = True
    training.device_id = 0  # on CPU fairseq uses it only as spawn's process index


def configure(cfg) -> str:
    """Fill in fairseq's distributed options for a run on CPU processes; how its ranks start:
    ``"torchrun"``, ``"spawn"`` (the plugin starts them), ``"given"`` (options the user gave, or
    ranks started by hand), ``"single"`` (one process) or ``"gpu"`` (fairseq's own business)."""
    training = cfg.distributed_training
    if not on_cpu(cfg):
        return "gpu"
    with open_dict(training):
        if training.distributed_init_method is None and launched_by_torchrun():
            if int(os.environ["WORLD_SIZE"]) <= 1:
                return "single"
            _take_torchrun_layout(training)
            how = "torchrun"
        elif training.distributed_world_size <= 1:
            return "single"
        elif not training.distributed_no_spawn:
            if training.distributed_init_method is None:
                port = training.distributed_port if training.distributed_port > 0 else _free_local_port()
                training.distributed_init_method = f"tcp://127.0.0.1:{port}"
            how = "spawn"
        else:
            how = "given"
        _use_cpu_backends(training)
    logger.info(
        f"{training.distributed_world_size} CPU processes ({how}): rank "
        f"{'each' if how == 'spawn' else training.distributed_rank}, init "
        f"{training.distributed_init_method}, backend {training.distributed_backend}, "
        f"--ddp-backend {training.ddp_backend}")
    return how


class _SpawnedRank:
    """A spawned rank's ``main``: a user error ends it with its one line and the exit status the
    parent then passes on silently (spawn would turn it into a traceback in the parent)."""

    def __init__(self, main):
        self.main = main

    def __call__(self, cfg, **kwargs):
        try:
            return self.main(cfg, **kwargs)
        except UserError as error:
            print(user_error_line(error), file=sys.stderr, flush=True)
            sys.exit(USER_ERROR_EXIT_STATUS)


class _RankReportingUserErrors:
    """A rank's ``main``, which fairseq's ``distributed_main`` runs once the process group exists:
    from then on a user error that ends the rank prints the plugin's one line, not torch's copy of
    it prefixed with ``[rankN]: `` (see :func:`fairseq_svae.errors.report_user_errors_first`)."""

    def __init__(self, main):
        self.main = main

    def __call__(self, cfg, **kwargs):
        report_user_errors_first()
        return self.main(cfg, **kwargs)


def _spawn_on_cpu(cfg, main, **kwargs) -> None:
    """fairseq's own spawn, with one process per rank instead of one per GPU."""
    training = cfg.distributed_training
    kwargs["start_rank"] = training.distributed_rank or 0
    training.distributed_rank = None  # distributed_main numbers the processes
    try:
        torch.multiprocessing.spawn(fn=distributed_utils.distributed_main,
                                    args=(_SpawnedRank(main), cfg, kwargs),
                                    nprocs=training.distributed_world_size, join=True)
    except torch.multiprocessing.ProcessExitedException as exited:
        if exited.exit_code == USER_ERROR_EXIT_STATUS:  # the rank printed its error's line
            sys.exit(USER_ERROR_EXIT_STATUS)
        rank = kwargs["start_rank"] + exited.error_index
        how = (f"was killed by {exited.signal_name}" if exited.signal_name
               else f"exited with status {exited.exit_code}")
        raise rank_watchdog.LostRankError(
            f"rank {rank} (process {exited.error_pid}) {how}; the other ranks were stopped. Run "
            f"the same command again: training resumes from checkpoint_last.pt in --save-dir, "
            f"losing at most one save interval. To have lost ranks restarted automatically, start "
            f"the run with torchrun --max-restarts N (see the README)") from None


def _call_main_on_cpu(original):
    def call_main(cfg, main, **kwargs):
        how = configure(cfg)
        if how in ("spawn", "given"):
            training = cfg.distributed_training
            main = rank_watchdog.Watched(main, training.heartbeat_timeout)
            # The watchdog takes --heartbeat-timeout over: fairseq's own (a SIGINT to a rank
            # whose model ran no forward for that long) would interrupt its verdict with a
            # KeyboardInterrupt traceback, and cannot end a rank blocked inside a collective.
            with open_dict(training):
                training.heartbeat_timeout = -1
        if how in ("given", "torchrun"):  # a spawned rank prints its own (see _SpawnedRank)
            main = _RankReportingUserErrors(main)
        if how == "spawn":
            _spawn_on_cpu(cfg, main, **kwargs)
        else:
            original(cfg, main, **kwargs)

    call_main.__wrapped__ = original
    return call_main


def install() -> None:
    """Wrap fairseq's ``call_main`` and register the torchrun rendezvous (idempotent)."""
    if not hasattr(distributed_utils.call_main, "__wrapped__"):
        distributed_utils.call_main = _call_main_on_cpu(distributed_utils.call_main)
        dist.register_rendezvous_handler(TORCHRUN_SCHEME, _torchrun_rendezvous)
