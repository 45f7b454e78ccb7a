#!/usr/bin/env bash
# Multi30k English->German (../shared/data/multi30k: 29,000 training pairs, test_2016_flickr)
# as fairseq translation data: one sentencepiece model for both languages (VOCAB_SIZE pieces,
# identity normalization), every split encoded, then fairseq-preprocess --source-lang en
# --target-lang de into WORK_DIR/data-bin (a dictionary per language). Does nothing already done.
#
#   bash examples/multi30k/prepare.sh [WORK_DIR]        # default runs/multi30k
#
# TEXT_DIR may name another corpus with {train,valid,test}.{en,de}; TRAIN_PAIRS=N keeps the
# first N training pairs and TEST_PAIRS=M the first M validation and test pairs (a quick try).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=${1:-${WORK_DIR:-runs/multi30k}}
text=${TEXT_DIR:-$here/../../../shared/data/multi30k}
vocab_size=${VOCAB_SIZE:-8000}

for split in train valid test; do
  for language in en de; do
    if [ ! -s "$text/$split.$language" ]; then
      echo "prepare.sh: error: MissingDataError: $text/$split.$language is missing or empty; TEXT_DIR" \
           "needs {train,valid,test}.{en,de}, one sentence per line, aligned" >&2
      exit 1
    fi
  done
done
mkdir -p "$work"
if [ -n "${TRAIN_PAIRS:-}${TEST_PAIRS:-}" ]; then  # a slice: the text the rest of the recipe reads
  mkdir -p "$work/text"
  for language in en de; do
    head -n "${TRAIN_PAIRS:-1000000000}" "$text/train.$language" > "$work/text/train.$language"
    for split in valid test; do
      head -n "${TEST_PAIRS:-1000000000}" "$text/$split.$language" > "$work/text/$split.$language"
    done
  done
  text="$work/text"
fi
if [ ! -f "$work/data-bin/dict.de.txt" ]; then
  python "$here/sentencepiece_pairs.py" "$text" "$work/spm" --languages en de --vocab-size "$vocab_size" > /dev/null
  fairseq-preprocess --source-lang en --target-lang de \
    --trainpref "$work/spm/train" --validpref "$work/spm/valid" --testpref "$work/spm/test" \
    --destdir "$work/data-bin" --workers 2 > "$work/preprocess.log" 2>&1
fi
# The references BLEU is computed against: the test targets as the corpus ships them.
cp "$text/test.de" "$work/test.reference.de"
