"""User errors are printed as one line by the plugin's excepthook; everything else keeps its traceback."""

import io
import sys

from fairseq_svae.errors import (
    MissingDataError,
    OptionError,
    report_user_errors,
    user_error_in,
)


def raised(error):
    try:
        raise error
    except BaseException as caught:  # noqa: B902  (we want the traceback object)
        return caught


def reported(error, monkeypatch, env=None):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/fairseq-train", "data-bin"])
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    fallback_calls = []
    report_user_errors(type(error), error, error.__traceback__,
                       fallback=lambda *args: fallback_calls.append(args))
    return stderr.getvalue(), fallback_calls


def test_a_user_error_is_one_line_named_after_the_program(monkeypatch):
    text, fallback = reported(raised(OptionError("--free-bits must be >= 0, got -1")), monkeypatch)
    assert text == "fairseq-train: error: OptionError: --free-bits must be >= 0, got -1\n"
    assert fallback == []


def test_a_user_error_that_fairseq_re_raised_is_still_found(monkeypatch):
    # fairseq wraps some errors, e.g. `raise Exception("Cannot load model parameters ...") from e`.
    original = raised(MissingDataError("data directory 'x' does not exist"))
    try:
        raise RuntimeError("fairseq's wrapper") from original
    except RuntimeError as wrapper:
        assert user_error_in(wrapper) is original
        text, _ = reported(wrapper, monkeypatch)
    assert text == "fairseq-train: error: MissingDataError: data directory 'x' does not exist\n"


def test_other_errors_and_svae_traceback_keep_the_traceback(monkeypatch):
    bug = raised(KeyError("a bug"))
    text, fallback = reported(bug, monkeypatch)
    assert text == "" and fallback[0][1] is bug
    user = raised(OptionError("bad option"))
    text, fallback = reported(user, monkeypatch, env={"SVAE_TRACEBACK": "1"})
    assert text == "" and fallback[0][1] is user


def test_user_errors_are_still_the_builtin_errors_callers_catch():
    assert isinstance(MissingDataError("x"), FileNotFoundError)
    assert isinstance(OptionError("x"), ValueError)
