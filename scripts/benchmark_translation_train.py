"""Training throughput of ``--arch sentence_cvae`` against fairseq's own ``lstm`` on Multi30k.

Both models train through the real ``fairseq-train`` with the options of
``examples/multi30k/model_options.sh`` (their one home: the same 256-d sizes, dropout, batches of
``--max-tokens 4000``, Adam, clipping and seed), on one thread each, and ``hMoEup`` with
``--moe`` for scale. For each row the script prints target tokens per second (fairseq's own
``wps``, the first logged interval dropped as warm-up) and the ratio to ``lstm``: issue 26's
speed target is the CVAE at >= 0.9x.

    python scripts/benchmark_translation_train.py                 # rows one after the other, ~15 min
    python scripts/benchmark_translation_train.py --parallel      # side by side, a core each
    python scripts/benchmark_translation_train.py --updates 100 --moe

The data is ``runs/multi30k/data-bin`` (``bash examples/multi30k/prepare.sh`` makes it, about
a minute). ``CVAE_OPTIONS`` in the environment changes the CVAE row as it changes the recipe.
Run it on an otherwise idle machine: another busy process on the same cores changes the figures.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL_OPTIONS = REPO / "examples" / "multi30k" / "model_options.sh"
sys.path.insert(0, str(REPO / "scripts"))

from benchmark_train import finished_log, start_training, throughput  # noqa: E402


def recipe_options(array: str) -> list:
    """One bash array of model_options.sh, word by word (the recipe's own options, not a copy)."""
    script = f'. "{MODEL_OPTIONS}" && printf "%s\\n" "${{{array}[@]}}"'
    words = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True).stdout
    return words.splitlines()


def user_dir(*names: str) -> str:
    return subprocess.run(["svae-user-dir", *names], check=True, capture_output=True, text=True).stdout.strip()


def rows(data_bin: Path, moe: bool) -> list:
    """(name, fairseq-train arguments) of each row, ``lstm`` first (the baseline)."""
    training = recipe_options("training_options")
    # The recipe's budget and logging are replaced by the benchmark's own (--max-update below).
    for option in ("--max-update", "--log-interval"):
        index = training.index(option)
        del training[index:index + 2]
    common = [*training, "--cpu", "--no-save", "--disable-validation"]
    plugin = user_dir()
    table = [
        ("lstm", [data_bin, "--user-dir", plugin, *recipe_options("lstm_model_options"), *common]),
        ("sentence_cvae", [data_bin, "--user-dir", plugin, *recipe_options("cvae_model_options"), *common]),
    ]
    if moe:
        table.append(("hMoEup, 5 experts", [data_bin, "--user-dir", user_dir("translation_moe"),
                                           *recipe_options("moe_model_options"), *common]))
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-bin", type=Path, default=REPO / "runs" / "multi30k" / "data-bin",
                        help="Multi30k binarized by examples/multi30k/prepare.sh")
    parser.add_argument("--updates", type=int, default=300, help="updates per row")
    parser.add_argument("--log-interval", type=int, default=50)
    parser.add_argument("--parallel", action="store_true", help="train the rows at the same time, a core each")
    parser.add_argument("--moe", action="store_true", help="also time fairseq's hMoEup (5 experts; slow)")
    options = parser.parse_args()
    if not (options.data_bin / "dict.en.txt").exists():
        sys.exit(f"benchmark_translation_train.py: error: MissingDataError: {options.data_bin} holds no "
                 f"Multi30k data-bin; make it with: bash examples/multi30k/prepare.sh")
    if options.updates < 2 * options.log_interval:
        sys.exit("benchmark_translation_train.py: error: OptionError: --updates must be at least twice "
                 "--log-interval (the first interval is warm-up)")

    table = rows(options.data_bin, options.moe)
    cores = sorted(os.sched_getaffinity(0))
    if options.parallel and len(cores) < len(table):
        sys.exit(f"--parallel needs {len(table)} cores, and this process may use {len(cores)}")
    budget = ["--max-update", options.updates, "--log-interval", options.log_interval]
    results, started = {}, []
    for index, (name, args) in enumerate(table):
        process = start_training(name, args + budget, cores=[cores[index]] if options.parallel else None)
        if options.parallel:
            started.append((name, process))
        else:
            results[name] = throughput(name, finished_log(name, process), options.log_interval)
    for name, process in started:
        results[name] = throughput(name, finished_log(name, process), options.log_interval)

    baseline = results["lstm"]["tokens_per_second"]
    layout = "side by side, one core each" if options.parallel else "one after the other"
    print(f"\nMulti30k en->de, examples/multi30k/model_options.sh, {options.updates} updates a row, "
          f"one thread ({layout}), first logged interval not timed")
    print(f"  {'row':20s} {'target tokens/s':>16s} {'x lstm':>7s}")
    for name, figures in results.items():
        print(f"  {name:20s} {figures['tokens_per_second']:16.0f} {figures['tokens_per_second'] / baseline:7.2f}")


if __name__ == "__main__":
    main()
