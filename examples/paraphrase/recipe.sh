#!/usr/bin/env bash
# The paraphrase recipe of examples/paraphrase/README.md: image captions (../shared/data/captions)
# as English->English pairs, each caption to each other caption of its image; fairseq's lstm
# (beam 5, 5-best, sampling), translation_moe (hMoEup, 5 experts) and the conditional Sentence
# VAE, the models and budget of examples/multi30k/model_options.sh; then svae-translation-eval
# with the test images' first captions as sources and their other four captions as references.
#
#   bash examples/paraphrase/recipe.sh
#   MAX_UPDATE=20 TRAIN_IMAGES=500 TEST_IMAGES=50 WORK_DIR=runs/paraphrase-try bash examples/paraphrase/recipe.sh   # a quick try
#
# WORK_DIR (default runs/paraphrase) receives the pairs (built here, not kept in the repository),
# data, checkpoints, logs and results. CAPTIONS_DIR names another corpus of five captions per
# image on consecutive lines; TRAIN_IMAGES and TEST_IMAGES keep the first N training and the
# first M validation and test images; VOCAB_SIZE (8000)
# the sentencepiece model's size; MAX_UPDATE (default 1,500 here) and SAVE_INTERVAL_UPDATES
# (500) the budget and the validation interval; the rest as in examples/multi30k/recipe.sh
# (CVAE_OPTIONS, SIZE_OPTIONS, JOBS, DEVICE, MODELS, STOP_TIME_HOURS, EVALUATE_ONLY).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# 1,500 updates of about 210 pairs (half an epoch of the 580,000 pairs: an image's 20 pairs say
# much the same), validated and saved every 500 since no epoch ends within the budget.
export MAX_UPDATE=${MAX_UPDATE:-1500} SAVE_INTERVAL_UPDATES=${SAVE_INTERVAL_UPDATES:-500}
work=${WORK_DIR:-runs/paraphrase}
captions=${CAPTIONS_DIR:-$here/../../../shared/data/captions}
mkdir -p "$work"

if [ ! -f "$work/data-bin/dict.tgt.txt" ]; then
  python "$here/make_pairs.py" "$captions" "$work/text" ${TRAIN_IMAGES:+--train-images "$TRAIN_IMAGES"} \
    ${TEST_IMAGES:+--test-images "$TEST_IMAGES"}
  python "$here/../multi30k/sentencepiece_pairs.py" "$work/text" "$work/spm" --languages src tgt \
    --vocab-size "${VOCAB_SIZE:-8000}" > /dev/null
  # One language on both sides: one dictionary.
  fairseq-preprocess --source-lang src --target-lang tgt --joined-dictionary \
    --trainpref "$work/spm/train" --validpref "$work/spm/valid" --testpref "$work/spm/test" \
    --destdir "$work/data-bin" --workers 2 > "$work/preprocess.log" 2>&1
fi
bash "$here/../multi30k/train_and_evaluate.sh" "$work" "Captions paraphrases: first caption -> the other four" \
  "$work/text/test.ref1" "$work/text/test.ref2" "$work/text/test.ref3" "$work/text/test.ref4"
