#!/usr/bin/env python3
"""What a Sentence VAE shows, in seconds: the pretrained captions model of examples/captions/pretrained
samples captions from its fitted prior (and, for comparison, from N(0, I)), reconstructs test
captions, walks a homotopy between captions of two different images and moves captions along
attribute vectors ("man" -> "woman", "red" -> "blue").

    python examples/captions/quickstart.py [--model-dir DIR] [--seed N]

Every line comes from the plugin's Python API (``SentenceVAEModel.from_pretrained``) with its
default decoding for each use (fairseq_svae/generation/decoding_defaults.py); the model was made
by examples/captions/recipe.sh (examples/captions/README.md says how and what it scores).
"""

import argparse
import logging
import lzma
import time
from pathlib import Path

import torch

from fairseq_svae import SentenceVAEModel

HERE = Path(__file__).resolve().parent
# Reconstructed: the first captions (line 5n of corpus/test.txt.xz is image n's first) of the
# first test images whose first caption has at most this many words; the homotopy runs between
# the first and the last of them.
RECONSTRUCTIONS = 4
SHORT_CAPTION_WORDS = 12
# Attribute vectors: the mean code of training captions with the target word and without the
# source word, minus the reverse (at most this many of each), added alpha times: for each pair
# the alpha where svae-report's judge finds the target word most often (results/report*.txt).
ATTRIBUTES = (("woman", "man", 1.0), ("blue", "red", 1.5))
ATTRIBUTE_CAPTIONS = 2000
SHIFTED = 3


def captions(split):
    return lzma.decompress((HERE / "corpus" / f"{split}.txt.xz").read_bytes()).decode("utf-8").splitlines()


def with_word(lines, word, without, limit):
    return [line for line in lines if word in line.split() and without not in line.split()][:limit]


def short_first_captions(test, count):
    firsts = [test[line] for line in range(0, len(test), 5)]
    return [caption for caption in firsts if len(caption.split()) <= SHORT_CAPTION_WORDS][:count]


def show(title, lines):
    print(f"\n== {title} ==")
    for line in lines:
        print(f"  {line}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=HERE / "pretrained",
                        help="a directory with model.pt, dict.txt and model.prior.pt (default: the pretrained model)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), 2))

    start = time.perf_counter()
    svae = SentenceVAEModel.from_pretrained(str(args.model_dir), checkpoint_file="model.pt",
                                            fitted_prior="model.prior.pt")
    print(f"loaded {args.model_dir / 'model.pt'} in {time.perf_counter() - start:.1f} s "
          f"({svae.latent_dim}-d latent code, {len(svae.dictionary)} words, a prior of "
          f"{svae.fitted_prior.components} Gaussians fitted to its codes)")
    test = captions("test")

    show(f"captions sampled from the fitted prior (seed {args.seed})", svae.sample(6, seed=args.seed))
    show(f"captions sampled from N(0, I), the prior it was trained against (seed {args.seed})",
         svae.sample(3, seed=args.seed, prior="standard"))
    chosen = short_first_captions(test, RECONSTRUCTIONS)
    show("test captions and their reconstructions from the posterior mean",
         [f"{s}\n    -> {r}" for s, r in zip(chosen, svae.reconstruct(chosen))])
    show("a homotopy: 7 points on the line between the codes of captions of two images",
         svae.interpolate(chosen[0], chosen[-1], steps=7))

    train = captions("train")
    # The rare words of thousands of training captions read as <unk>: no news for this demo.
    logging.getLogger("fairseq_svae.hub_interface").setLevel(logging.ERROR)
    for target, source, alpha in ATTRIBUTES:
        vector = svae.attribute_vector(with_word(train, target, source, ATTRIBUTE_CAPTIONS),
                                       with_word(train, source, target, ATTRIBUTE_CAPTIONS))
        short = [caption for caption in test if len(caption.split()) <= SHORT_CAPTION_WORDS]
        originals = with_word(short, source, target, SHIFTED)
        show(f'"{source}" -> "{target}": test captions moved along the attribute vector (alpha {alpha:g})',
             [f"{s}\n    -> {r}" for s, r in zip(originals, svae.shift(originals, vector, alpha=alpha))])
    print(f"\n({time.perf_counter() - start:.1f} s in all; "
          f"python examples/captions/quickstart.py --seed 2 for other samples)")


if __name__ == "__main__":
    main()
