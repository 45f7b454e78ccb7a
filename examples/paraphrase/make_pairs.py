"""Paraphrase pairs from image captions: five captions of one image on five consecutive lines
(../shared/data/captions, Multi30k task 2) become translation data from English to English.

    python make_pairs.py CAPTIONS_DIR OUT_DIR [--train-images N] [--test-images M]

writes OUT_DIR/{train,valid,test}.{src,tgt}, aligned, for ``fairseq-preprocess --source-lang
src --target-lang tgt``, and OUT_DIR/test.ref{1,2,3,4}:

- train: every caption paired with each other caption of its image (20 pairs an image);
- valid and test: the image's first caption as the source, each of the other four as a target
  (valid: 4 pairs an image, for the validation loss); test.src holds one line per image, with the
  second caption as test.tgt (what ``--score-reference`` scores) and the other four captions as
  the four references, test.ref1 to test.ref4, of multi-reference BLEU.
"""

import argparse
from pathlib import Path

from fairseq_svae.errors import MissingDataError, exit_on_user_error

CAPTIONS_PER_IMAGE = 5


def images(path: Path):
    if not path.is_file():
        raise MissingDataError(f"{path} not found: the captions directory needs train.txt, valid.txt "
                               f"and test.txt, {CAPTIONS_PER_IMAGE} captions of each image on consecutive lines")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or len(lines) % CAPTIONS_PER_IMAGE:
        raise MissingDataError(f"{path} has {len(lines)} lines, not {CAPTIONS_PER_IMAGE} captions for each "
                               f"image; give a file of {CAPTIONS_PER_IMAGE} consecutive lines an image")
    return [lines[i:i + CAPTIONS_PER_IMAGE] for i in range(0, len(lines), CAPTIONS_PER_IMAGE)]


def all_pairs(captions):
    return [(source, target) for i, source in enumerate(captions) for j, target in enumerate(captions) if i != j]


def first_to_others(captions):
    return [(captions[0], target) for target in captions[1:]]


def write(out_dir: Path, split: str, pairs) -> None:
    for side, suffix in enumerate(("src", "tgt")):
        (out_dir / f"{split}.{suffix}").write_text("".join(pair[side] + "\n" for pair in pairs), encoding="utf-8")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("captions_dir", type=Path, help="directory with train.txt, valid.txt, test.txt")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--train-images", type=int, default=None, metavar="N",
                        help="only the first N training images (a quick try)")
    parser.add_argument("--test-images", type=int, default=None, metavar="N",
                        help="only the first N validation and test images (a quick try)")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    train = images(args.captions_dir / "train.txt")[:args.train_images]
    write(args.out_dir, "train", [pair for captions in train for pair in all_pairs(captions)])
    write(args.out_dir, "valid", [pair for captions in images(args.captions_dir / "valid.txt")[:args.test_images]
                                  for pair in first_to_others(captions)])
    test = images(args.captions_dir / "test.txt")[:args.test_images]
    write(args.out_dir, "test", [(captions[0], captions[1]) for captions in test])
    for k in range(1, CAPTIONS_PER_IMAGE):
        (args.out_dir / f"test.ref{k}").write_text("".join(captions[k] + "\n" for captions in test), encoding="utf-8")


if __name__ == "__main__":
    exit_on_user_error(main, "make_pairs.py")
