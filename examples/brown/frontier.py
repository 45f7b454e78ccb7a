"""The NLL-MI frontier of examples/brown: each setting scored the same way, one table, one plot.

For every setting it runs the real commands and keeps their figures:

- ``svae-eval`` (importance-weighted NLL with ``--iw-samples`` samples, negative ELBO, KL, mutual
  information over the whole split, active units) or, for a language model, its exact NLL;
- greedy reconstruction BLEU from the posterior mean: ``fairseq-generate --beam 1`` on the split,
  scored by sacreBLEU against the references as the dictionary sees them (``<unk>`` included);
- with ``--report "OPTIONS"``: ``svae-report`` with those options (e.g. ``--labels
  ../shared/data/brown/test.genre --critic-path LM.pt``): the statistics of prior samples (hit
  the length cap, distinct-2, critic perplexity) and the probes of what z holds (genre accuracy
  from z and from the words, paraphrase recall@1, attribute shifts), kept in each setting's JSON;
- with ``--fit-prior`` as well: ``svae-fit-prior`` on each VAE (a Gaussian mixture fitted to the
  codes of its training sentences, written beside the setting's JSON) and the report's samples
  from that prior beside N(0, I)'s, since at a high rate prior samples fall between the codes;
- the training cost read from the JSON training logs: updates and wall time (for a two-stage
  setting both stages' logs are summed).

    python examples/brown/frontier.py --data-bin runs/brown-recipe/data-bin --split valid \\
        --iw-samples 500 --out-dir runs/brown-recipe/frontier \\
        --setting "lstm_lm=runs/brown-recipe/lm/checkpoint_best.pt:runs/brown-recipe/lm.log" \\
        --setting "BN-VAE 1.0 + feed z=runs/brown-recipe/vae/checkpoint_best.pt:runs/brown-recipe/vae.log" \\
        --setting "Li et al. + BN 1.0=runs/li/checkpoint_best.pt:runs/ae.log:runs/li.log"

writes ``frontier.json`` (every figure of every setting), ``frontier.md`` (the table) and
``frontier.png`` (IW-NLL against MI, one point per setting, the language model as a line) in
``--out-dir`` (with ``--report`` also ``frontier-rate.png``: IW-NLL, reconstruction BLEU, the probes
and the prior samples' critic perplexity, each against the KL), and one JSON per setting beside them. Choose settings on ``valid``; report the
chosen ones on ``test``.

A frontier grows one setting at a time: a setting whose JSON in ``--out-dir`` was scored with the
same split, ``--iw-samples`` and ``--first-sentences`` and is newer than its checkpoint is read
back instead of scored again (an hour of K = 500 on test); ``--rescore`` scores everything anew.
A setting scored elsewhere can be given as ``NAME=SVAE_EVAL.json[:LOG...]``: its figures are
taken as they are (no reconstruction BLEU unless the file has one; no cost without logs).

A setting given as ``NAME=CHECKPOINT`` without logs takes its cost from the checkpoint: fairseq
keeps the number of updates and the training time so far in every checkpoint and carries them over
when a run resumes, so this counts every part of a run that was interrupted and resumed (whose
logs may be incomplete), but not an earlier stage that only handed over its weights.
"""

import argparse
import json
import logging
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def command_path(name: str):
    """The command installed beside this Python, else the one on PATH."""
    return BIN / name if (BIN / name).exists() else name
USER_DIR = Path(__file__).resolve().parents[2] / "fairseq_svae"
BLEU_LINE = re.compile(r"BLEU = ([\d.]+)")


def parse_setting(text: str):
    """'NAME=CHECKPOINT[:LOG...]' or 'NAME=SCORES.json[:LOG...]' -> (name, path, [logs])."""
    name, sep, paths = text.partition("=")
    parts = paths.split(":")
    if not sep or not name or not parts[0]:
        sys.exit(f"--setting {text!r}: expected NAME=CHECKPOINT[:TRAIN_LOG...] "
                 f"or NAME=SVAE_EVAL.json[:TRAIN_LOG...]")
    return name, parts[0], parts[1:]


def training_cost(logs):
    """Updates and wall-clock seconds of the training runs whose JSON logs are ``logs``
    (None, None without logs)."""
    if not logs:
        return None, None
    updates = seconds = 0.0
    for log in logs:
        last_train = None
        for line in Path(log).read_text(encoding="utf-8").splitlines():
            if "| train | " in line and line.rstrip().endswith("}"):
                last_train = json.loads(line.split("| train | ", 1)[1])
        if last_train is None:
            sys.exit(f"{log}: no '| train |' record; pass logs of fairseq-train --log-format json")
        updates += float(last_train["train_num_updates"])
        seconds += float(last_train["train_wall"])
    return int(updates), seconds


def checkpoint_cost(checkpoint):
    """Updates and training seconds as fairseq counted them into the checkpoint, over resumes."""
    # Importing fairseq sets up the root logger at DEBUG, which would print every library's debug
    # lines (matplotlib's among them) into this script's output; keep the logging as it was.
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    from fairseq_svae.checkpoint_io import load_checkpoint_state

    root.setLevel(level)
    root.handlers[:] = handlers

    state = load_checkpoint_state(checkpoint)
    return (int(state["optimizer_history"][-1]["num_updates"]),
            float(state["extra_state"]["previous_training_time"]))


def run(command, env=None):
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True,
                            env=dict(os.environ, **(env or {})))
    if result.returncode != 0:
        sys.exit(f"{' '.join(map(str, command))} failed:\n{result.stderr[-3000:]}")
    return result.stdout + result.stderr


def protocol(args) -> dict:
    """What makes two scorings of a checkpoint comparable."""
    scored = {"split": args.split, "iw_samples": args.iw_samples, "first_sentences": args.first_sentences}
    if args.report:
        scored["report"] = args.report
        scored["fit_prior"] = args.fit_prior
    return scored


def report_figures(args, checkpoint, json_path: Path) -> dict:
    """What svae-report measures of a model, as the frontier keeps it: prior-sample statistics
    and the probes (the whole report stays in its own JSON beside the setting's)."""
    report_path = json_path.with_suffix(".report.json")
    device = [] if args.gpu else ["--cpu"]
    fitted_prior = []
    if args.fit_prior:
        prior_path = json_path.with_suffix(".prior.pt")
        run([command_path("svae-fit-prior"), args.data_bin, "--user-dir", USER_DIR, "--path", checkpoint,
             *device, "--seed", "1", "--output", prior_path])
        fitted_prior = ["--fitted-prior", prior_path]
    run([command_path("svae-report"), args.data_bin, "--user-dir", USER_DIR, "--path", checkpoint,
         "--gen-subset", args.split, *device, "--seed", "1", "--no-progress-bar", "--json", report_path,
         *fitted_prior, *shlex.split(args.report)])
    report = json.loads(report_path.read_text())
    kept = {"prior_samples": {key: report["prior_samples"].get(key) for key in PRIOR_FIGURES},
            "report_reconstruction_bleu": report["reconstructions"]["bleu"]}
    if "fitted_prior_samples" in report:
        kept["fitted_prior_samples"] = {key: report["fitted_prior_samples"].get(key) for key in PRIOR_FIGURES}
    if "homotopies" in report:
        kept["homotopies"] = report["homotopies"]
    if "probes" in report:
        kept["probes"] = report["probes"]
    return kept


PRIOR_FIGURES = ("hit_length_cap", "repeated_3gram", "distinct_2", "critic_ppl", "mean_length")


def earlier_scores(args, checkpoint, json_path: Path):
    """The figures of an earlier run of this script on the same checkpoint and protocol, if current."""
    if args.rescore or not json_path.exists():
        return None
    figures = json.loads(json_path.read_text())
    same = figures.get("frontier_protocol") == protocol(args) and figures.get("checkpoint") == str(checkpoint)
    if same and json_path.stat().st_mtime >= Path(checkpoint).stat().st_mtime:
        return figures
    return None


def score(args, name, checkpoint, out: Path) -> dict:
    if checkpoint.endswith(".json"):  # scored elsewhere
        return json.loads(Path(checkpoint).read_text())
    json_path = out / (re.sub(r"[^\w.+-]+", "_", name) + ".json")
    figures = earlier_scores(args, checkpoint, json_path)
    if figures is not None:
        print(f"   {json_path}: scored before with this protocol, read back", flush=True)
        return figures
    device = [] if args.gpu else ["--cpu"]
    command = [command_path("svae-eval"), args.data_bin, "--user-dir", USER_DIR, "--path", checkpoint,
               "--gen-subset", args.split, "--iw-samples", args.iw_samples, *device, "--seed", "1",
               "--json", json_path, "--no-progress-bar"]
    if args.first_sentences:
        command += ["--first-sentences", args.first_sentences]
    run(command)
    figures = json.loads(json_path.read_text())
    if figures["model"] == "sentence_vae":
        generated = run([command_path("fairseq-generate"), args.data_bin, "--user-dir", USER_DIR, "--task", "sentence_vae",
                         "--path", checkpoint, "--gen-subset", args.split, "--beam", "1", "--batch-size", "200",
                         "--scoring", "sacrebleu", *device, "--quiet"])
        match = BLEU_LINE.search(generated)
        figures["greedy_reconstruction_bleu"] = float(match.group(1)) if match else None
        if args.report:
            figures.update(report_figures(args, checkpoint, json_path))
    figures["frontier_protocol"] = protocol(args)
    json_path.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def probe_cells(f) -> list:
    """The report's columns of a row: prior samples and probes ("–" where not measured)."""
    prior, probes = f.get("prior_samples") or {}, f.get("probes") or {}
    fitted = f.get("fitted_prior_samples") or {}
    labels, paraphrase = probes.get("labels") or {}, probes.get("paraphrase") or {}

    def share(value):
        return "–" if value is None else f"{100 * value:.0f}%"

    def number(value, digits=2):
        return "–" if value is None else f"{value:.{digits}f}"

    return [share(prior.get("hit_length_cap")), number(prior.get("distinct_2")), number(prior.get("critic_ppl"), 0),
            number(fitted.get("critic_ppl"), 0), share(labels.get("accuracy_z")), share(labels.get("accuracy_bag_of_words")),
            share(paraphrase.get("recall_at_1_z")), share(paraphrase.get("recall_at_1_tfidf"))]


REPORT_COLUMNS = ["prior: cap", "prior: distinct-2", "prior: critic PPL", "fitted prior: critic PPL", "label acc. z", "label acc. words",
                  "recall@1 z", "recall@1 TF-IDF"]


def table(rows, lm_nll) -> str:
    with_report = any("prior_samples" in row["figures"] for row in rows)
    columns = ["setting", "IW-NLL", "PPL", "-ELBO", "KL", "MI", "AU", "recon BLEU", "updates",
               "wall", "NLL - LM"] + (REPORT_COLUMNS if with_report else [])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        f = row["figures"]
        vae = f["model"] == "sentence_vae"

        def cell(key, digits=2):
            return f"{f[key]:.{digits}f}" if vae and f.get(key) is not None else "–"

        cells = [row["name"], f"{f['nll']:.2f}", f"{f['ppl']:.1f}", cell("neg_elbo"), cell("kl"), cell("mi"),
                 f"{f['active_units']}/{f['latent_dim']}" if vae else "–", cell("greedy_reconstruction_bleu", 1),
                 "–" if row["updates"] is None else str(row["updates"]),
                 "–" if row["seconds"] is None else f"{row['seconds'] / 60:.0f} min",
                 "–" if lm_nll is None else f"{f['nll'] - lm_nll:+.2f}"]
        if with_report:
            cells += probe_cells(f)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows, lm_nll, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    markers = "osD^vP*X"
    for index, row in enumerate(r for r in rows if r["figures"]["model"] == "sentence_vae"):
        f = row["figures"]
        # Names go in a legend under the plot: long setting names written beside the points run
        # off the figure and over each other.
        axes.scatter(f["mi"], f["nll"], marker=markers[index % len(markers)], s=40, label=row["name"])
    if lm_nll is not None:
        axes.axhline(lm_nll, linestyle="--", color="gray", label="lstm_lm (exact NLL)")
    axes.margins(x=0.15, y=0.15)
    axes.set_xlabel("mutual information I(x; z), nats")
    axes.set_ylabel("NLL per sentence, nats (VAE: IW bound)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), fontsize=8, frameon=False)
    figure.savefig(path, dpi=120, bbox_inches="tight")


def prior_panel(vaes, series):
    """Prior samples' critic perplexity under both priors, or their distinct-2 without a critic."""
    key, label = "critic_ppl", "prior samples: critic perplexity"
    if all((f.get("prior_samples") or {}).get(key) is None for f in vaes):
        key, label = "distinct_2", "prior samples: distinct-2"
    return (label, [("N(0, I)", series(lambda f: (f.get("prior_samples") or {}).get(key))),
                    ("fitted prior", series(lambda f: (f.get("fitted_prior_samples") or {}).get(key)))], [])


def plot_rate(rows, lm_nll, path: Path, title: str) -> None:
    """What a rate buys: each figure against the KL (nats a sentence), one point per VAE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vaes = sorted((r["figures"] for r in rows if r["figures"]["model"] == "sentence_vae"), key=lambda f: f["kl"])
    kl = [f["kl"] for f in vaes]

    def series(get):
        return [get(f) for f in vaes]

    def probe(f, group, key):
        value = ((f.get("probes") or {}).get(group) or {}).get(key)
        return None if value is None else 100 * value

    panels = [
        ("NLL per sentence, nats (IW bound)", [("VAE", series(lambda f: f["nll"]))],
         [("lstm_lm", lm_nll)] if lm_nll is not None else []),
        ("greedy reconstruction BLEU", [("from the posterior mean", series(lambda f: f.get("greedy_reconstruction_bleu")))], []),
        ("probe, %", [("label accuracy, z", series(lambda f: probe(f, "labels", "accuracy_z"))),
                      ("label accuracy, words", series(lambda f: probe(f, "labels", "accuracy_bag_of_words"))),
                      ("paraphrase recall@1, z", series(lambda f: probe(f, "paraphrase", "recall_at_1_z"))),
                      ("paraphrase recall@1, TF-IDF", series(lambda f: probe(f, "paraphrase", "recall_at_1_tfidf")))], []),
        prior_panel(vaes, series),
    ]
    figure, grid = plt.subplots(2, 2, figsize=(10, 7))
    for axes, (ylabel, lines, references) in zip(grid.flat, panels):
        for label, values in lines:
            points = [(x, y) for x, y in zip(kl, values) if y is not None]
            if points:
                axes.plot(*zip(*points), marker="o", label=label)
        for label, value in references:
            axes.axhline(value, linestyle="--", color="gray", label=label)
        axes.set_xlabel("KL(q(z|x) || p(z)), nats a sentence")
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-bin", required=True)
    parser.add_argument("--split", default="valid")
    parser.add_argument("--iw-samples", type=int, default=500)
    parser.add_argument("--first-sentences", type=int, default=None)
    parser.add_argument("--setting", action="append", required=True, metavar="NAME=CHECKPOINT[:LOG...]")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--title", default="Brown: NLL against MI", help="the plot's title")
    parser.add_argument("--report", default=None, metavar="OPTIONS",
                        help="also run svae-report on each VAE with these options (one quoted string, e.g. "
                             "\"--labels test.genre --critic-path lm/checkpoint_best.pt\")")
    parser.add_argument("--fit-prior", action="store_true",
                        help="with --report: fit a prior to each VAE's codes (svae-fit-prior) and report its "
                             "samples beside N(0, I)'s")
    parser.add_argument("--gpu", action="store_true", help="score on the GPU (default: the CPU)")
    parser.add_argument("--rescore", action="store_true",
                        help="score every setting anew, even where --out-dir holds current figures")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    rows = []
    for text in args.setting:
        name, checkpoint, logs = parse_setting(text)
        if logs or checkpoint.endswith(".json"):
            updates, seconds = training_cost(logs)
        else:  # fairseq's own count in the checkpoint, which survives resuming
            updates, seconds = checkpoint_cost(checkpoint)
        cost = "cost unknown" if updates is None else f"{updates} updates, {seconds / 60:.0f} min of training"
        print(f"-- {name}: {cost}; scoring ...", flush=True)
        rows.append({"name": name, "checkpoint": checkpoint, "logs": logs, "updates": updates,
                     "seconds": seconds, "figures": score(args, name, checkpoint, args.out_dir)})
    lm_nll = next((r["figures"]["nll"] for r in rows if r["figures"]["model"] != "sentence_vae"), None)
    summary = {"split": args.split, "iw_samples": args.iw_samples, "first_sentences": args.first_sentences,
               "data": args.data_bin, "settings": rows}
    (args.out_dir / "frontier.json").write_text(json.dumps(summary, indent=2) + "\n")
    markdown = table(rows, lm_nll)
    (args.out_dir / "frontier.md").write_text(markdown + "\n")
    plot(rows, lm_nll, args.out_dir / "frontier.png", args.title)
    if args.report:
        plot_rate(rows, lm_nll, args.out_dir / "frontier-rate.png", args.title)
    print(markdown)


if __name__ == "__main__":
    main()
