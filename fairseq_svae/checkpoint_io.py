"""Checkpoints that load safely under torch >= 2.6 and are never left half-written.

torch 2.6 made ``torch.load(weights_only=True)`` the default, and fairseq 0.12 checkpoints name
one Python class besides tensors and plain containers: ``argparse.Namespace`` (the model
options of args-style models such as this one and ``lstm_lm``). Allowing exactly that class
lets fairseq's own loaders (``fairseq-generate``, ``fairseq-validate``, ``fairseq-eval-lm``,
resuming ``fairseq-train``) read these checkpoints with the protection on; a checkpoint whose
pickle names anything else, for example a function that would run a shell command, is refused.

:func:`install` runs when the plugin is imported (``--user-dir`` modules are imported before
any checkpoint is read). Besides allowing that class it wraps two fairseq functions:

- ``checkpoint_utils.load_checkpoint_to_cpu``: the refusal and a damaged file become errors
  that name the file, the reason and what to do, instead of a pickle traceback that
  suggests turning the protection off;
- ``PathManager.copy``: fairseq writes ``checkpoint_last.pt``/``checkpoint_best.pt`` by copying
  the checkpoint it just saved; a plain copy interrupted half way would destroy the good file,
  so the copy goes to a temporary file that is renamed into place.
"""

import argparse
import errno
import os
import pickle
import re
import shutil
import zipfile

import torch
from fairseq import checkpoint_utils
from fairseq.file_io import PathManager

from fairseq_svae.errors import UserError

# Python classes that fairseq 0.12 checkpoints contain besides what torch allows by default.
FAIRSEQ_CHECKPOINT_GLOBALS = (argparse.Namespace,)


class UnsafeCheckpointError(UserError, pickle.UnpicklingError):
    """The checkpoint's pickle names code that loading it would run."""


class DamagedCheckpointError(UserError, RuntimeError):
    """The checkpoint file is truncated or not a torch checkpoint at all."""


def _unsafe_global_name(error: Exception) -> str:
    match = re.search(r"GLOBAL ([\w.]+)", str(error))
    return match.group(1) if match else "an object torch does not allow"


def explain_load_error(path: str, error: Exception) -> Exception:
    """Turn what ``torch.load`` raised for ``path`` into an error a user can act on."""
    if isinstance(error, pickle.UnpicklingError):
        return UnsafeCheckpointError(
            f"refusing to load {path}: its pickle names {_unsafe_global_name(error)}, which is "
            f"neither a tensor nor a type fairseq checkpoints contain, so loading it could run "
            f"arbitrary code. Use a checkpoint written by fairseq-train; do not switch off "
            f"torch's weights_only protection for a file you did not make yourself."
        )
    return DamagedCheckpointError(
        f"cannot read checkpoint {path}: {error}. The file is incomplete or not a torch "
        f"checkpoint (an interrupted copy or download?); resume or evaluate from another "
        f"checkpoint, e.g. checkpoint_best.pt or an epoch checkpoint in the same directory."
    )


def is_checkpoint_read_error(error: Exception) -> bool:
    """Whether ``torch.load`` failed on the file itself (refused pickle, truncated archive)."""
    if isinstance(error, (pickle.UnpicklingError, EOFError, zipfile.BadZipFile)):
        return True
    # torch reports a truncated or foreign file as a RuntimeError from its archive reader, or,
    # when the cut falls inside the archive's index, as EINVAL from seeking in it.
    if isinstance(error, OSError):
        return error.errno == errno.EINVAL
    return isinstance(error, RuntimeError) and "PytorchStreamReader" in str(error)


def load_checkpoint_state(path: str) -> dict:
    """``torch.load`` of a fairseq checkpoint with the weights-only protection on."""
    try:
        with open(path, "rb") as handle:
            return torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as error:
        if is_checkpoint_read_error(error):
            raise explain_load_error(path, error) from error
        raise


def _load_checkpoint_to_cpu_explained(original):
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        try:
            return original(path, *args, **kwargs)
        except Exception as error:
            if is_checkpoint_read_error(error):
                raise explain_load_error(path, error) from error
            raise

    load_checkpoint_to_cpu.__wrapped__ = original
    load_checkpoint_to_cpu.__doc__ = original.__doc__
    return load_checkpoint_to_cpu


def _atomic_copy(original):
    def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        if "://" in str(dst_path):  # remote storage: leave it to fairseq's own handler
            return original(src_path, dst_path, overwrite)
        temporary = f"{dst_path}.tmp-copy"
        shutil.copyfile(src_path, temporary)
        os.replace(temporary, dst_path)  # atomic on POSIX: the old file or the new, never half
        return True

    copy.__wrapped__ = original
    return copy


def install() -> None:
    """Allow fairseq's checkpoint classes and wrap fairseq's loader and copier (idempotent)."""
    torch.serialization.add_safe_globals(list(FAIRSEQ_CHECKPOINT_GLOBALS))
    if not hasattr(checkpoint_utils.load_checkpoint_to_cpu, "__wrapped__"):
        checkpoint_utils.load_checkpoint_to_cpu = _load_checkpoint_to_cpu_explained(
            checkpoint_utils.load_checkpoint_to_cpu
        )
    if not hasattr(PathManager.copy, "__wrapped__"):
        PathManager.copy = staticmethod(_atomic_copy(PathManager.copy))
