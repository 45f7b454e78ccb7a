"""One fairseq-train run per ``--save-dir``.

Two runs writing into one directory overwrite each other's ``checkpoint_last.pt`` and
``checkpoint_best.pt``, and the next resume mixes them. fairseq-train checks its save directory
once at start-up, on rank 0 only (``checkpoint_utils.verify_checkpoint_directory``, before the
model is built); :func:`install` wraps that check so that it also takes ``SAVE_DIR/.train.lock``
for the life of the process: an exclusive ``flock`` on the file, which holds the run's process
id, host and start time. A second run on that directory stops there with
:class:`SaveDirectoryInUseError`, naming the first run's process. The kernel lets go of the lock
when its process ends however it ends, so the file a killed run leaves behind (its process gone)
does not block the next run, which takes it over and removes the temporary checkpoint files the
killed run left half-written (see :func:`fairseq_svae.checkpoint_io.write_whole`). A run that
ends normally removes the file.
"""

import atexit
import datetime
import fcntl
import json
import os
import socket
from typing import Optional

from fairseq import checkpoint_utils

from fairseq_svae.checkpoint_io import remove_stale_temporary_files
from fairseq_svae.errors import UserError, program_name

LOCK_NAME = ".train.lock"


class SaveDirectoryInUseError(UserError, RuntimeError):
    """Another fairseq-train run is writing into the same --save-dir."""


# The lock this process holds: save directory -> open file (the flock lives as long as it).
_held = {}


def _owner(path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.loads(handle.read() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(owner: dict) -> str:
    if not owner.get("pid"):
        return "another process (it has not written its process id yet)"
    where = f" on host {owner['host']}" if owner.get("host") not in (None, socket.gethostname()) else ""
    since = f", started {owner['started']}" if owner.get("started") else ""
    return f"{owner.get('program') or 'a'} process {owner['pid']}{where}{since}"


def in_use(save_dir, owner: dict) -> SaveDirectoryInUseError:
    pid = owner.get("pid")
    stop = f"stop it (kill {pid})" if pid else "stop it"
    return SaveDirectoryInUseError(
        f"--save-dir {save_dir} is in use by {_describe(owner)} (lock file "
        f"{os.path.join(save_dir, LOCK_NAME)}): two runs saving into one directory overwrite "
        f"each other's checkpoints. Wait for that run to end or {stop}, or give this run "
        f"another --save-dir"
    )


def acquire(save_dir) -> Optional[str]:
    """Lock ``save_dir`` for this process (idempotent); the lock file's path.

    Raises :class:`SaveDirectoryInUseError` when a live process holds it."""
    save_dir = os.path.abspath(save_dir)
    if save_dir in _held:
        return _held[save_dir].name
    path = os.path.join(save_dir, LOCK_NAME)
    while True:
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise in_use(save_dir, _owner(path)) from None
        except OSError:  # a file system without locks: fairseq's behaviour, unguarded
            handle.close()
            return None
        # The holder before us may have removed the file between our open and our lock: then
        # we locked a file nobody else can see, and must lock the one at the path.
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "program": program_name(),
             "started": datetime.datetime.now().isoformat(timespec="seconds")}
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(owner) + "\n")
    handle.flush()
    _held[save_dir] = handle
    remove_stale_temporary_files(save_dir)
    return path


def release(save_dir) -> None:
    handle = _held.pop(os.path.abspath(save_dir), None)
    if handle is None:
        return
    try:
        os.remove(handle.name)  # while still locked: the next run then finds no file, or its own
    except OSError:
        pass
    handle.close()


def _release_all() -> None:
    for save_dir in list(_held):
        release(save_dir)


def _locking_verify(original):
    def verify_checkpoint_directory(save_dir: str) -> None:
        original(save_dir)  # creates it and checks that it is writable
        if "://" not in str(save_dir):
            acquire(save_dir)

    verify_checkpoint_directory.__wrapped__ = original
    return verify_checkpoint_directory


def install() -> None:
    """Make fairseq-train's start-up check of its save directory take the lock (idempotent)."""
    if not hasattr(checkpoint_utils.verify_checkpoint_directory, "__wrapped__"):
        checkpoint_utils.verify_checkpoint_directory = _locking_verify(
            checkpoint_utils.verify_checkpoint_directory)
        atexit.register(_release_all)
