"""User errors are printed as one line by the plugin's excepthook; everything else keeps its traceback."""

import io
import os
import sys

import fairseq
import pytest

import fairseq_svae

from fairseq_svae.errors import (
    USER_ERROR_EXIT_STATUS,
    MissingDataError,
    OptionError,
    exit_on_user_error,
    nth_sentence,
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


def code_of(package, source: str) -> dict:
    """``source`` compiled as if it were a module of ``package`` (its frames are that package's,
    as where fairseq or the plugin raise is what tells their wrappers from the user's)."""
    namespace = {"__name__": f"{package.__name__}.test_stand_in"}
    exec(compile(source, os.path.join(os.path.dirname(package.__file__), "test_stand_in.py"), "exec"), namespace)
    return namespace


def test_a_user_error_that_fairseq_re_raised_is_still_found(monkeypatch):
    # fairseq wraps some errors, e.g. `raise Exception("Cannot load model parameters ...") from e`.
    original = raised(MissingDataError("data directory 'x' does not exist"))
    fairseq_code = code_of(fairseq, "def wrap(error):\n    raise RuntimeError(\"fairseq's wrapper\") from error\n"
                                    "def reraise(error):\n    try:\n        raise error\n"
                                    "    except Exception:\n        raise RuntimeError(\"Cannot load\")\n")
    for wrap in (fairseq_code["wrap"], fairseq_code["reraise"]):
        try:
            wrap(original)
        except RuntimeError as wrapper:
            assert user_error_in(wrapper) is original
            text, _ = reported(wrapper, monkeypatch)
        assert text == "fairseq-train: error: MissingDataError: data directory 'x' does not exist\n"


def test_an_error_the_user_raised_while_handling_a_plugin_error_keeps_its_traceback(monkeypatch):
    original = raised(OptionError("--free-bits must be >= 0, got -1"))
    for explicit in (False, True):
        try:
            try:
                raise original
            except OptionError as error:
                if explicit:
                    raise KeyError("the user's own bug") from error
                raise KeyError("the user's own bug")
        except KeyError as error:
            theirs = error
        assert user_error_in(theirs) is None
        text, fallback = reported(theirs, monkeypatch)
        assert text == "" and fallback[0][1] is theirs  # Python's hook: the whole chain
        # and the plugin's commands re-raise it as it is
        with pytest.raises(KeyError) as again:
            exit_on_user_error(lambda: (_ for _ in ()).throw(theirs), "svae-eval")
        assert again.value is theirs


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


def test_the_plugin_commands_end_a_user_error_like_the_excepthook(monkeypatch):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)

    main = code_of(fairseq_svae, (
        "def main():\n    from fairseq_svae.errors import OptionError\n    try:\n"
        "        raise KeyError('inner')\n    except KeyError:\n"
        "        raise RuntimeError('a wrapper') from OptionError('--steps must be at least 2, got 1')\n"))["main"]

    with pytest.raises(SystemExit) as exited:
        exit_on_user_error(main, "svae-interpolate")
    assert exited.value.code == USER_ERROR_EXIT_STATUS == 1
    assert stderr.getvalue() == "svae-interpolate: error: OptionError: --steps must be at least 2, got 1\n"

    def buggy():
        raise KeyError("a bug")

    with pytest.raises(KeyError):  # anything else keeps its traceback
        exit_on_user_error(buggy, "svae-eval")
    monkeypatch.setenv("SVAE_TRACEBACK", "1")
    with pytest.raises(RuntimeError):
        exit_on_user_error(main, "svae-eval")


def test_messages_name_sentences_as_a_person_counts_them():
    assert [nth_sentence(i) for i in range(5)] == [
        "the first sentence", "the second sentence", "the third sentence", "sentence 4", "sentence 5"]


def test_every_error_meant_for_a_user_is_a_user_error():
    from fairseq_svae.checkpoint_io import DamagedCheckpointError, UnsafeCheckpointError
    from fairseq_svae.errors import (
        DictionaryMismatchError,
        IncompatibleCheckpointError,
        MissingCheckpointError,
        SentenceInputError,
        TooFewSentencesError,
        UserError,
    )

    for error_class in (DamagedCheckpointError, UnsafeCheckpointError, DictionaryMismatchError,
                        IncompatibleCheckpointError, MissingCheckpointError, MissingDataError,
                        OptionError, SentenceInputError, TooFewSentencesError):
        assert issubclass(error_class, UserError)


def test_the_program_is_named_as_the_user_knows_it(monkeypatch):
    from fairseq_svae.errors import program_name

    # torchrun's form, python -m fairseq_cli.train, runs fairseq_cli/train.py: that is fairseq-train.
    for argv0, name in (("/env/lib/site-packages/fairseq_cli/train.py", "fairseq-train"),
                        ("/env/lib/site-packages/fairseq_cli/eval_lm.py", "fairseq-eval-lm"),
                        ("/env/bin/fairseq-generate", "fairseq-generate"), ("/env/bin/svae-eval", "svae-eval"),
                        ("/home/me/train.py", "train.py")):
        monkeypatch.setattr("sys.argv", [argv0])
        assert program_name() == name
