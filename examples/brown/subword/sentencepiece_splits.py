"""Train a sentencepiece model on train.txt and write every split as space-separated pieces.

    python sentencepiece_splits.py TEXT_DIR OUT_DIR --vocab-size 8000

writes OUT_DIR/spm.model (and .vocab) and OUT_DIR/{train,valid,test}.txt, ready for
``fairseq-preprocess --only-source``. The pieces are what fairseq's ``--bpe sentencepiece``
produces from raw text (``SentencePieceProcessor.encode(line, out_type=str)`` joined by
spaces), so a checkpoint trained on them reads raw text through the hub exactly as the data was
read here.
"""

import argparse
from pathlib import Path

import sentencepiece as spm

SPLITS = ("train", "valid", "test")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("text_dir", type=Path, help="directory with train.txt, valid.txt, test.txt")
    parser.add_argument("out_dir", type=Path, help="where spm.model and the encoded splits go")
    parser.add_argument("--vocab-size", type=int, default=8000)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    prefix = args.out_dir / "spm"
    if not prefix.with_suffix(".model").exists():
        spm.SentencePieceTrainer.train(
            input=str(args.text_dir / "train.txt"),
            model_prefix=str(prefix),
            vocab_size=args.vocab_size,
            model_type="unigram",
            character_coverage=1.0,  # English: keep every character rather than map rare ones to <unk>
            hard_vocab_limit=False,  # a small corpus may not support the full size; take what it has
            minloglevel=2,
        )
    processor = spm.SentencePieceProcessor(model_file=str(prefix.with_suffix(".model")))
    for split in SPLITS:
        lines = (args.text_dir / f"{split}.txt").read_text(encoding="utf-8").splitlines()
        pieces = [" ".join(processor.encode(line, out_type=str)) for line in lines]
        (args.out_dir / f"{split}.txt").write_text("\n".join(pieces) + "\n", encoding="utf-8")
    print(prefix.with_suffix(".model"))


if __name__ == "__main__":
    main()
