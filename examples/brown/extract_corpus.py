"""Write the embedded Brown corpus (examples/brown/corpus/*.txt.xz) as plain text into a directory."""

import argparse
import lzma
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
SPLITS = ("train", "valid", "test")


def extract(destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        target = destination / f"{split}.txt"
        if not target.exists():
            temporary = target.with_suffix(".txt.partial")
            temporary.write_bytes(lzma.decompress((CORPUS / f"{split}.txt.xz").read_bytes()))
            temporary.replace(target)
    return destination


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("destination", type=Path, help="directory for train.txt, valid.txt, test.txt")
    print(extract(parser.parse_args().destination))


if __name__ == "__main__":
    main()
