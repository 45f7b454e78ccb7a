"""Errors a user can act on when feeding data, options, sentences or checkpoints to the Sentence VAE.

Each subclasses :class:`UserError` and the built-in error a caller would already catch
(``ValueError``, ``FileNotFoundError``); the message always says what was wrong, with the value,
and what to do instead.

There is one way they reach a user of a command: ``PROG: error: Class: message`` on stderr, no
traceback, exit status :data:`USER_ERROR_EXIT_STATUS`. The plugin's own commands (``svae-eval``,
``svae-interpolate``) run their ``main`` through :func:`exit_on_user_error`; fairseq's commands
(fairseq-train, fairseq-generate, ...) do not catch them, so importing the plugin installs
:func:`report_user_errors` as ``sys.excepthook``, which prints the same line for an uncaught
user error, also one that fairseq re-raised as another exception (Python then exits with 1).
``SVAE_TRACEBACK=1`` shows the full traceback. Malformed command lines are argparse's business,
as in fairseq: usage and exit status 2.
"""

import os
import sys
from typing import Callable, Optional

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


def user_error_in(error: BaseException) -> Optional[UserError]:
    """``error`` itself or the first :class:`UserError` it was raised from (or while handling)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def program_name() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"


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


def install_error_reporting() -> None:
    if sys.excepthook is sys.__excepthook__:  # leave a hook someone else installed alone
        sys.excepthook = report_user_errors


def nth_sentence(index: int) -> str:
    """How a message names the sentence at 0-based ``index`` for a person: "the first sentence"."""
    ordinals = ("first", "second", "third")
    return f"the {ordinals[index]} sentence" if index < len(ordinals) else f"sentence {index + 1}"
