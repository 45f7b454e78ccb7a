"""Ranks that stop, in one line, instead of waiting forever for a lost peer.

On several processes every update ends in a collective (the gradients' all-reduce): a rank whose
peer was killed, crashed or is stopped waits there, for torch's 30-minute collective timeout when
the peer's socket stays open (a stopped or stuck process, a lost host) and with a gloo traceback
when it closes. torchrun's elastic agent watches its workers and restarts the group, but ranks
started otherwise (fairseq's own ``--distributed-world-size`` spawn, ranks started by hand) have
nobody to do so. :class:`RankWatchdog` is that somebody, inside each rank: a thread beats a counter
in the run's rendezvous store (the key-value store every rank already reaches) and watches its
peers' counters; when a peer falls silent for ``--heartbeat-timeout`` seconds, ends (a process on
this host that no longer exists) or stopped with an error, the rank prints one
:class:`LostRankError` line naming it and what to do, and exits. Counters, not clock times: hosts'
clocks need not agree. The beating runs in threads of their own, so a long validation or save does
not count as silence; only a process that can no longer run its threads does.

fairseq's own ``--heartbeat-timeout N`` (kill a rank whose model has not run forward for N seconds)
is the option a user sets; left at fairseq's default (-1, off), the watchdog waits
:data:`DEFAULT_TIMEOUT_SECONDS`; ``--heartbeat-timeout 0`` turns it off.
"""

import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Dict, Optional

import torch.distributed as dist

from fairseq_svae.errors import USER_ERROR_EXIT_STATUS, UserError, user_error_line

logger = logging.getLogger(__name__)

# Long enough that no load on a shared machine makes a live rank look lost (its beating thread
# needs the CPU for a moment each second), short enough that a lost one costs minutes, not hours.
DEFAULT_TIMEOUT_SECONDS = 300.0
KEY_PREFIX = "svae_watchdog"


class LostRankError(UserError, RuntimeError):
    """A rank of a run on several processes was killed, crashed, stopped or fell silent."""


def timeout_seconds(heartbeat_timeout) -> Optional[float]:
    """The watchdog's wait for a silent peer from fairseq's ``--heartbeat-timeout``: None when off."""
    if heartbeat_timeout is None or heartbeat_timeout < 0:  # fairseq's default, -1
        return DEFAULT_TIMEOUT_SECONDS
    return float(heartbeat_timeout) if heartbeat_timeout > 0 else None


def _process_exists(pid: int) -> bool:
    """Whether process ``pid`` (on this host) still runs: a zombie, dead but not yet reaped by
    the process that started it, does not."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's process with that id
            return True
        return True


def _process_namespace() -> Optional[str]:
    """What tells this machine's and process namespace's process ids apart from any other's (the
    kernel's boot id and the pid namespace): two hosts, or two containers, may share a host name,
    and a peer's process id means something here only when they share this. None without /proc."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot_id:
            return f"{boot_id.read().strip()}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


class RankWatchdog:
    """Heartbeats of this rank and its peers' in ``store``; see the module's docstring."""

    def __init__(self, store, rank: int, world_size: int, timeout: float):
        self.store = store
        self.rank = rank
        self.world_size = world_size
        self.timeout = timeout
        # A peer is checked several times within the timeout, and the store is not flooded.
        self.interval = max(0.1, min(2.0, timeout / 5))
        self.peers = [peer for peer in range(world_size) if peer != rank]
        self.host = socket.gethostname()
        self.namespace = _process_namespace()
        now = time.monotonic()
        self._count: Dict[int, int] = {}
        self._heard: Dict[int, float] = {peer: now for peer in self.peers}
        self._who: Dict[int, dict] = {}
        self._done = set()
        self._failed: Dict[int, str] = {}
        self._store_answered = now
        self._store_error: Optional[str] = None
        self._closed = False
        self._failing = False  # this rank's training raised: peers that failed too are no news
        self._lock = threading.Lock()  # between a verdict and this rank's own ending
        self._stop = threading.Event()

    def _key(self, kind: str, rank: int) -> str:
        return f"{KEY_PREFIX}/{kind}/{rank}"

    def start(self) -> "RankWatchdog":
        self.store.set(self._key("who", self.rank), json.dumps(
            {"pid": os.getpid(), "host": self.host, "namespace": self.namespace}))
        for target, name in ((self._beat, "beat"), (self._judge, "judge")):
            threading.Thread(target=target, name=f"svae-rank-watchdog-{name}", daemon=True).start()
        logger.info(f"rank {self.rank}: peers silent for {self.timeout:g} s count as lost "
                    f"(--heartbeat-timeout)")
        return self

    # --- the beating thread: the only one that reads the store ---------------------------------

    def _beat(self) -> None:
        while not self._stop.is_set():
            try:
                self.store.add(self._key("beat", self.rank), 1)
                for peer in self.peers:
                    self._hear(peer)
            except Exception as error:  # the store's host (rank 0) is gone: the judge says so
                self._store_error = f"{type(error).__name__}: {_first_line(error)}"
                return
            self._store_answered = time.monotonic()
            self._stop.wait(self.interval)

    def _hear(self, peer: int) -> None:
        if peer in self._done or peer in self._failed:
            return
        if peer not in self._who and self.store.check([self._key("who", peer)]):
            self._who[peer] = json.loads(self.store.get(self._key("who", peer)))
        if self.store.check([self._key("failed", peer)]):
            self._failed[peer] = self.store.get(self._key("failed", peer)).decode("utf-8", "replace")
        elif self.store.check([self._key("done", peer)]):
            self._done.add(peer)
        count = self.store.add(self._key("beat", peer), 0)
        if count != self._count.get(peer):
            self._count[peer] = count
            self._heard[peer] = time.monotonic()

    # --- the judging thread: never blocks on the store ----------------------------------------

    def _judge(self) -> None:
        while not self._stop.wait(self.interval):
            if self._failing:  # this rank's main thread judges for itself now (see failed)
                continue
            peer_failed = any(peer in self._failed for peer in self.peers)
            verdict = self._verdict()
            if verdict is not None:
                self._stop_run(verdict, tell_peers=peer_failed)

    def _describe(self, peer: int) -> str:
        who = self._who.get(peer)
        if not who:
            return f"rank {peer}"
        where = "" if who.get("host") == self.host else f" on host {who.get('host')}"
        return f"rank {peer} (process {who.get('pid')}{where})"

    def _verdict(self, failed_peers_too: bool = True) -> Optional[str]:
        now = time.monotonic()
        for peer in self.peers:
            if peer in self._done:
                continue
            if peer in self._failed:
                if not failed_peers_too:
                    continue
                return f"{self._describe(peer)} stopped with an error: {self._failed[peer]}"
            who = self._who.get(peer)
            here = who and self.namespace is not None and who.get("namespace") == self.namespace
            if here and not _process_exists(int(who["pid"])):
                return f"{self._describe(peer)} has ended (it was killed or crashed)"
            if now - self._heard[peer] > self.timeout:
                return (f"{self._describe(peer)} has not been heard from for {self.timeout:g} s "
                        f"(it was killed, crashed, or is stopped or stuck)")
        if len(self._done) == len(self.peers):
            return None
        if self._store_error is not None or now - self._store_answered > self.timeout:
            reason = self._store_error or f"no answer for {self.timeout:g} s"
            return (f"lost contact with {self._describe(0)}, whose process holds the run's "
                    f"rendezvous store ({reason})")
        return None

    def _lost_rank_error(self, verdict: str) -> LostRankError:
        return LostRankError(
            f"{verdict}; rank {self.rank} stops rather than wait for it. Start all "
            f"{self.world_size} ranks again with the same commands: training resumes from "
            f"checkpoint_last.pt in --save-dir, losing at most one save interval. To have lost "
            f"ranks restarted automatically, start the run with torchrun --max-restarts N "
            f"(see the README). --heartbeat-timeout sets this wait ({self.timeout:g} s now)")

    def _stop_run(self, verdict: str, tell_peers: bool) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        error = self._lost_rank_error(verdict)
        if tell_peers:  # the failed peer waits to learn that this rank's end is its error's doing
            self._publish("failed", f"{type(error).__name__}: {verdict}")
        print(user_error_line(error), file=sys.stderr, flush=True)
        sys.stdout.flush()
        # The main thread may be inside a collective that only returns at torch's timeout: end
        # the process from here. Checkpoints are written whole (checkpoint_io), so none is torn,
        # and the kernel lets go of the save directory's lock (save_dir_lock) with the process.
        os._exit(USER_ERROR_EXIT_STATUS)

    # --- this rank's own ending ----------------------------------------------------------------

    def failed(self, error: Exception) -> None:
        """This rank's training raised ``error`` (not a user error). Tells the peers at once; then,
        if it is the kind a collective raises when a peer's socket closed, waits for the peers'
        news: when a peer ended or fell silent (the cause), ends the process with the
        :class:`LostRankError` line as the judge does (the same line, not one that torch's
        excepthook would prefix with ``[rankN]:``); returns when every peer stopped with an error
        too (the same fault everywhere, a bug whose traceback must show) or nothing is known
        within the timeout."""
        self._failing = True
        self._publish("failed", f"{type(error).__name__}: {_first_line(error)}")
        if not isinstance(error, RuntimeError):
            return
        # Peers that stop because of this rank's error say so in the store (see _stop_run) within
        # about two beats of reading it: only a peer silent past that is lost, not this rank's doing.
        settle = 4 * self.interval
        started = time.monotonic()
        deadline = started + self.timeout + settle
        while time.monotonic() < deadline:
            if all(peer in self._failed or peer in self._done for peer in self.peers):
                return
            verdict = self._verdict(failed_peers_too=False)
            if verdict is not None and time.monotonic() - started > settle:
                self._stop_run(verdict, tell_peers=False)
            time.sleep(self.interval / 2)

    def finish(self, error: Optional[BaseException] = None) -> None:
        """This rank's training ended: peers stop waiting for it (at once, if with ``error``)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if error is None:
            self._publish("done", "1")
        elif not self._failing:
            self._publish("failed", f"{type(error).__name__}: {_first_line(error)}")

    def _publish(self, kind: str, value: str) -> None:
        try:
            self.store.set(self._key(kind, self.rank), value)
        except Exception:  # the store's host may be gone already; the peers find out by themselves
            pass


def _first_line(error: BaseException) -> str:
    text = str(error)
    return text.splitlines()[0] if text else ""


def watch(heartbeat_timeout) -> Optional[RankWatchdog]:
    """A started watchdog for this rank of the initialised process group; None when the run has
    one process or the watchdog is off."""
    timeout = timeout_seconds(heartbeat_timeout)
    if timeout is None or not dist.is_initialized() or dist.get_world_size() < 2:
        return None
    store = dist.distributed_c10d._get_default_store()
    return RankWatchdog(store, dist.get_rank(), dist.get_world_size(), timeout).start()


class Watched:
    """fairseq's ``main(cfg, **kwargs)`` for one rank, run under a :class:`RankWatchdog` (a class,
    not a closure: fairseq's spawn pickles it into each process)."""

    def __init__(self, main, heartbeat_timeout):
        self.main = main
        self.heartbeat_timeout = heartbeat_timeout

    def __call__(self, cfg, **kwargs):
        watchdog = watch(self.heartbeat_timeout)
        if watchdog is None:
            return self.main(cfg, **kwargs)
        try:
            result = self.main(cfg, **kwargs)
        except UserError as error:  # this rank's own, reported by its own line
            watchdog.finish(error)
            raise
        except Exception as error:
            watchdog.failed(error)  # ends the process when a lost peer caused it
            watchdog.finish(error)
            raise
        except BaseException as error:  # Ctrl-C, sys.exit: no waiting
            watchdog.finish(error)
            raise
        watchdog.finish()
        return result
