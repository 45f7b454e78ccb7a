"""One setting's figures over several training runs (seeds), from svae-translation-eval's
results.json files: each run's first-output, average, oracle and pairwise BLEU, and their mean and
standard deviation, as a Markdown table.

    python examples/multi30k/compare_seeds.py \
      --system "hMoEup" "hMoEup 5 experts" results/results.json results/hmoeup-seed-2/test.json \
      --system "CVAE, 5 different" "CVAE 5 different outputs of 20 draws of z, beam 5" \
               results/cvae-seed-*/test.json

Between two seeds of one recipe the Multi30k models move by more than one BLEU point, more than
the differences between the systems; one run of each cannot order them, the mean of several can
(and the standard deviation says how far one run strays from it).
"""

import argparse
import json
import statistics
from pathlib import Path
from typing import Dict, List

from fairseq_svae.errors import MissingDataError, OptionError, exit_on_user_error

FIGURES = ("first_output_bleu", "average_bleu", "oracle_bleu", "pairwise_bleu")
HEADERS = ("BLEU (first output)", "average BLEU", "oracle BLEU", "pairwise BLEU")


def setting_figures(results_file: Path, setting: str) -> Dict[str, float]:
    """The figures of the named setting in one svae-translation-eval results.json."""
    if not results_file.is_file():
        raise MissingDataError(f"no results file {results_file}: svae-translation-eval --output-dir DIR writes DIR/results.json")
    settings = json.loads(results_file.read_text(encoding="utf-8"))["settings"]
    for entry in settings:
        if entry["name"] == setting:
            return {figure: entry.get(figure) for figure in FIGURES}
    names = ", ".join(repr(entry["name"]) for entry in settings)
    raise OptionError(f"{results_file} has no setting {setting!r}; it has {names}")


def summary(values: List[float]) -> str:
    """One run's value, or the runs' mean ± sample standard deviation followed by each value."""
    each = " / ".join(f"{value:.2f}" for value in values)
    if len(values) == 1:
        return each
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({each})"


def table(systems: List[List[str]]) -> str:
    rows = ["| system | runs | " + " | ".join(HEADERS) + " |", "|---" * (2 + len(HEADERS)) + "|"]
    for label, setting, *files in systems:
        runs = [setting_figures(Path(name), setting) for name in files]
        cells = []
        for figure in FIGURES:
            values = [run[figure] for run in runs if run[figure] is not None]
            cells.append(summary(values) if values else "")
        rows.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", nargs="+", action="append", required=True,
                        metavar="LABEL SETTING RESULTS_JSON",
                        help="a row: its label, the setting's name in the results files, and one "
                             "results.json a run (repeat --system for each row)")
    args = parser.parse_args()
    for system in args.system:
        if len(system) < 3:
            parser.error(f"--system {' '.join(system)}: give a label, a setting name and at least one results.json")
    print(table(args.system))


if __name__ == "__main__":
    exit_on_user_error(main, "compare_seeds.py")
