#!/usr/bin/env python3
"""The tables of examples/captions/README.md from what showcase.sh wrote (markdown on stdout).

    python examples/captions/summarize.py examples/captions/results

reads ``vae-test.json`` and ``lm-test.json`` (svae-eval), ``report.json`` and
``report-red-blue.json`` (svae-report) and prints the likelihood table, the figures of what a user
sees, the probes and the attribute shifts, each figure as the files hold it.
"""

import argparse
import json
from pathlib import Path


def load(directory: Path, name: str) -> dict:
    return json.loads((directory / name).read_text())


def likelihood(vae: dict, lm: dict) -> str:
    lines = ["| model | NLL | PPL | negative ELBO | rec. NLL | KL | MI | active units |", "|---|---|---|---|---|---|---|---|",
             f"| `lstm_lm` (exact) | {lm['nll']:.2f} | {lm['ppl']:.1f} | | | | | |",
             f"| `sentence_vae` (importance-weighted, K = {vae['iw_samples']}) | {vae['nll']:.2f} | "
             f"{vae['ppl']:.1f} | {vae['neg_elbo']:.2f} | {vae['rec_nll']:.2f} | {vae['kl']:.2f} | {vae['mi']:.2f} | "
             f"{vae['active_units']}/{vae['latent_dim']} |"]
    return "\n".join(lines)


def sets(report: dict) -> str:
    rows = (("reference", "test captions (reference)"), ("prior_samples", "samples, N(0, I)"),
            ("fitted_prior_samples", "samples, fitted prior"), ("reconstructions", "reconstructions"))
    lines = ["| | captions | length | hit the cap | repeated 3-gram | distinct-2 | self-BLEU | critic PPL |",
             "|---|---|---|---|---|---|---|---|"]
    for key, label in rows:
        if key not in report:
            continue
        f = report[key]
        cap = "–" if key == "reference" else f"{100 * f['hit_length_cap']:.1f}%"
        lines.append(f"| {label} | {f['sentences']} | {f['mean_length']:.1f} | {cap} | {100 * f['repeated_3gram']:.1f}% | "
                     f"{f['distinct_2']:.3f} | {f['self_bleu']:.1f} | {f['critic_ppl']:.1f} |")
    return "\n".join(lines)


def attribute(report: dict, key: str = "attribute_words") -> str:
    shift = report["probes"][key]
    lines = [f"{shift['sentences']} captions with \"{shift['source']}\" and without \"{shift['target']}\":", "",f"| alpha | says \"{shift['target']}\" and not \"{shift['source']}\" | BLEU to the original with the word swapped |",
             "|---|---|---|"]
    for row in shift["alphas"]:
        lines.append(f"| {row['alpha']:g} | {100 * row['judge']:.1f}% | {row['bleu']:.1f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    directory = parser.parse_args().directory
    vae, lm, report = load(directory, "vae-test.json"), load(directory, "lm-test.json"), load(directory, "report.json")
    print(f"Likelihood, first {vae['sentences']} test captions (nats per caption):\n\n{likelihood(vae, lm)}\n")
    stride = report["settings"].get("sentence_stride", 1)
    which = "the first caption of each test image" if stride > 1 else "the test split"
    print(f"What a user sees, {which}:\n\n{sets(report)}\n")
    recon, homotopies = report["reconstructions"], report["homotopies"]
    print(f"Reconstruction BLEU {recon['bleu']:.1f}, exact {100 * recon['exact_match']:.1f}%; homotopies: "
          f"{homotopies['distinct_sentences_per_path']:.2f} distinct captions of {homotopies['steps']} per path, "
          f"neighbouring steps' word Jaccard {homotopies.get('neighbour_word_jaccard', float('nan')):.2f}, "
          f"{homotopies['neighbour_word_edit_distance']:.2f} words changed between neighbours, "
          f"{100 * homotopies.get('steps_with_repeated_3gram', float('nan')):.1f}% of steps with a repeated 3-gram, "
          f"{100 * homotopies.get('steps_at_length_cap', float('nan')):.1f}% at the length cap\n")
    paraphrase = report["probes"]["paraphrase"]
    print(f"Paraphrase recall@1 ({paraphrase['sentences']} test captions): z {100 * paraphrase['recall_at_1_z']:.1f}%, "
          f"TF-IDF {100 * paraphrase['recall_at_1_tfidf']:.1f}%, chance {100 * paraphrase['chance']:.2f}%\n")
    print(f"man -> woman:\n\n{attribute(report)}\n")
    red_blue = directory / "report-red-blue.json"
    if red_blue.exists():
        print(f"red -> blue:\n\n{attribute(json.loads(red_blue.read_text()))}\n")


if __name__ == "__main__":
    main()
