"""Train one sentencepiece model on the training side of a parallel corpus and write every split
of every language as space-separated pieces, ready for ``fairseq-preprocess --source-lang S
--target-lang T``.

    python sentencepiece_pairs.py TEXT_DIR OUT_DIR --languages en de --vocab-size 8000

reads TEXT_DIR/{train,valid,test}.{en,de} and writes OUT_DIR/spm.model and
OUT_DIR/{train,valid,test}.{en,de}. One model for both sides keeps shared words (names,
numbers) in shared pieces. Its normalization is the identity, so ``fairseq-generate
--post-process sentencepiece`` gives back exactly the text as the corpus ships it (lowercased and
tokenized here), which is what the references are: BLEU then compares like with like.
"""

import argparse
import os
from pathlib import Path

import sentencepiece as spm

SPLITS = ("train", "valid", "test")
# Lines sampled to train the model: enough for an 8k vocabulary, and it bounds the time when a
# side repeats its sentences (the paraphrase pairs list each caption four times).
TRAINING_SENTENCES = 300_000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("text_dir", type=Path, help="directory with {train,valid,test}.LANG")
    parser.add_argument("out_dir", type=Path, help="where spm.model and the encoded splits go")
    parser.add_argument("--languages", nargs="+", required=True, metavar="LANG", help="file suffixes, e.g. en de")
    parser.add_argument("--vocab-size", type=int, default=8000)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    prefix = args.out_dir / "spm"
    if not prefix.with_suffix(".model").exists():
        spm.SentencePieceTrainer.train(
            input=",".join(str(args.text_dir / f"train.{language}") for language in args.languages),
            model_prefix=str(prefix),
            vocab_size=args.vocab_size,
            model_type="unigram",
            character_coverage=1.0,  # keep every character (umlauts, ß) rather than map rare ones to <unk>
            normalization_rule_name="identity",  # decoding gives back the corpus's own text
            input_sentence_size=TRAINING_SENTENCES,
            shuffle_input_sentence=True,
            hard_vocab_limit=False,  # a small corpus may not support the full size; take what it has
            num_threads=int(os.environ.get("OMP_NUM_THREADS", "1")),
            minloglevel=2,
        )
    processor = spm.SentencePieceProcessor(model_file=str(prefix.with_suffix(".model")))
    for split in SPLITS:
        for language in args.languages:
            lines = (args.text_dir / f"{split}.{language}").read_text(encoding="utf-8").splitlines()
            pieces = [" ".join(processor.encode(line, out_type=str)) for line in lines]
            (args.out_dir / f"{split}.{language}").write_text("\n".join(pieces) + "\n", encoding="utf-8")
    print(prefix.with_suffix(".model"))


if __name__ == "__main__":
    main()
