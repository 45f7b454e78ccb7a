"""Manners (issue 25): importing the plugin changes nothing global in a user's process; warnings
nobody can act on are silenced at their source in fairseq's commands; the plugin's commands show
their own options first, fairseq's behind --help-all. Real processes throughout."""

import importlib
import subprocess
import sys
import warnings

import pytest

from conftest import run_command, train_args


def run_python(source: str, tmp_path, name="user_script.py"):
    script = tmp_path / name
    script.write_text(source, encoding="utf-8")
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


# --- (a) sys.excepthook: only for commands; chained errors never hidden ----------------------------

def test_importing_the_plugin_leaves_the_excepthook_and_the_warning_filters_alone(tmp_path):
    result = run_python(
        "import sys, warnings\n"
        "import fairseq, torch\n"
        "before = list(warnings.filters)\n"
        "import fairseq_svae\n"
        "print(sys.excepthook is sys.__excepthook__, warnings.filters == before)\n", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["True", "True"]


USER_SCRIPT = """
import fairseq_svae
from fairseq_svae.checkpoint_io import DamagedCheckpointError, load_checkpoint_state
{install}
open("empty.pt", "wb").close()
try:
    load_checkpoint_state("empty.pt")
except DamagedCheckpointError:
    {handler}
"""


@pytest.mark.parametrize("hook", ["script", "command hook installed"])
def test_an_error_the_user_raises_while_handling_a_plugin_error_shows_its_traceback(tmp_path, hook):
    install = "fairseq_svae.errors.install_error_reporting()" if hook != "script" else ""
    result = run_python(USER_SCRIPT.format(install=install, handler='raise KeyError("my own bug")'), tmp_path)
    assert result.returncode == 1
    err = result.stderr
    assert "DamagedCheckpointError: cannot use checkpoint empty.pt: the file is empty" in err, err[-3000:]
    assert "During handling of the above exception, another exception occurred" in err
    assert err.rstrip().endswith("KeyError: 'my own bug'"), err[-3000:]
    assert 'raise KeyError("my own bug")' in err  # the user's own line, in their traceback
    assert ": error: DamagedCheckpointError" not in err  # not folded into the plugin's one line


def test_in_a_command_a_plugin_error_alone_is_still_one_line(tmp_path):
    result = run_python(USER_SCRIPT.format(install="fairseq_svae.errors.install_error_reporting()",
                                           handler="raise"), tmp_path, name="svae_stand_in.py")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "svae_stand_in.py: error: DamagedCheckpointError: cannot use checkpoint empty.pt: the file is empty")
    assert "Traceback" not in result.stderr


# --- (b) warnings a user cannot act on ----------------------------------------------------------

def warning_lines(text: str):
    return [line for line in text.splitlines() if "warn" in line.lower()]


def test_a_five_update_cpu_training_run_prints_at_most_two_warning_lines(data_bin, tmp_path):
    result = run_command("fairseq-train", *train_args(data_bin, tmp_path / "save", "--max-update", "5",
                                                      "--no-epoch-checkpoints"))
    assert "| train | " in result.stdout  # it trained
    assert len(warning_lines(result.stderr)) <= 2, result.stderr[-4000:]
    assert len(warning_lines(result.stdout + result.stderr)) <= 2, warning_lines(result.stdout + result.stderr)


def test_the_filters_are_targeted():
    from fairseq_svae.command_line import ignore_unactionable_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        before = list(warnings.filters)
        ignore_unactionable_warnings()
        added = [entry for entry in warnings.filters if entry not in before]
        assert added and all(action == "ignore" and message is not None and category is not Warning
                             for action, message, category, module, line in added)
        # Other warnings, even from the same places, still show.
        warnings.warn_explicit("hydra.something_else() is deprecated", UserWarning, "compose.py", 1,
                               module="hydra.compose")
        warnings.warn_explicit("a DataLoader worker is slow", UserWarning, "dataloader.py", 1,
                               module="torch.utils.data.dataloader")
        warnings.warn_explicit("`torch.cuda.amp.autocast(args...)` is deprecated. Please use ...",
                               FutureWarning, "my_training.py", 1, module="my_training")
        # The ones silenced do not.
        warnings.warn_explicit("'pin_memory' argument is set as true but no accelerator is found, then ...",
                               UserWarning, "dataloader.py", 1, module="torch.utils.data.dataloader")
        warnings.warn_explicit("`torch.cuda.amp.autocast(args...)` is deprecated. Please use ...",
                               FutureWarning, "fairseq_task.py", 1, module="fairseq.tasks.fairseq_task")
    shown = [(str(entry.message), entry.category) for entry in caught]
    assert shown == [("hydra.something_else() is deprecated", UserWarning),
                     ("a DataLoader worker is slow", UserWarning),
                     ("`torch.cuda.amp.autocast(args...)` is deprecated. Please use ...", FutureWarning)]


# --- (c) the commands' own options first ---------------------------------------------------------

COMMANDS = {
    # command: (module that builds its parser, function, options of its own that must be shown,
    #           fairseq options only --help-all shows)
    "svae-report": ("fairseq_svae.cli.report", "build_parser", ["--prior-samples", "--critic-path", "--json"],
                    ["--lenpen", "--max-len-b"]),
    "svae-eval": ("fairseq_svae.cli.evaluate", "get_parser", ["--iw-samples", "--first-sentences", "--json"],
                  ["--skip-invalid-size-inputs-valid-test", "--num-workers"]),
    "svae-interpolate": ("fairseq_svae.cli.interpolate", "build_parser", ["--steps", "--spherical"],
                         ["--lenpen", "--max-len-b"]),
    "svae-impute": ("fairseq_svae.cli.impute", "build_parser", ["--iterations"], ["--lenpen", "--max-len-b"]),
}


def own_options(module: str, function: str):
    parser = getattr(importlib.import_module(module), function)()
    return [action.option_strings[-1] for action in parser._actions
            if action.option_strings and action not in parser._svae_fairseq_actions]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_shows_the_commands_own_options_first_and_help_all_everything(command):
    module, function, named, fairseq_only = COMMANDS[command]
    own = own_options(module, function)
    assert set(named) <= set(own)

    short = run_command(command, "--help")
    lines = short.stdout.splitlines()
    assert lines[0].startswith(f"usage: {command} DATA --path CHECKPOINT [options]")
    assert len(lines) <= 80, short.stdout
    first_fairseq = lines.index("main fairseq options:")
    for option in own:
        assert any(line.lstrip().startswith(option) for line in lines[:first_fairseq]), (option, short.stdout)
    assert "--help-all" in short.stdout and "--path" in short.stdout
    for option in fairseq_only:
        assert option not in short.stdout

    everything = run_command(command, "--help-all")
    for option in [*own, *fairseq_only, "--path"]:
        assert option in everything.stdout
    assert len(everything.stdout.splitlines()) > 200
