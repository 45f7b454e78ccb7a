#!/usr/bin/env python3
"""Two of the captions targets for training checkpoints, in seconds each: paraphrase recall@1 of
the posterior means (all 5,000 test captions) and greedy reconstruction sacreBLEU of the first
caption of each test image, decoded with the hub's defaults for the checkpoint.

    python examples/captions/score_checkpoints.py runs/captions-recipe/vae-kl80/checkpoint_last.pt ...

Meant for choosing options and following a run (the development runs of README.md were compared
with it); showcase.sh's svae-report measures the shipped model in full. A checkpoint is copied
before it is read, so a training that rewrites it meanwhile does no harm.
"""

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from fairseq_svae import SentenceVAEModel
from fairseq_svae.latent_probes import nearest_neighbour_recall
from fairseq_svae.text_statistics import bleu

GROUP = 5  # captions of one image on consecutive lines
BATCH = 100


def score(checkpoint: Path, data_bin: Path, captions):
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(checkpoint, Path(folder) / "checkpoint.pt")
        hub = SentenceVAEModel.from_pretrained(folder, checkpoint_file="checkpoint.pt",
                                               data_name_or_path=str(data_bin)).eval()
    with torch.no_grad():
        means, _ = hub.encode(captions)
        recall = nearest_neighbour_recall(means.float().numpy().astype(np.float64), GROUP)
        firsts = captions[::GROUP]
        outputs = [text for start in range(0, len(firsts), BATCH) for text in hub.reconstruct(firsts[start:start + BATCH])]
    exact = float(np.mean([output == first for output, first in zip(outputs, firsts)]))
    return recall, bleu(outputs, [firsts]), exact


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--data-bin", type=Path, default=Path("runs/captions-recipe/data-bin"),
                        help="the recipe's binarized data (its dict.txt)")
    parser.add_argument("--test", type=Path, default=Path("runs/captions-recipe/text/test.txt"),
                        help="the test captions as text, five an image")
    args = parser.parse_args()
    captions = args.test.read_text(encoding="utf-8").splitlines()
    captions = [line.strip() for line in captions[: len(captions) // GROUP * GROUP]]
    print("checkpoint\trecall@1 z\tfirst-caption BLEU\texact")
    for checkpoint in args.checkpoints:
        recall, bleu, exact = score(checkpoint, args.data_bin, captions)
        print(f"{checkpoint}\t{100 * recall:.1f}%\t{bleu:.2f}\t{100 * exact:.1f}%", flush=True)


if __name__ == "__main__":
    main()
