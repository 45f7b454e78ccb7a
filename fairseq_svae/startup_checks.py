"""Checks that stop fairseq's commands in one line, before the trouble a traceback would show
(issue 25): each raises a :class:`fairseq_svae.errors.UserError` that names the file or the
option and the fix.

:func:`install` runs when the plugin is imported (``--user-dir``) and wraps these fairseq functions:

- ``checkpoint_utils.verify_checkpoint_directory``, fairseq-train's first look at ``--save-dir``
  (before the model is built): a ``--save-dir`` that is a file, or that this process cannot
  write into (a read-only disk, an immutable directory, no permission), is a
  :class:`SaveDirectoryError` instead of ``NotADirectoryError`` or ``OSError [Errno 30]``;
- ``Trainer.load_checkpoint``, fairseq-train's resume from ``--restore-file`` (by default
  ``checkpoint_last.pt`` in ``--save-dir``): a checkpoint of another architecture, latent size
  or dictionary is an :class:`IncompatibleCheckpointError` naming the checkpoint's and this run's
  ``--arch``, ``--latent-dim`` and dictionary size, instead of fairseq's bare ``Exception: Cannot
  load model parameters from checkpoint``; a dictionary of the same size but other words (its
  fingerprint in the task state) is refused too, where fairseq would resume silently;
- ``Trainer.train_step``: a NaN or infinite loss or gradient (fairseq's ``FloatingPointError``
  from its gradient-norm check or the fp16/AMP loss scaler) is a :class:`NonFiniteLossError`
  naming the update and the usual causes; the update it stopped never changed a weight;
- ``checkpoint_utils.save_checkpoint``: weights that hold NaN or infinite values (an update whose
  gradients were finite but whose step overflowed) are never saved over ``checkpoint_last.pt``;
- ``checkpoint_utils.load_model_ensemble_and_task``, through which fairseq-generate,
  fairseq-validate and fairseq-eval-lm load ``--path``: a missing file is a
  :class:`MissingCheckpointError` naming the path, and fairseq-eval-lm refuses a Sentence VAE
  (it scores language models; ``svae-eval`` scores a VAE).

:func:`check_split_files` is the task's check of a binarized split when it is loaded: both files
there, the ``.idx`` a whole index in fairseq's ``mmap`` format, whose sentence lengths and offsets
agree with each other and with the length of the ``.bin``, and every word id in the ``.bin`` inside
the dictionary. It reads the index and the tokens once (memory-mapped): well under a second for
millions of sentences.
"""

import errno
import os
import struct
import sys
from typing import Optional

import numpy as np
import torch
from fairseq import checkpoint_utils
from fairseq.data.indexed_dataset import IndexedDataset, MMapIndexedDataset, _code_to_dtype
from fairseq.trainer import Trainer

from fairseq_svae.errors import (
    DamagedDataError,
    IncompatibleCheckpointError,
    MissingCheckpointError,
    MissingDataError,
    NonFiniteLossError,
    SaveDirectoryError,
    UserError,
    user_error_in,
)
from fairseq_svae.patching import wrap_once
from fairseq_svae.preprocess_hints import rebinarize_command

# --- --save-dir --------------------------------------------------------------------------------

NOT_WRITABLE_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


def _file_in_the_way(save_dir) -> Optional[str]:
    """``save_dir`` or the first of its parents that exists and is not a directory."""
    path = os.path.abspath(save_dir)
    while True:
        if os.path.exists(path):
            return None if os.path.isdir(path) else path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def save_dir_error(save_dir, error: Optional[OSError] = None) -> SaveDirectoryError:
    """What is wrong with ``--save-dir`` (a file in the way, or ``error`` from writing there)."""
    in_the_way = _file_in_the_way(save_dir)
    if in_the_way is not None:
        if os.path.abspath(in_the_way) == os.path.abspath(save_dir):
            what = (f"--save-dir {save_dir} is a file, not a directory: fairseq-train saves its "
                    f"checkpoints into a directory of that name")
        else:
            what = f"--save-dir {save_dir} cannot be created: {in_the_way} is a file, not a directory"
        return SaveDirectoryError(f"{what}. Pass another --save-dir, or move the file away")
    code = errno.errorcode.get(error.errno, str(error.errno)) if error is not None else "?"
    reason = f"{os.strerror(error.errno)} [{code}]" if error is not None and error.errno else str(error)
    if error is not None and error.errno == errno.EROFS:
        fix = "it is on a read-only file system: pass a --save-dir on a writable disk"
    elif error is not None and error.errno in NOT_WRITABLE_ERRNOS:
        fix = (f"make it writable for this user (chmod u+w, or chattr -i where it was made "
               f"immutable), or pass a --save-dir this user can write into")
    else:
        fix = "pass a --save-dir on a writable disk"
    return SaveDirectoryError(
        f"--save-dir {save_dir} cannot be written into: {reason}, creating a file there. "
        f"fairseq-train saves its checkpoints into it: {fix}")


def _checked_save_dir(original):
    def verify_checkpoint_directory(save_dir: str) -> None:
        if "://" in str(save_dir):  # remote storage: fairseq's own business
            return original(save_dir)
        if _file_in_the_way(save_dir) is not None:
            raise save_dir_error(save_dir)
        try:
            original(save_dir)
        except UserError:
            raise
        except OSError as error:
            raise save_dir_error(save_dir, error) from error

    verify_checkpoint_directory.__wrapped__ = original
    return verify_checkpoint_directory


# --- Binarized splits --------------------------------------------------------------------------

# fairseq's mmap index: magic (9 bytes), version (<Q), token type code (<B), sentence count (<Q),
# then an int32 length and an int64 byte offset into the .bin per sentence.
MMAP_MAGIC = MMapIndexedDataset.Index._HDR_MAGIC
MMAP_HEADER = len(MMAP_MAGIC) + 8 + 1 + 8


def _rebinarize(data_dir: str) -> str:
    return (f"Binarize the text again with fairseq-preprocess into a new directory and pass that "
            f"one: {rebinarize_command(data_dir)}")


def damaged_split(path: str, reason: str, data_dir: str) -> DamagedDataError:
    return DamagedDataError(f"{path} is damaged: {reason}. {_rebinarize(data_dir)}")


def check_split_files(split_path: str, dictionary=None, combine: bool = False) -> None:
    """Check the binarized split ``split_path`` (``DATA/train``) before fairseq reads it; with
    ``combine``, also ``DATA/train1``, ``DATA/train2`` ... as far as fairseq would read them.

    Nothing happens when neither ``.bin`` nor ``.idx`` exists (the caller says the split is not
    there). Raises :class:`MissingDataError` naming the one file of the two that is missing, and
    :class:`DamagedDataError` naming a truncated or altered file."""
    suffix = 0
    while True:
        path = split_path + (str(suffix) if suffix else "")
        if not (os.path.exists(path + ".idx") or os.path.exists(path + ".bin")):
            return
        _check_one_split(path, dictionary)
        if not combine:
            return
        suffix += 1


def _check_one_split(path: str, dictionary) -> None:
    data_dir, split = os.path.split(path)
    data_dir = data_dir or "."
    index_path, data_path = path + ".idx", path + ".bin"
    present = [name for name in (data_path, index_path) if os.path.isfile(name)]
    if len(present) == 1:
        missing = index_path if present[0] == data_path else data_path
        raise MissingDataError(
            f"split {split!r} is incomplete: {missing} is missing ({present[0]} is there); "
            f"fairseq-preprocess writes the two together. {_rebinarize(data_dir)}")
    if not present:  # directories or other oddities of those names: fairseq's reader says so
        return
    index_size = os.path.getsize(index_path)
    with open(index_path, "rb") as handle:
        head = handle.read(MMAP_HEADER)
    if head[:8] == IndexedDataset._HDR_MAGIC:  # fairseq's older "cached" format: its reader checks it
        return

    def damaged_index(reason):
        return damaged_split(index_path, f"{reason}; it is the index of {data_path}", data_dir)

    if head[:len(MMAP_MAGIC)] != MMAP_MAGIC:
        shown = head[:len(MMAP_MAGIC)].hex(" ") if head else "nothing (the file is empty)"
        raise damaged_index(f"it does not begin with the header fairseq-preprocess writes "
                            f"({MMAP_MAGIC.hex(' ')}) but with {shown}")
    if index_size < MMAP_HEADER:
        raise damaged_index(f"it ends after {index_size} bytes, inside its {MMAP_HEADER}-byte header "
                            f"(truncated)")
    (version,) = struct.unpack_from("<Q", head, len(MMAP_MAGIC))
    code = head[len(MMAP_MAGIC) + 8]
    (count,) = struct.unpack_from("<Q", head, len(MMAP_MAGIC) + 9)
    if version != 1:
        raise damaged_index(f"its format version is {version}, not 1")
    if code not in _code_to_dtype:
        raise damaged_index(f"its token type code {code} is none fairseq knows")
    expected_size = MMAP_HEADER + 12 * count
    if index_size != expected_size:
        how = "truncated" if index_size < expected_size else "bytes were added or its header altered"
        raise damaged_index(f"it is {index_size:,} bytes long where the {count:,} sentences its "
                            f"header counts need {expected_size:,} ({how})")
    dtype = np.dtype(_code_to_dtype[code])
    data_size = os.path.getsize(data_path)
    if count == 0:
        needed = 0
    else:
        lengths = np.memmap(index_path, dtype=np.int32, mode="r", offset=MMAP_HEADER, shape=(count,))
        offsets = np.memmap(index_path, dtype=np.int64, mode="r", offset=MMAP_HEADER + 4 * count,
                            shape=(count,))
        negative = np.flatnonzero(lengths < 0)
        if negative.size:
            raise damaged_index(f"sentence {negative[0] + 1} has the length {lengths[negative[0]]}")
        expected = np.zeros(count, dtype=np.int64)
        np.cumsum(lengths[:-1], dtype=np.int64, out=expected[1:])
        expected *= dtype.itemsize
        wrong = np.flatnonzero(offsets != expected)
        if wrong.size:
            first = wrong[0]
            raise damaged_index(f"the byte offset of sentence {first + 1} ({int(offsets[first]):,}) does not "
                                f"follow from the lengths of the sentences before it "
                                f"({int(expected[first]):,}): the index was altered")
        tokens = int(lengths.sum(dtype=np.int64))
        needed = tokens * dtype.itemsize
        word_starts = expected // dtype.itemsize
        del lengths, offsets
    if data_size != needed:
        how = ("truncated, as after an interrupted copy or a full disk" if data_size < needed else
               "the two files are not one pair, or bytes were added")
        raise damaged_split(
            data_path, f"it is {data_size:,} bytes long where its index {index_path} lists {count:,} "
                       f"sentences of {needed // dtype.itemsize:,} word ids ({needed:,} bytes): {how}",
            data_dir)
    if dictionary is None or needed == 0:
        return
    words = np.memmap(data_path, dtype=dtype, mode="r", shape=(needed // dtype.itemsize,))
    types = len(dictionary)
    if int(words.max()) >= types or (dtype.kind == "i" and int(words.min()) < 0):
        position = int(np.argmax((words >= types) | (words < 0)))
        sentence = int(np.searchsorted(word_starts, position, side="right")) - 1
        raise damaged_split(
            data_path, f"sentence {sentence + 1} holds the word id {int(words[position])}, and the "
                       f"dictionary {os.path.join(data_dir, 'dict.txt')} has {types:,} types (ids 0 to "
                       f"{types - 1:,}): the file was altered, or binarized with another dictionary",
            data_dir)


# --- Resuming from a checkpoint of another model ----------------------------------------------

# Model options that change the shape of a Sentence VAE's weights (besides --arch and the dictionary).
SHAPE_OPTIONS = (
    "latent_dim", "encoder_embed_dim", "encoder_hidden_size", "encoder_layers", "encoder_bidirectional",
    "decoder_embed_dim", "decoder_hidden_size", "decoder_layers", "decoder_out_embed_dim", "feed_latent",
    "share_decoder_input_output_embed", "share_encoder_decoder_embed", "posterior_mean_bn_gamma",
)


def _option(model_cfg, name):
    if model_cfg is None:
        return None
    try:
        return model_cfg.get(name) if hasattr(model_cfg, "get") else getattr(model_cfg, name, None)
    except Exception:  # an omegaconf node that cannot resolve: as good as absent here
        return None


def _arch(model_cfg):
    return _option(model_cfg, "arch") or _option(model_cfg, "_name")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _checkpoint_dictionary_size(state) -> Optional[int]:
    fingerprint = (state.get("task_state") or {}).get("dictionary")
    if isinstance(fingerprint, dict) and isinstance(fingerprint.get("types"), int):
        return fingerprint["types"]
    for key, tensor in (state.get("model") or {}).items():
        if key.endswith("embed_tokens.weight") and hasattr(tensor, "shape"):
            return int(tensor.shape[0])
    return None


def _run_dictionary(task):
    dictionary = getattr(task, "dictionary", None)
    return dictionary if dictionary is not None else getattr(task, "target_dictionary", None)


def _describe_model(model_cfg, types) -> str:
    text = f"--arch {_arch(model_cfg)}"
    latent_dim = _option(model_cfg, "latent_dim")
    if latent_dim is not None:
        text += f" with --latent-dim {latent_dim}"
    text += f" and a dictionary of {types:,} types" if types is not None else " and a dictionary of unknown size"
    return text


def _resume_fix(trainer) -> str:
    checkpoint = trainer.cfg.checkpoint
    return (f"To resume it, run with the options and the data directory it was trained with; to train "
            f"this model from scratch, give it another --save-dir (fairseq-train resumes from "
            f"--restore-file, by default checkpoint_last.pt in --save-dir {checkpoint.save_dir})")


def restore_mismatch(trainer, filename, state) -> Optional[IncompatibleCheckpointError]:
    """Why ``state`` (read from ``filename``) cannot be this trainer's model, or None when its
    architecture, shape options and dictionary size all match this run's."""
    from fairseq_svae.sentence_vae_checkpoint import saved_config

    try:
        saved_model = saved_config(state).model
    except Exception:  # no configuration at all: not a checkpoint fairseq-train wrote
        return None
    run_model = trainer.cfg.model
    dictionary = _run_dictionary(trainer.task)
    run_types = len(dictionary) if dictionary is not None else None
    saved_types = _checkpoint_dictionary_size(state)
    differences = [
        f"{_flag(name)} ({_option(saved_model, name)} in the checkpoint, {_option(run_model, name)} here)"
        for name in SHAPE_OPTIONS
        if name != "latent_dim" and _option(saved_model, name) != _option(run_model, name)
    ]
    if (_arch(saved_model) == _arch(run_model) and saved_types == run_types and not differences
            and _option(saved_model, "latent_dim") == _option(run_model, "latent_dim")):
        return None
    others = f"; they also differ in {', '.join(differences)}" if differences else ""
    return IncompatibleCheckpointError(
        f"cannot resume from {filename}: it holds a model of {_describe_model(saved_model, saved_types)}, "
        f"and this run builds {_describe_model(run_model, run_types)}{others}. {_resume_fix(trainer)}")


def dictionary_mismatch(trainer, filename, state) -> Optional[IncompatibleCheckpointError]:
    """A checkpoint trained with a dictionary of the same size as this run's but other words."""
    from fairseq_svae.dictionary_fingerprint import describe, dictionary_fingerprint
    from fairseq_svae.tasks.sentence_vae import DICTIONARY_STATE_KEY

    saved = (state.get("task_state") or {}).get(DICTIONARY_STATE_KEY)
    dictionary = getattr(trainer.task, "dictionary", None)
    if not isinstance(saved, dict) or dictionary is None:
        return None
    here = dictionary_fingerprint(dictionary)
    if dict(saved) == here:
        return None
    return IncompatibleCheckpointError(
        f"cannot resume from {filename}: it was trained with another dictionary ({describe(saved)}) "
        f"than this run's ({describe(here)}): every embedding row would stand for another word. "
        f"{_resume_fix(trainer)}")


def _checked_restore(original):
    def load_checkpoint(self, filename, *args, **kwargs):
        # What fairseq's loader read, kept to describe the checkpoint (the trainer drops it).
        loaded = []
        loader = checkpoint_utils.load_checkpoint_to_cpu

        def remembering_loader(path, *loader_args, **loader_kwargs):
            state = loader(path, *loader_args, **loader_kwargs)
            loaded.append(state)
            return state

        checkpoint_utils.load_checkpoint_to_cpu = remembering_loader
        try:
            result = original(self, filename, *args, **kwargs)
        except Exception as error:
            if loaded and isinstance(loaded[-1], dict) and user_error_in(error) is None:
                mismatch = restore_mismatch(self, filename, loaded[-1])
                if mismatch is not None:
                    raise mismatch from error
            raise
        finally:
            checkpoint_utils.load_checkpoint_to_cpu = loader
        if loaded and isinstance(loaded[-1], dict):
            mismatch = dictionary_mismatch(self, filename, loaded[-1])
            if mismatch is not None:
                raise mismatch
        return result

    load_checkpoint.__wrapped__ = original
    return load_checkpoint


# --- NaN and infinity in training -------------------------------------------------------------

def _usual_causes(trainer) -> str:
    try:
        lr = f"{trainer.get_lr():g}"
    except Exception:
        lr = "its value"
    return (f"Usual causes: a learning rate too high (--lr is {lr}: lower it, or add --clip-norm 1.0), "
            f"fp16 overflow (with --fp16: try --amp, or train in fp32), or bad data (a damaged split: "
            f"binarize it again). Fix it and run the same command again: it resumes from "
            f"checkpoint_last.pt")


def _is_numerical(trainer, error: FloatingPointError) -> bool:
    """Whether fairseq's FloatingPointError is about NaN or infinity: all of them are, except the
    grad-norm consistency check across workers when every norm is finite."""
    if "inconsistent between workers" not in str(error):
        return True
    buffer = getattr(trainer, "_grad_norm_buf", None)
    return buffer is not None and not bool(torch.isfinite(buffer).all())


def _checked_train_step(original):
    def train_step(self, samples, *args, **kwargs):
        try:
            return original(self, samples, *args, **kwargs)
        except FloatingPointError as error:
            if isinstance(error, UserError) or not _is_numerical(self, error):
                raise
            reason = str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else "no details"
            raise NonFiniteLossError(
                f"the loss or its gradients became NaN or infinite in update {self.get_num_updates() + 1} "
                f"({reason}): training stopped before that update changed a weight, and the "
                f"checkpoints in {self.cfg.checkpoint.save_dir} are as they were. "
                f"{_usual_causes(self)}") from error

    train_step.__wrapped__ = original
    return train_step


def non_finite_weight(model) -> Optional[str]:
    """The name of the first floating-point weight or buffer of ``model`` holding NaN or inf."""
    for name, tensor in model.state_dict().items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def _finite_save(original):
    def save_checkpoint(cfg, trainer, epoch_itr, val_loss):
        name = non_finite_weight(trainer.get_model())
        if name is not None:
            last = os.path.join(cfg.save_dir, "checkpoint_last.pt")
            kept = (f"checkpoint_last.pt in {cfg.save_dir} keeps the last finite weights"
                    if os.path.exists(last) else f"nothing was saved in {cfg.save_dir}")
            raise NonFiniteLossError(
                f"not saving a checkpoint after update {trainer.get_num_updates()}: the weight {name} "
                f"holds NaN or infinite values, so {kept}. {_usual_causes(trainer)}")
        return original(cfg, trainer, epoch_itr, val_loss)

    save_checkpoint.__wrapped__ = original
    return save_checkpoint


# --- --path of fairseq-generate, fairseq-validate, fairseq-eval-lm ----------------------------

MODEL_FILE_NOT_FOUND = "Model file not found: "


def _running_eval_lm() -> bool:
    name = os.path.basename(sys.argv[0]) if sys.argv else ""
    return name in ("fairseq-eval-lm", "eval_lm.py")


def _not_a_language_model(filenames) -> IncompatibleCheckpointError:
    path = ":".join(map(str, filenames))
    return IncompatibleCheckpointError(
        f"fairseq-eval-lm scores language models, and {path} holds a Sentence VAE: score it with "
        f"svae-eval DATA_DIR --path {path} (importance-weighted NLL and perplexity), or pass a "
        f"language model's checkpoint (fairseq-train --task language_modeling)")


def _holds_sentence_vae(filename) -> bool:
    from fairseq_svae.sentence_vae_checkpoint import is_sentence_vae, saved_config

    try:
        return is_sentence_vae(saved_config(checkpoint_utils.load_checkpoint_to_cpu(filename)).model)
    except Exception:  # unreadable: what fairseq raised stands
        return False


def _checked_ensemble_loader(original):
    def load_model_ensemble_and_task(filenames, *args, **kwargs):
        try:
            result = original(filenames, *args, **kwargs)
        except OSError as error:
            if isinstance(error, UserError) or not str(error).startswith(MODEL_FILE_NOT_FOUND):
                raise
            path = str(error)[len(MODEL_FILE_NOT_FOUND):]
            raise MissingCheckpointError(
                f"checkpoint {path!r} not found; pass --path SAVE_DIR/checkpoint_best.pt, where SAVE_DIR "
                f"is the --save-dir of a fairseq-train run (it holds checkpoint_best.pt and "
                f"checkpoint_last.pt)") from error
        except Exception as error:
            # fairseq-eval-lm builds the checkpoint's model for its language_modeling task, which
            # fails on a Sentence VAE deep inside fairseq; only then is the checkpoint read again.
            if _running_eval_lm() and user_error_in(error) is None and \
                    any(_holds_sentence_vae(name) for name in filenames):
                raise _not_a_language_model(filenames) from error
            raise
        if _running_eval_lm():
            from fairseq_svae.sentence_vae_checkpoint import is_sentence_vae_model

            if any(is_sentence_vae_model(model) for model in result[0]):
                raise _not_a_language_model(filenames)
        return result

    load_model_ensemble_and_task.__wrapped__ = original
    return load_model_ensemble_and_task


MARK = "__svae_startup_check__"


def _wrap(owner, name: str, wrapper) -> None:
    wrap_once(owner, name, wrapper, MARK)


def install() -> None:
    """Wrap fairseq's save-dir check, resume, train step, save and ensemble loader (idempotent)."""
    _wrap(checkpoint_utils, "verify_checkpoint_directory", _checked_save_dir)
    _wrap(Trainer, "load_checkpoint", _checked_restore)
    _wrap(Trainer, "train_step", _checked_train_step)
    _wrap(checkpoint_utils, "save_checkpoint", _finite_save)
    _wrap(checkpoint_utils, "load_model_ensemble_and_task", _checked_ensemble_loader)
