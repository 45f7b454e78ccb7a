"""Write an embedded corpus (by default examples/brown/corpus/*.txt.xz; ``--corpus`` names another,
such as examples/captions/corpus) as plain text into a directory."""

import argparse
import lzma
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
SPLITS = ("train", "valid", "test")


def extract(destination: Path, corpus: Path = CORPUS) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        target = destination / f"{split}.txt"
        if not target.exists():
            temporary = target.with_suffix(".txt.partial")
            temporary.write_bytes(lzma.decompress((corpus / f"{split}.txt.xz").read_bytes()))
            temporary.replace(target)
    return destination


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("destination", type=Path, help="directory for train.txt, valid.txt, test.txt")
    parser.add_argument("--corpus", type=Path, default=CORPUS,
                        help="directory of the compressed splits (default: the Brown corpus)")
    args = parser.parse_args()
    print(extract(args.destination, args.corpus))


if __name__ == "__main__":
    main()
