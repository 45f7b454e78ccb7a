"""Errors a user can act on when feeding data, options, sentences or checkpoints to the Sentence VAE.

Each subclasses :class:`UserError` and the built-in error a caller would already catch
(``ValueError``, ``FileNotFoundError``); the message always says what was wrong, with the value,
and what to do instead. fairseq's command-line tools (fairseq-train, fairseq-generate, ...) do not
catch them, so importing the plugin installs :func:`report_user_errors` as ``sys.excepthook``: an
uncaught user error, also one that fairseq re-raised as another exception, is printed as
``PROG: error: Class: message`` without the traceback through fairseq's code (exit status 1).
``SVAE_TRACEBACK=1`` shows the full traceback.
"""

import os
import sys
from typing import Optional


class UserError(Exception):
    """An error whose message alone tells the user what to fix."""


class SentenceInputError(UserError, ValueError):
    """A sentence the model cannot read: empty, or longer than the model allows."""


class IncompatibleCheckpointError(UserError, ValueError):
    """A checkpoint that is not a Sentence VAE, or that does not fit the given data directory."""


class DictionaryMismatchError(IncompatibleCheckpointError):
    """The data directory's dict.txt is not the dictionary the checkpoint was trained with."""


class MissingDataError(UserError, FileNotFoundError):
    """A data directory, dictionary or split that fairseq-preprocess has not written."""


class OptionError(UserError, ValueError):
    """A command-line option out of its range, or missing."""


def user_error_in(error: BaseException) -> Optional[UserError]:
    """``error`` itself or the first :class:`UserError` it was raised from (or while handling)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def report_user_errors(error_type, error, traceback, fallback=sys.__excepthook__):
    """``sys.excepthook``: one line for a user error, the usual traceback for anything else."""
    user_error = user_error_in(error)
    if user_error is None or os.environ.get("SVAE_TRACEBACK"):
        fallback(error_type, error, traceback)
        return
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    print(f"{program}: error: {type(user_error).__name__}: {user_error}", file=sys.stderr)


def install_error_reporting() -> None:
    if sys.excepthook is sys.__excepthook__:  # leave a hook someone else installed alone
        sys.excepthook = report_user_errors
