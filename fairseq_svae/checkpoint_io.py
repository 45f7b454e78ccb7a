"""Checkpoints that load safely under torch >= 2.6, are checked before they are used, and are
never left half-written.

torch 2.6 made ``torch.load(weights_only=True)`` the default, and fairseq 0.12 checkpoints name
one Python class besides tensors and plain containers: ``argparse.Namespace`` (the model
options of args-style models such as this one and ``lstm_lm``). Allowing exactly that class,
and only while a checkpoint is read (:func:`fairseq_checkpoint_classes`; torch's allowlist of
the process stays as it was), lets fairseq's own loaders (``fairseq-generate``,
``fairseq-validate``, ``fairseq-eval-lm``, resuming ``fairseq-train``) read these checkpoints
with the protection on; a checkpoint whose pickle names anything else, for example a function
that would run a shell command, is refused.

Before a local checkpoint is unpickled, :func:`verify_checkpoint_file` checks the file itself: not
empty; a zip archive (what ``torch.save`` writes) with its index complete and every record still
matching the CRC-32 stored for it when it was written, or else a legacy torch pickle (whose
only check is torch's reader). A damaged file is thus called damaged, with the reason, instead
of being taken for an unsafe one, or, with altered weights, loading silently.

:func:`install` runs when the plugin is imported (``--user-dir`` modules are imported before
any checkpoint is read). It wraps these fairseq functions:

- ``checkpoint_utils.load_checkpoint_to_cpu``, through which fairseq-generate, fairseq-validate,
  svae-eval, the hub's ``from_pretrained`` and fairseq-train's resume all load: the file is
  verified first, it is read with that class allowed, and the refusal and a damaged file become errors that name the file, the
  reason and what to do, instead of a pickle traceback that suggests turning the protection off;
- ``checkpoint_utils.torch_persistent_save`` and ``PathManager.copy``: fairseq-train writes the
  first checkpoint of a save (``checkpointN.pt``, ``checkpoint_best.pt`` or ``checkpoint_last.pt``)
  with the one and copies it to the others with the other. Both now write a temporary file of
  their own in the same directory (``NAME.tmp-PID-RANDOM``, unique per writer), flush it to the
  disk and rename it over ``NAME`` (:func:`write_whole`): a run killed or out of space during a
  save leaves the previous ``NAME`` whole, never half a file and never no file. A full disk
  (``ENOSPC``, ``EDQUOT``) or a file-size limit (``EFBIG``) removes the temporary file and stops
  the run with :class:`DiskFullError`, naming the directory and the space the checkpoint needs;
  the same command, started again, resumes from ``checkpoint_last.pt``.
- ``fairseq.distributed.utils._broadcast_object_slow``, for runs on several processes: when
  fairseq-train resumes on several ranks, rank 0 loads the checkpoint and sends the state it
  loaded to the others through it, and they ``torch.load`` it. That state is the checkpoint after
  fairseq's loader turned its ``cfg`` into an omegaconf ``DictConfig`` and took its tensors out
  (each replaced by a ``_TensorPlaceholder``), so it names the classes of
  :data:`BROADCAST_STATE_GLOBALS`; they are allowed while such an object is received, and only
  then: checkpoint files never hold them.
"""

import argparse
import collections
import errno
import io
import mmap
import os
import pickle
import pickletools
import re
import shutil
import struct
import tempfile
import contextlib
import typing
import zipfile
import zlib
from typing import Callable, Dict, Optional

import torch
from fairseq import checkpoint_utils
from fairseq.distributed import utils as distributed_utils
from fairseq.file_io import PathManager
from omegaconf import AnyNode, DictConfig, ListConfig
from omegaconf.base import ContainerMetadata, Metadata

from fairseq_svae.errors import UserError

# Python classes that fairseq 0.12 checkpoints contain besides what torch allows by default.
FAIRSEQ_CHECKPOINT_GLOBALS = (argparse.Namespace,)

# What the state rank 0 broadcasts to the other ranks on resuming names besides those (found by
# resuming a two-rank run of this plugin's model and of fairseq's lstm_lm, and by listing
# torch.serialization.get_unsafe_globals_in_checkpoint of that state as fairseq pickles it):
# the omegaconf containers of ``cfg`` with their metadata (a node's type annotation is
# typing.Any, a key's type the builtin int), their flags' defaultdict, the builtins list and
# dict that omegaconf rebuilds its content with, and fairseq's stand-in for a tensor sent apart.
BROADCAST_STATE_GLOBALS = (
    DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode, typing.Any, int, dict, list,
    collections.defaultdict, distributed_utils._TensorPlaceholder,
)

# The two formats torch.load reads (what verify_checkpoint_file returns).
ZIP_CHECKPOINT = "zip archive"  # what torch.save writes since torch 1.6
LEGACY_CHECKPOINT = "legacy pickle"  # torch.save(..., _use_new_zipfile_serialization=False)

# A zip record's local header: signature, 22 bytes, file name length, extra field length.
_LOCAL_HEADER = struct.Struct("<4s22xHH")
_MSDOS_DIRECTORY = 0x10  # in a record's external attributes

WHAT_TO_DO = (
    "Do not use this file: resume, generate or evaluate from another checkpoint, e.g. "
    "checkpoint_best.pt or an epoch checkpoint (checkpointN.pt) in the same directory, or copy "
    "the checkpoint again from where it was written"
)


class UnsafeCheckpointError(UserError, pickle.UnpicklingError):
    """The checkpoint's pickle names code that loading it would run."""


class DamagedCheckpointError(UserError, RuntimeError):
    """The checkpoint file is empty, truncated, altered, or not a fairseq checkpoint at all."""


class DiskFullError(UserError, OSError):
    """A checkpoint could not be written whole: no space left, a quota or a file-size limit."""


def damaged(path, reason: str) -> DamagedCheckpointError:
    return DamagedCheckpointError(f"cannot use checkpoint {path}: {reason}. {WHAT_TO_DO}.")


def verify_checkpoint_file(path, handle=None) -> str:
    """Check a local checkpoint file before it is unpickled; return its format.

    Raises :class:`DamagedCheckpointError` with the reason when the file is empty, is neither a
    zip archive nor a legacy torch pickle, is a zip archive cut short (its index, written last,
    is missing), or holds a record whose bytes no longer match the CRC-32 that ``torch.save``
    stored for it. A legacy pickle carries no checksum: torch's reader is its check. ``handle``,
    ``path`` opened for binary reading, saves opening the file twice; it is left at offset 0.
    """
    if handle is None:
        with open(path, "rb") as handle:
            return verify_checkpoint_file(path, handle)
    size = os.fstat(handle.fileno()).st_size
    if size == 0:
        raise damaged(path, "the file is empty (0 bytes)")
    handle.seek(0)
    head = handle.read(64)
    handle.seek(0)
    if head.startswith(b"PK"):
        try:
            _verify_zip_records(path, handle, size)
        finally:
            handle.seek(0)
        return ZIP_CHECKPOINT
    if _is_legacy_torch_pickle(head):
        return LEGACY_CHECKPOINT
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= pickle.HIGHEST_PROTOCOL:
        what = f"it is a plain pickle (protocol {head[1]}) without the header torch.save writes"
    else:
        what = f"it begins with the bytes {head[:8].hex(' ')}"
    raise damaged(path, f"not a zip archive nor a pickle torch can read: {what} ({size:,} bytes)")


def _is_legacy_torch_pickle(head: bytes) -> bool:
    """Whether the file's first pickle is the magic number torch's legacy format starts with."""
    try:
        for opcode, argument, _ in pickletools.genops(io.BytesIO(head)):
            if opcode.name == "STOP":
                return False
            if isinstance(argument, int) and argument == torch.serialization.MAGIC_NUMBER:
                return True
    except ValueError:  # not pickle opcodes, or more than the head holds
        pass
    return False


def _verify_zip_records(path, handle, size: int) -> None:
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, NotImplementedError, ValueError, struct.error, EOFError) as error:
        if str(error) == "File is not a zip file":  # no end-of-archive record found
            reason = (f"truncated: the zip archive stops after {size:,} bytes, before its index "
                      f"(written last), as after an interrupted save, copy or download")
        else:
            reason = f"the zip archive's index is damaged ({error})"
        raise damaged(path, reason) from None
    with archive, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        try:
            for info in archive.infolist():
                problem = _record_problem(archive, info, view)
                if problem:
                    raise damaged(path, f"record {info.filename}{_what_record_holds(archive, info)} "
                                        f"{problem}")
        finally:
            view.release()


def _record_problem(archive: zipfile.ZipFile, info: zipfile.ZipInfo, view: memoryview) -> Optional[str]:
    """Why one record of the archive is damaged, or None when its CRC-32 matches."""
    size, start = len(view), info.header_offset
    if start < 0:
        return "has an impossible offset in the archive's index: the index is damaged"
    if info.external_attr & _MSDOS_DIRECTORY:  # torch would read such a record as all zeros
        return "is marked as a directory in the archive's index: the index was altered"
    if start + _LOCAL_HEADER.size > size:
        return f"starts past the end of the file ({size:,} bytes): truncated"
    signature, name_length, extra_length = _LOCAL_HEADER.unpack_from(view, start)
    if signature != b"PK\x03\x04":
        return ("is not where the archive's index puts it: bytes were removed from or inserted "
                "into the file")
    data_start = start + _LOCAL_HEADER.size + name_length + extra_length
    data_end = data_start + info.compress_size
    if data_end > size:
        return f"ends at byte {data_end:,}, past the end of the file ({size:,} bytes): truncated"
    if info.compress_type != zipfile.ZIP_STORED:  # torch.save never compresses; zipfile can check it
        try:
            with archive.open(info) as record:
                while record.read(1 << 20):
                    pass
        except (zipfile.BadZipFile, zlib.error, NotImplementedError) as error:
            return f"cannot be read back ({error})"
        return None
    crc = zlib.crc32(view[data_start:data_end])
    if crc != info.CRC:
        return (f"fails its CRC-32 check (stored {info.CRC:08x}, now {crc:08x}): bytes inside the "
                f"archive were altered after it was written (a disk, memory or transfer error)")
    return None


def _what_record_holds(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    """' (the values of tensor NAME)' for a tensor's record, as far as its pickle tells."""
    prefix, _, record = info.filename.partition("/")
    if record == "data.pkl":
        return " (the pickle that lists what the checkpoint holds)"
    if not record.startswith("data/"):
        return ""
    key = record[len("data/"):]
    try:
        name = _tensor_names(archive.read(f"{prefix}/data.pkl")).get(key)
    except Exception:  # the pickle itself damaged or unusual: the record's name must do
        name = None
    return f" (the values of tensor '{name}')" if name else f" (the values of tensor storage {key})"


def _tensor_names(pickled: bytes) -> Dict[str, str]:
    """Storage key -> the dict key a tensor using it is stored under, read from the opcodes of
    torch.save's data.pkl without unpickling it. Each tensor is pickled right after its key as
    ``GLOBAL torch._utils._rebuild_tensor_v2`` and a persistent id
    ``('storage', <storage class>, key, location, size)``; strings and globals repeat by memo."""
    names, memo = {}, {}
    pushed = last_string = tensor_name = None
    expecting = None  # None, "storage", "class", "key"
    for opcode, argument, _ in pickletools.genops(pickled):
        if opcode.name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[argument] = pushed
            continue
        if opcode.name == "MEMOIZE":
            memo[len(memo)] = pushed
            continue
        if opcode.name in ("BINGET", "LONG_BINGET", "GET"):
            pushed = memo.get(argument)
        elif opcode.name == "GLOBAL":
            pushed = ("global", argument)
        elif isinstance(argument, str) and opcode.name.endswith(("UNICODE", "STRING", "BINUNICODE8")):
            pushed = argument
        elif opcode.name == "MARK":
            continue
        else:
            pushed = None
        if isinstance(pushed, tuple) and pushed[1].endswith("_rebuild_tensor_v2"):
            tensor_name, expecting = last_string, "storage"
        elif expecting == "storage" and pushed == "storage":
            expecting = "class"
        elif expecting == "class" and isinstance(pushed, tuple):
            expecting = "key"
        elif expecting == "key" and isinstance(pushed, str):
            names.setdefault(pushed, tensor_name)
            expecting = None
        elif isinstance(pushed, str):
            last_string = pushed
    return names


def _unsafe_global_name(error: Exception) -> Optional[str]:
    """The global that torch's weights-only unpickler refused, as it reported it: 'Unsupported
    global: GLOBAL x.y' or 'unsupported GLOBAL x.y whose module x is blocked'. Other unpickler
    errors (an unknown opcode, a short read) come from bytes that are no valid pickle."""
    if not isinstance(error, pickle.UnpicklingError):
        return None
    match = re.search(r"GLOBAL ((?:[A-Za-z_]\w*\.)+[A-Za-z_]\w*)\b", str(error))
    return match.group(1) if match else None


def _torch_reason(error: Exception) -> str:
    """What torch said went wrong, without its advice to switch the weights-only protection off."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    text = text.replace("Weights only load failed.", "")
    text = text.replace(getattr(torch.serialization, "UNSAFE_MESSAGE", "\0"), "")
    text = text.split("Check the documentation of torch.load")[0]
    text = text.split("This is an internal miniz error")[0]
    text = " ".join(text.split()).rstrip(".")
    if not text:
        text = "the data ends early" if isinstance(error, EOFError) else "no details"
    return f"{type(error).__name__}: {text[:300]}"


def explain_load_error(path, error: Exception, file_format: Optional[str] = None) -> Exception:
    """Turn what ``torch.load`` raised for ``path`` into an error a user can act on.

    ``file_format`` is what :func:`verify_checkpoint_file` found (None when it did not run)."""
    unsafe_global = _unsafe_global_name(error)
    if unsafe_global is not None:
        return UnsafeCheckpointError(
            f"refusing to load {path}: its pickle names {unsafe_global}, which is neither a "
            f"tensor nor a type fairseq checkpoints contain, so loading it could run arbitrary "
            f"code. Use a checkpoint written by fairseq-train; do not switch off torch's "
            f"weights_only protection for a file you did not make yourself."
        )
    detail = _torch_reason(error)
    if file_format == ZIP_CHECKPOINT:
        reason = f"its records are intact but torch cannot read them as a checkpoint ({detail})"
    elif file_format == LEGACY_CHECKPOINT:
        reason = f"its legacy torch pickle is truncated or damaged ({detail})"
    else:
        reason = f"torch cannot read it ({detail})"
    return damaged(path, reason)


def _raised_in_torch_load(error: Exception) -> bool:
    traceback = error.__traceback__
    while traceback is not None:
        module = traceback.tb_frame.f_globals.get("__name__", "")
        if module in ("torch.serialization", "torch._weights_only_unpickler"):
            return True
        traceback = traceback.tb_next
    return False


def is_checkpoint_read_error(error: Exception) -> bool:
    """Whether ``torch.load`` failed on the file itself (refused pickle, bytes it cannot read)."""
    if isinstance(error, UserError):
        return False
    if isinstance(error, (pickle.UnpicklingError, EOFError, zipfile.BadZipFile)):
        return True
    # torch reports a truncated or foreign file as a RuntimeError from its archive reader, or,
    # when the cut falls inside the archive's index, as EINVAL from seeking in it.
    if isinstance(error, OSError):
        return error.errno == errno.EINVAL
    if isinstance(error, RuntimeError) and "PytorchStreamReader" in str(error):
        return True
    # Garbage inside a legacy pickle surfaces from the unpickler as whatever its opcodes hit.
    return isinstance(error, (RuntimeError, ValueError, LookupError, struct.error)) and \
        _raised_in_torch_load(error)


def _require_fairseq_state(path, state) -> None:
    if not isinstance(state, dict):
        raise damaged(path, f"not a fairseq checkpoint: it holds a {type(state).__name__}, not "
                            f"the dict with a 'model' entry that fairseq-train saves")
    if "model" not in state:
        keys = ", ".join(repr(key) for key in list(state)[:8]) or "none"
        raise damaged(path, f"not a fairseq checkpoint: its dict has no 'model' entry (keys: {keys})")


@contextlib.contextmanager
def fairseq_checkpoint_classes(extra=()):
    """A region in which torch's weights-only loader also allows the classes fairseq checkpoints
    name (:data:`FAIRSEQ_CHECKPOINT_GLOBALS`, and ``extra``); the allowlist is as before after it."""
    # Only those not allowed already: leaving the context removes what it added.
    allowed = torch.serialization.get_safe_globals()
    added = [name for name in (*FAIRSEQ_CHECKPOINT_GLOBALS, *extra) if name not in allowed]
    with torch.serialization.safe_globals(added):
        yield


def load_checkpoint_state(path) -> dict:
    """``torch.load`` of a fairseq checkpoint with the weights-only protection on, after
    :func:`verify_checkpoint_file` (one open of the file for both)."""
    with open(path, "rb") as handle:
        file_format = verify_checkpoint_file(path, handle)
        try:
            with fairseq_checkpoint_classes():
                state = torch.load(handle, map_location="cpu", weights_only=True)
        except Exception as error:
            if is_checkpoint_read_error(error):
                raise explain_load_error(path, error, file_format) from error
            raise
    _require_fairseq_state(path, state)
    return state


def _load_checkpoint_to_cpu_explained(original):
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        local = "://" not in str(path)  # remote storage: fairseq fetches it; not checked here
        file_format = verify_checkpoint_file(path) if local else None
        try:
            with fairseq_checkpoint_classes():
                return original(path, *args, **kwargs)
        except Exception as error:
            if is_checkpoint_read_error(error):
                raise explain_load_error(path, error, file_format) from error
            if local and isinstance(error, (KeyError, TypeError, AttributeError)):
                # fairseq's upgrade code stumbling over a pickle that is no fairseq checkpoint
                # (a plain dict, a list): say so. A real checkpoint loads here and the
                # original error stands.
                load_checkpoint_state(path)
            raise

    load_checkpoint_to_cpu.__wrapped__ = original
    load_checkpoint_to_cpu.__doc__ = original.__doc__
    return load_checkpoint_to_cpu


# What a write that ran out of room fails with: a full file system, a disk quota, a file-size limit.
NO_ROOM_ERRNOS = {errno.ENOSPC: "ENOSPC", errno.EDQUOT: "EDQUOT", errno.EFBIG: "EFBIG"}
# The temporary files of write_whole: NAME.tmp-PID-RANDOM, in NAME's directory.
TEMPORARY_INFIX = ".tmp-"
TEMPORARY_NAME = re.compile(r"(?P<name>.+)\.tmp-(?P<pid>\d+)-[A-Za-z0-9_]+")


def _file_mode() -> int:
    """The mode open() gives a new file under the process's umask (mkstemp gives 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _room_error(error: BaseException) -> Optional[OSError]:
    """The OSError saying there was no room, in ``error`` or what it was raised from or while
    handling (torch's archive writer reports the failed write of its file as a RuntimeError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in NO_ROOM_ERRNOS:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:,.0f} bytes" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024


class _CountingSink:
    """A file-like object that only counts what torch.save writes into it."""

    def __init__(self):
        self.count = 0

    def write(self, data) -> int:
        self.count += memoryview(data).nbytes
        return memoryview(data).nbytes

    def flush(self):
        pass


def serialized_size(obj) -> int:
    """How many bytes ``torch.save(obj, ...)`` writes."""
    sink = _CountingSink()
    torch.save(obj, sink)
    return sink.count


def disk_full(path, error: OSError, written: int, needed: Optional[int]) -> DiskFullError:
    directory = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    try:
        free = f"{_size(shutil.disk_usage(directory).free)} free there"
    except OSError:
        free = "free space unknown"
    needs = f"{_size(needed)} needed" if needed is not None else "size unknown"
    what = f"{os.strerror(error.errno)} [{NO_ROOM_ERRNOS[error.errno]}]"
    if error.errno == errno.EFBIG:
        todo = (f"raise the file-size limit (ulimit -f) of the run to at least "
                f"{_size(needed) if needed is not None else 'the size of the checkpoint'}")
    else:
        todo = f"free at least {_size(needed) if needed is not None else 'that much'} in {directory}"
    last = os.path.join(directory, "checkpoint_last.pt")
    resume = ("resumes from checkpoint_last.pt, the last checkpoint saved whole"
              if os.path.exists(last) else "starts again from the beginning (no checkpoint_last.pt yet)")
    return DiskFullError(
        f"no room to save {name} in {directory}: {what} after {written:,} bytes ({needs}, {free}); "
        f"nothing was left half-written. To go on, {todo}, then run the same command again: it "
        f"{resume}"
    )


def write_whole(path, write: Callable, needed: Optional[Callable[[], int]] = None) -> None:
    """Write ``path`` through ``write(temporary_path)``, never leaving half a file.

    ``write`` fills a temporary file of this writer's own (``NAME.tmp-PID-RANDOM``) in the same
    directory; it is flushed to the disk and renamed over ``path`` (``os.replace``: atomic, the old
    file stays until the new one is whole). On any failure the temporary file is removed; a
    failure for lack of room (ENOSPC, EDQUOT, EFBIG) becomes :class:`DiskFullError`, which gives
    ``needed()`` bytes as the space needed."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(
        dir=directory, prefix=f"{os.path.basename(path)}{TEMPORARY_INFIX}{os.getpid()}-", suffix="")
    try:
        os.fchmod(handle, _file_mode())
        os.close(handle)
        handle = None
        write(temporary)
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException as error:
        written = _file_size(temporary)
        if handle is not None:
            os.close(handle)
        _remove(temporary)
        room = _room_error(error) if isinstance(error, Exception) else None
        if room is not None:
            try:
                size = needed() if needed is not None else None
            except Exception:  # counting is a courtesy; the message can do without it
                size = None
            raise disk_full(path, room, written, size) from error
        raise
    _fsync_directory(directory)


def _fsync(path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)  # a full disk can first show here (delayed allocation, NFS)
    finally:
        os.close(handle)


def _fsync_directory(directory) -> None:
    """Make the rename itself durable; not every file system can sync a directory."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _file_size(path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _remove(path) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporary_files(directory) -> list:
    """Remove the temporary files of :func:`write_whole` that writers killed mid-write left in
    ``directory`` (their process is gone); return their paths."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = TEMPORARY_NAME.fullmatch(name)
        if match is None:
            continue
        pid = int(match.group("pid"))
        if pid != os.getpid() and not _pid_alive(pid):
            path = os.path.join(directory, name)
            _remove(path)
            removed.append(path)
    return removed


def _is_remote(path) -> bool:
    return "://" in str(path)


def _whole_save(original):
    def torch_persistent_save(obj, filename, async_write: bool = False):
        if async_write or not isinstance(filename, (str, os.PathLike)) or _is_remote(filename):
            return original(obj, filename, async_write)  # fairseq's own handling

        def save(temporary):
            with open(temporary, "wb") as handle:
                torch.save(obj, handle)

        write_whole(filename, save, needed=lambda: serialized_size(obj))

    torch_persistent_save.__wrapped__ = original
    return torch_persistent_save


def _atomic_copy(original):
    def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        if _is_remote(dst_path):  # remote storage: leave it to fairseq's own handler
            return original(src_path, dst_path, overwrite)
        write_whole(dst_path, lambda temporary: shutil.copyfile(src_path, temporary),
                    needed=lambda: os.stat(src_path).st_size)
        return True

    copy.__wrapped__ = original
    return copy


def _receives_fairseq_state(original):
    """fairseq's object broadcast, receiving with the classes of a loaded checkpoint's state
    allowed (on top of those already allowed) for that one torch.load."""
    def _broadcast_object_slow(*args, **kwargs):
        with fairseq_checkpoint_classes(BROADCAST_STATE_GLOBALS):
            return original(*args, **kwargs)

    _broadcast_object_slow.__wrapped__ = original
    return _broadcast_object_slow


def install() -> None:
    """Wrap fairseq's loader, saver, copier and broadcast (idempotent)."""
    if not hasattr(distributed_utils._broadcast_object_slow, "__wrapped__"):
        distributed_utils._broadcast_object_slow = _receives_fairseq_state(
            distributed_utils._broadcast_object_slow)
    if not hasattr(checkpoint_utils.load_checkpoint_to_cpu, "__wrapped__"):
        checkpoint_utils.load_checkpoint_to_cpu = _load_checkpoint_to_cpu_explained(
            checkpoint_utils.load_checkpoint_to_cpu
        )
    if not hasattr(checkpoint_utils.torch_persistent_save, "__wrapped__"):
        checkpoint_utils.torch_persistent_save = _whole_save(checkpoint_utils.torch_persistent_save)
    if not hasattr(PathManager.copy, "__wrapped__"):
        PathManager.copy = staticmethod(_atomic_copy(PathManager.copy))
