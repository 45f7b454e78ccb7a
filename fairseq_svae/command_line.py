"""What the plugin changes in a process only when that process is a command.

Importing ``fairseq_svae`` from a script or a notebook leaves ``sys.excepthook`` and the warning
filters as they were. When the process is one of fairseq's commands (``fairseq-train``,
``fairseq-generate``, ... or ``python -m fairseq_cli.X``, which import the plugin through
``--user-dir``) or one of the plugin's (``svae-*``), :func:`install` also

- prints the plugin's errors for users in one line (:func:`fairseq_svae.errors.report_user_errors`
  as ``sys.excepthook``), and
- silences, at their source, the warnings that fairseq 0.12 on this stack triggers and that a
  user of the command cannot act on (:func:`ignore_unactionable_warnings`).
"""

import os
import sys
import warnings
from typing import Optional

from fairseq_svae import errors

COMMAND_PREFIXES = ("fairseq-", "svae-")
# Packages whose modules, run as ``python -m PACKAGE.MODULE``, are commands.
COMMAND_PACKAGES = ("fairseq_cli", os.path.join("fairseq_svae", "cli"))

# Deprecation warnings of hydra 1.3 about how fairseq 0.12 calls it (its config store, its
# experimental initialize/compose API, `# @package _group_` headers, the strict flag), each the
# first words of the message as hydra words it; the `'config' is validated against ConfigStore`
# one is reported as from `sys` (hydra's stack level runs past the top of the stack).
HYDRA_DEPRECATIONS = (
    r"hydra\.experimental\.(initialize|compose)\(\) is no longer experimental",
    r"\s*The version_base parameter is not specified",
    r"In '[^']*': Usage of deprecated keyword in package header '# @package _group_'",
    r"\s*'[^']*' is validated against ConfigStore schema with the same name",
    r"\s*The strict flag in the compose API is deprecated",
)


def is_command(argv0: Optional[str] = None) -> bool:
    """Whether the process runs a fairseq or plugin command (by its ``sys.argv[0]``)."""
    if argv0 is None:
        argv0 = sys.argv[0] if sys.argv else ""
    if not argv0:
        return False
    name = os.path.basename(argv0)
    if name.startswith(COMMAND_PREFIXES) and not name.endswith(".py"):  # installed console scripts
        return True
    directory = os.path.dirname(os.path.abspath(argv0))
    return name.endswith(".py") and directory.endswith(tuple(os.sep + package for package in COMMAND_PACKAGES))


def ignore_hydra_deprecations() -> None:
    for message in HYDRA_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)


def ignore_unactionable_warnings() -> None:
    """Filters for exactly the warnings a CPU fairseq-train run prints that only fairseq's or
    torch's maintainers could act on: hydra's deprecations of fairseq's calls, torch's note that
    fairseq's data loaders ask for pinned memory without a GPU, and torch's deprecation of the
    ``torch.cuda.amp.autocast`` that fairseq's train and valid steps enter."""
    ignore_hydra_deprecations()
    warnings.filterwarnings(
        "ignore", message=r"'pin_memory' argument is set as true but no accelerator is found",
        category=UserWarning, module=r"torch\.utils\.data\.dataloader")
    warnings.filterwarnings(
        "ignore", message=r"`torch\.cuda\.amp\.autocast\(args\.\.\.\)` is deprecated",
        category=FutureWarning, module=r"fairseq(\.|$)")


def install() -> None:
    """Error printer and warning filters, for a command's process only (idempotent)."""
    if is_command():
        errors.install_error_reporting()
        ignore_unactionable_warnings()
