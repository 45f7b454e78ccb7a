#!/usr/bin/env python3
"""Draw a sentence VAE's training curves from a fairseq ``--log-format json`` log into a PNG.

    fairseq-train ... --criterion annealed_elbo --log-format json --log-file train.log
    python scripts/plot_training.py train.log -o training.png

Reads what fairseq prints with ``--log-format json`` (its stdout, or the ``--log-file``; ``-``
reads standard input) and plots, against the update number, the reconstruction NLL, the KL, the
negative ELBO (all in nats per sentence) and the KL weight: training intervals (``train_inner``)
as lines, validation (``valid``) as markers.

Parsing needs only the standard library; drawing needs matplotlib, an optional dependency of
the plugin (``pip install 'fairseq-svae[plot]'`` or ``pip install matplotlib``).
"""

import argparse
import json
import os
import sys
from typing import Dict, Iterable, Iterator, List, Tuple

CURVES = ("nll", "kl", "neg_elbo", "kl_weight")
Series = Dict[str, List[Tuple[float, float]]]


def json_records(lines: Iterable[str]) -> Iterator[dict]:
    """The JSON objects of a fairseq log, whether printed ("... | valid | {...}") or a --log-file."""
    for line in lines:
        line = line.rstrip()
        start = line.find("{")
        if start < 0 or not line.endswith("}"):
            continue
        try:
            record = json.loads(line[start:])
        except ValueError:  # e.g. the configuration, which fairseq writes as a Python dict
            continue
        if isinstance(record, dict):
            yield record


def read_training_log(lines: Iterable[str]) -> Dict[str, Series]:
    """{"train": {metric: [(update, value), ...]}, "valid": {...}} for the metrics in CURVES.

    Training points come from the per-interval records (``train_inner``, one per
    --log-interval; their keys are bare), validation points from the ``valid`` records (keys
    prefixed with ``valid_``); the per-epoch ``train_`` averages add nothing and are skipped.
    Values are floats whatever fairseq wrote (it writes most of them as strings).

    One point per update number, the last one read: fairseq 0.12 adds a --log-file handler
    each epoch, so epoch e's records appear e times in the file, and a resumed run appends
    records for updates the log already has.
    """
    by_update = {"train": {}, "valid": {}}
    for record in json_records(lines):
        if "num_updates" in record:
            kind, prefix = "train", ""
        elif "valid_num_updates" in record:
            kind, prefix = "valid", "valid_"
        else:
            continue
        by_update[kind][float(record[prefix + "num_updates"])] = {
            name: float(record[prefix + name]) for name in CURVES if prefix + name in record
        }
    return {
        kind: {
            name: [(update, values[name]) for update, values in sorted(points.items()) if name in values]
            for name in CURVES
        }
        for kind, points in by_update.items()
    }


def draw(series: Dict[str, Series], output: str, title: str = "") -> None:
    try:
        import matplotlib
    except ImportError:
        sys.exit(
            "plot_training.py needs matplotlib to draw: pip install 'fairseq-svae[plot]' "
            "(or pip install matplotlib)"
        )
    matplotlib.use("Agg")  # a file, never a window
    import matplotlib.pyplot as plt

    figure, (loss_axes, kl_axes) = plt.subplots(2, 1, sharex=True, figsize=(8, 7))
    weight_axes = kl_axes.twinx()
    styles = {"neg_elbo": ("negative ELBO", "tab:blue"), "nll": ("reconstruction NLL", "tab:orange"),
              "kl": ("KL", "tab:green"), "kl_weight": ("KL weight", "tab:gray")}
    placement = {"neg_elbo": loss_axes, "nll": loss_axes, "kl": kl_axes, "kl_weight": weight_axes}
    for name in CURVES:
        label, color = styles[name]
        axes = placement[name]
        train = series["train"][name]
        if train:
            axes.plot(*zip(*train), color=color, linewidth=1.2, label=f"{label} (train)")
        valid = series["valid"][name]
        if valid and name != "kl_weight":  # validation always uses weight 1
            axes.plot(*zip(*valid), color=color, marker="o", linestyle="--", linewidth=0.8,
                      label=f"{label} (valid)")

    loss_axes.set_ylabel("nats per sentence")
    loss_axes.legend(loc="best")
    loss_axes.grid(alpha=0.3)
    kl_axes.set_ylabel("KL (nats per sentence)")
    kl_axes.set_xlabel("updates")
    kl_axes.grid(alpha=0.3)
    weight_axes.set_ylabel("KL weight")
    weight_axes.set_ylim(bottom=0)
    handles = kl_axes.get_legend_handles_labels()
    extra = weight_axes.get_legend_handles_labels()
    kl_axes.legend(handles[0] + extra[0], handles[1] + extra[1], loc="center right")
    if title:
        loss_axes.set_title(title)
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    plt.close(figure)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", help="fairseq-train output or --log-file written with --log-format json "
                                    "('-' for standard input)")
    parser.add_argument("-o", "--output", default=None,
                        help="PNG to write (default: the log's name with .png)")
    parser.add_argument("--title", default="", help="title above the plot")
    args = parser.parse_args(argv)

    if args.log == "-":
        series = read_training_log(sys.stdin)
        output = args.output or "training.png"
    else:
        with open(args.log, encoding="utf-8") as handle:
            series = read_training_log(handle)
        output = args.output or os.path.splitext(args.log)[0] + ".png"
    if not any(series["train"].values()):
        sys.exit(
            f"no training records in {args.log}: train with --criterion annealed_elbo "
            f"--log-format json (and a --log-interval smaller than the run) and pass its output "
            f"or --log-file"
        )
    draw(series, output, args.title)
    points = len(series["train"]["nll"])
    print(f"wrote {output}: {points} training and {len(series['valid']['nll'])} validation points")


if __name__ == "__main__":
    main()
