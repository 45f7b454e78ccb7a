"""examples/multi30k/compare_seeds.py: one setting's figures over several runs, with mean and deviation."""

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

from fairseq_svae.errors import MissingDataError, OptionError

COMPARE_SEEDS = Path(__file__).resolve().parents[1] / "examples" / "multi30k" / "compare_seeds.py"


def load_script():
    spec = importlib.util.spec_from_file_location("compare_seeds", COMPARE_SEEDS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_results(path: Path, average: float, pairwise: float) -> Path:
    """A results.json as svae-translation-eval writes it: one five-output and one single-output setting."""
    settings = [
        {"name": "five", "first_output_bleu": average + 1, "average_bleu": average,
         "oracle_bleu": average + 8, "pairwise_bleu": pairwise},
        {"name": "one", "first_output_bleu": average + 2},
    ]
    path.write_text(json.dumps({"settings": settings}), encoding="utf-8")
    return path


def test_the_row_of_several_runs_is_their_mean_and_sample_deviation_and_each_value(tmp_path, monkeypatch, capsys):
    first = write_results(tmp_path / "a.json", average=28.0, pairwise=56.0)
    second = write_results(tmp_path / "b.json", average=29.0, pairwise=53.0)
    monkeypatch.setattr(sys, "argv", ["compare_seeds.py", "--system", "CVAE", "five", str(first), str(second),
                                      "--system", "single", "one", str(first)])
    load_script().main()
    lines = capsys.readouterr().out.splitlines()
    cvae = next(line for line in lines if line.startswith("| CVAE |"))
    cells = [cell.strip() for cell in cvae.strip("|").split("|")]
    assert cells[1] == "2"
    assert cells[3] == f"28.50 ± {statistics.stdev([28.0, 29.0]):.2f} (28.00 / 29.00)"
    assert cells[5] == f"54.50 ± {statistics.stdev([56.0, 53.0]):.2f} (56.00 / 53.00)"
    single = next(line for line in lines if line.startswith("| single |"))
    # A single-output setting has no average, oracle or pairwise BLEU: those cells stay empty.
    assert [cell.strip() for cell in single.strip("|").split("|")][2:] == ["30.00", "", "", ""]


def test_a_setting_the_file_lacks_is_named_with_the_ones_it_has(tmp_path):
    results = write_results(tmp_path / "a.json", average=28.0, pairwise=56.0)
    with pytest.raises(OptionError, match=r"no setting 'hMoEup'.*'five', 'one'"):
        load_script().setting_figures(results, "hMoEup")
    with pytest.raises(MissingDataError, match="svae-translation-eval --output-dir"):
        load_script().setting_figures(tmp_path / "missing.json", "five")
