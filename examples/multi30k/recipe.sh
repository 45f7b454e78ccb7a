#!/usr/bin/env bash
# The Multi30k recipe of examples/multi30k/README.md: English->German, fairseq's lstm (beam 5,
# 5-best, sampling) and translation_moe (hMoEup, 5 experts, on the same lstm) against the
# conditional Sentence VAE (--arch sentence_cvae), all of one size, on the same batches and
# budget; then svae-translation-eval on test_2016_flickr.
#
#   bash examples/multi30k/recipe.sh
#   MAX_UPDATE=20 TRAIN_PAIRS=2000 TEST_PAIRS=50 WORK_DIR=runs/multi30k-try bash examples/multi30k/recipe.sh   # a quick try
#
# WORK_DIR (default runs/multi30k) receives the data, checkpoints, logs and results. The models'
# options are model_options.sh's (CVAE_OPTIONS, SIZE_OPTIONS, MAX_UPDATE override them); the
# data prepare.sh's (TEXT_DIR, VOCAB_SIZE, TRAIN_PAIRS, TEST_PAIRS); JOBS, DEVICE, MODELS, STOP_TIME_HOURS
# and EVALUATE_ONLY are train_and_evaluate.sh's.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=${WORK_DIR:-runs/multi30k}
bash "$here/prepare.sh" "$work"
bash "$here/train_and_evaluate.sh" "$work" "Multi30k English->German, test_2016_flickr" "$work/test.reference.de"
