"""Errors a user can act on when feeding data, options, sentences or checkpoints to the Sentence VAE.

Each subclasses :class:`UserError` and the built-in error a caller would already catch
(``ValueError``, ``FileNotFoundError``); the message always says what was wrong, with the value,
and what to do instead.

There is one way they reach a user of a command: ``PROG: error: Class: message`` on stderr, no
traceback, exit status :data:`USER_ERROR_EXIT_STATUS`. The plugin's own commands (``svae-eval``,
``svae-interpolate``) run their ``main`` through :func:`exit_on_user_error`; fairseq's commands
(fairseq-train, fairseq-generate, ...) do not catch them, so when the plugin is imported into one
of them (``--user-dir``) it installs :func:`report_user_errors` as ``sys.excepthook`` (see
:mod:`fairseq_svae.command_line`; a script that imports the plugin keeps its own hook), which
prints the same line for an uncaught user error, also one that fairseq re-raised as another
exception (Python then exits with 1), on every rank of a run on several processes too (see
:func:`report_user_errors_first`). Only an error that fairseq, the plugin or the libraries
between them raised while handling a user error counts as that user error: one raised by the
user's own code (a handler of theirs, a module of theirs) is theirs, and keeps its traceback
with the whole chain. ``SVAE_TRACEBACK=1`` shows the full traceback. Malformed command lines
are argparse's business, as in fairseq: usage and exit status 2.
"""

import importlib.util
import os
import sys
from functools import lru_cache, partial
from typing import Callable, Optional, Tuple

# What Python itself returns after an uncaught exception, so fairseq's commands (whose
# exceptions end in the excepthook) and the plugin's commands agree.
USER_ERROR_EXIT_STATUS = 1


class UserError(Exception):
    """An error whose message alone tells the user what to fix."""


class SentenceInputError(UserError, ValueError):
    """A sentence the model cannot read: empty, not text, or longer than the model allows."""


class IncompatibleCheckpointError(UserError, ValueError):
    """A checkpoint that is not a Sentence VAE, or that does not fit the given data directory."""


class DictionaryMismatchError(IncompatibleCheckpointError):
    """The data directory's dict.txt is not the dictionary the checkpoint was trained with."""


class MissingDataError(UserError, FileNotFoundError):
    """A data directory, dictionary or split that fairseq-preprocess has not written."""


class MissingCheckpointError(UserError, FileNotFoundError):
    """A checkpoint file or model directory that does not exist."""


class OptionError(UserError, ValueError):
    """A command-line option or keyword argument out of its range, or missing."""


class TooFewSentencesError(UserError, ValueError):
    """The statistics asked for need more sentences than were selected."""


class DamagedDataError(UserError, ValueError):
    """A binarized split (``.bin``/``.idx``) that is truncated, altered or not fairseq-preprocess's."""


class SaveDirectoryError(UserError, OSError):
    """A --save-dir that is not a directory, or that this process cannot write into."""


class NonFiniteLossError(UserError, FloatingPointError):
    """Training produced a NaN or infinite loss, gradient or weight."""


# Packages whose code may wrap a user error and still leave it the user's error to report: fairseq
# re-raises some as its own (``raise Exception("Cannot load model parameters ...")``), and the
# libraries it calls the plugin through pass them on.
LIBRARY_PACKAGES = ("fairseq", "fairseq_cli", "fairseq_svae", "torch", "hydra", "omegaconf")


@lru_cache(maxsize=1)
def _library_directories() -> Tuple[str, ...]:
    directories = []
    for package in LIBRARY_PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        for location in (spec.submodule_search_locations or []) if spec else []:
            directories.append(os.path.join(os.path.realpath(location), ""))
    return tuple(directories)


def raised_by_library(error: BaseException) -> bool:
    """Whether ``error`` was raised in code of :data:`LIBRARY_PACKAGES` (its traceback's last frame
    is theirs), not in the user's own code. An exception never raised (one given as a cause) is
    taken as the library's."""
    traceback = error.__traceback__
    if traceback is None:
        return True
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    filename = traceback.tb_frame.f_code.co_filename
    return os.path.realpath(filename).startswith(_library_directories())


def user_error_in(error: BaseException) -> Optional[UserError]:
    """``error`` itself or the first :class:`UserError` it was raised from (or while handling),
    when every exception in between was raised by fairseq, the plugin or the libraries between
    them; None when one of them is the user's own (its traceback must show)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        if not raised_by_library(error):
            return None
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def program_name() -> str:
    """The command as the user knows it: ``python -m fairseq_cli.train`` (torchrun's form) runs
    fairseq_cli/train.py, which is fairseq-train."""
    if not (sys.argv and sys.argv[0]):
        return "python"
    path = os.path.normpath(sys.argv[0])
    name = os.path.basename(path)
    if os.path.basename(os.path.dirname(path)) == "fairseq_cli" and name.endswith(".py"):
        return "fairseq-" + name[: -len(".py")].replace("_", "-")
    return name


def user_error_line(error: UserError, program: Optional[str] = None) -> str:
    """The one line a command prints for ``error``."""
    return f"{program or program_name()}: error: {type(error).__name__}: {error}"


def report_user_errors(error_type, error, traceback, fallback=sys.__excepthook__):
    """``sys.excepthook``: one line for a user error, the usual traceback for anything else."""
    user_error = user_error_in(error)
    if user_error is None or os.environ.get("SVAE_TRACEBACK"):
        fallback(error_type, error, traceback)
        return
    print(user_error_line(user_error), file=sys.stderr)


def exit_on_user_error(main: Callable[[], object], program: Optional[str] = None) -> None:
    """Run a command's ``main``; a user error ends it as the excepthook would, without a traceback."""
    try:
        main()
    except Exception as error:
        user_error = user_error_in(error)
        if user_error is None or os.environ.get("SVAE_TRACEBACK"):
            raise
        print(user_error_line(user_error, program), file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_STATUS)


# Whether this process made report_user_errors its excepthook (a command's process).
_reporting_installed = False


def install_error_reporting() -> None:
    """``report_user_errors`` as ``sys.excepthook``: for commands (see fairseq_svae.command_line)."""
    global _reporting_installed
    if sys.excepthook is sys.__excepthook__:  # leave a hook someone else installed alone
        sys.excepthook = report_user_errors
        _reporting_installed = True


def report_user_errors_first() -> None:
    """Call once the process group of a run on several processes exists.

    ``torch.distributed.init_process_group`` replaces ``sys.excepthook`` with a hook that runs the
    previous one into a buffer and prints each of its lines prefixed with ``[rankN]: ``, which
    would turn the plugin's one line into ``[rank0]: fairseq-train: error: ...``. Put
    :func:`report_user_errors` back in front, with torch's hook as its fallback: a user error is
    the same line on every rank as in one process, and any other error still reaches torch's
    hook, whose prefix tells the ranks' tracebacks apart. Only where the plugin installed its
    printer (see :func:`install_error_reporting`); idempotent."""
    hook = sys.excepthook
    in_front = hook is report_user_errors or getattr(hook, "func", None) is report_user_errors
    if _reporting_installed and not in_front:
        sys.excepthook = partial(report_user_errors, fallback=hook)


def nth_sentence(index: int) -> str:
    """How a message names the sentence at 0-based ``index`` for a person: "the first sentence"."""
    ordinals = ("first", "second", "third")
    return f"the {ordinals[index]} sentence" if index < len(ordinals) else f"sentence {index + 1}"
