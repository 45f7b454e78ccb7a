#!/usr/bin/env bash
# The embedded Brown corpus as fairseq data: unpack corpus/ into WORK_DIR/text and binarize it
# with fairseq-preprocess into WORK_DIR/data-bin (dictionary: types seen at least 3 times, the
# brown-bench protocol). Does nothing that is already done. Used by train.sh, recipe.sh and
# pretrained/make.sh.
#
#   bash examples/brown/prepare_data.sh WORK_DIR
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=${1:?usage: prepare_data.sh WORK_DIR}

python "$here/extract_corpus.py" "$work/text" > /dev/null
if [ ! -f "$work/data-bin/dict.txt" ]; then
  fairseq-preprocess --only-source \
    --trainpref "$work/text/train.txt" --validpref "$work/text/valid.txt" --testpref "$work/text/test.txt" \
    --thresholdsrc 3 --destdir "$work/data-bin" --workers 2
fi
