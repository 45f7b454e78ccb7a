#!/usr/bin/env bash
# The embedded Brown corpus as fairseq data: unpack corpus/ into WORK_DIR/text and binarize it
# with fairseq-preprocess into WORK_DIR/data-bin (dictionary: types seen at least 3 times, the
# brown-bench protocol). Does nothing that is already done. Used by train.sh, recipe.sh and
# pretrained/make.sh. Given a TEXT_DIR with train.txt, valid.txt and test.txt (one sentence per
# line, tokens separated by spaces), it binarizes that corpus the same way instead.
#
#   bash examples/brown/prepare_data.sh WORK_DIR [TEXT_DIR]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=${1:?usage: prepare_data.sh WORK_DIR [TEXT_DIR]}
text=${2:-}

if [ -z "$text" ]; then
  text="$work/text"
  python "$here/extract_corpus.py" "$text" > /dev/null
fi
for split in train valid test; do
  if [ ! -s "$text/$split.txt" ]; then
    # The plugin's one way of reporting a user error (fairseq_svae/errors.py): line and exit status.
    echo "prepare_data.sh: error: MissingDataError: $text/$split.txt is missing or empty; a corpus" \
         "directory needs train.txt, valid.txt and test.txt, one sentence per line" >&2
    exit 1
  fi
done
if [ ! -f "$work/data-bin/dict.txt" ]; then
  fairseq-preprocess --only-source \
    --trainpref "$text/train.txt" --validpref "$text/valid.txt" --testpref "$text/test.txt" \
    --thresholdsrc 3 --destdir "$work/data-bin" --workers 2
fi
