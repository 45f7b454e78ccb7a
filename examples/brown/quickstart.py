#!/usr/bin/env python3
"""What a Sentence VAE shows, in seconds: the small pretrained Brown model of examples/brown/pretrained
samples sentences from the prior, reconstructs test sentences of the embedded corpus, walks a
homotopy between two of them and completes sentences whose last words are missing.

    python examples/brown/quickstart.py [--checkpoint FILE --data DIR] [--seed N]

Every line comes from the plugin's Python API (``SentenceVAEModel.from_pretrained``) with its
default decoding for each use (see fairseq_svae/generation/decoding_defaults.py); the model was
made by examples/brown/pretrained/make.sh, which the README's training section explains.
"""

import argparse
import lzma
import time
from pathlib import Path

import torch

from fairseq_svae import SentenceVAEModel

HERE = Path(__file__).resolve().parent
# Test sentences of the embedded corpus (lines of corpus/test.txt.xz) that the model reads
# mostly without <unk>: short, everyday words.
RECONSTRUCT = (260, 383, 411, 527)
HOMOTOPY = (260, 456)
IMPUTE = (366, 402, 456)


def test_sentences():
    return lzma.decompress((HERE / "corpus" / "test.txt.xz").read_bytes()).decode("utf-8").splitlines()


def show(title, lines):
    print(f"\n== {title} ==")
    for line in lines:
        print(f"  {line}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=HERE / "pretrained" / "model.pt",
                        help="a Sentence VAE checkpoint (default: the pretrained Brown model)")
    parser.add_argument("--data", type=Path, default=None,
                        help="its fairseq-preprocess directory (default: the checkpoint's own "
                             "directory, where the pretrained model keeps its dict.txt)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), 2))

    start = time.perf_counter()
    svae = SentenceVAEModel.from_pretrained(str(args.checkpoint.parent), checkpoint_file=args.checkpoint.name,
                                            data_name_or_path=str(args.data or args.checkpoint.parent))
    print(f"loaded {args.checkpoint} in {time.perf_counter() - start:.1f} s "
          f"({svae.latent_dim}-d latent code, {len(svae.dictionary)} words)")
    sentences = test_sentences()

    show(f"sentences sampled from the prior (z ~ N(0, I), seed {args.seed})", svae.sample(8, seed=args.seed))
    chosen = [sentences[i] for i in RECONSTRUCT]
    reconstructed = svae.reconstruct(chosen)
    show("test sentences and their reconstructions from the posterior mean",
         [f"{s}\n    -> {r}" for s, r in zip(chosen, reconstructed)])
    first, second = (sentences[i] for i in HOMOTOPY)
    show("a homotopy: 7 points on the line between two sentences' codes",
         svae.interpolate(first, second, steps=7))
    beginnings = [" ".join(sentences[i].split()[: max(1, int(0.7 * len(sentences[i].split())))]) for i in IMPUTE]
    completed = svae.impute(beginnings, seed=args.seed)
    show("missing words imputed through z (the beginning is given)",
         [f"{b} ...\n    -> {c}" for b, c in zip(beginnings, completed)])
    print(f"\n({time.perf_counter() - start:.1f} s in all; "
          f"python examples/brown/quickstart.py --seed 2 for other samples)")


if __name__ == "__main__":
    main()
