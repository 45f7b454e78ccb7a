#!/usr/bin/env bash
# The Sentence VAE on sentencepiece subwords instead of words: train a sentencepiece model on
# the Brown training text, encode the splits, binarize them, train, then reconstruct the test
# set and sample from the prior with plain-text output.
#
#   bash examples/brown/subword/run.sh                          # MAX_UPDATE=3000 updates at Bowman size
#   MAX_UPDATE=300 WORK_DIR=runs/subword-try bash examples/brown/subword/run.sh
#
# Settings (environment): WORK_DIR, TEXT_DIR (default: the embedded corpus, extracted),
# VOCAB_SIZE (8000), MAX_UPDATE (3000), MODEL_ARGS (default: --arch sentence_vae_bowman).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=${WORK_DIR:-runs/brown-subword}
vocab_size=${VOCAB_SIZE:-8000}
max_update=${MAX_UPDATE:-3000}
model_args=${MODEL_ARGS:---arch sentence_vae_bowman}
user_dir=$(svae-user-dir)

text=${TEXT_DIR:-}
if [ -z "$text" ]; then
  text="$work/text"
  python "$here/../extract_corpus.py" "$text" > /dev/null
fi

# 1. sentencepiece model on the training text; every split as pieces.
spm_model=$(python "$here/sentencepiece_splits.py" "$text" "$work/spm" --vocab-size "$vocab_size")

# 2. Binarize. Every piece the model knows is in the data, so no threshold is needed.
if [ ! -f "$work/data-bin/dict.txt" ]; then
  fairseq-preprocess --only-source \
    --trainpref "$work/spm/train.txt" --validpref "$work/spm/valid.txt" --testpref "$work/spm/test.txt" \
    --destdir "$work/data-bin" --workers 2
fi

# 3. Train. --bpe/--sentencepiece-model are stored in the checkpoint, so the Python API
#    (SentenceVAEModel.from_pretrained) applies the same sentencepiece model to raw text; the
#    copy next to the checkpoint is where fairseq's hub convention looks for it.
mkdir -p "$work/checkpoints"
cp "$spm_model" "$work/checkpoints/sentencepiece.bpe.model"
# shellcheck disable=SC2086  # MODEL_ARGS is a list of options
fairseq-train "$work/data-bin" --user-dir "$user_dir" --task sentence_vae $model_args \
  --bpe sentencepiece --sentencepiece-model "$spm_model" \
  --criterion annealed_elbo --kl-schedule linear --kl-anneal-updates $((max_update / 2)) --free-bits 0.3 \
  --optimizer adam --lr 1e-3 --max-tokens 4000 --max-update "$max_update" \
  --cpu --num-workers 0 --seed 1 \
  --save-dir "$work/checkpoints" --no-epoch-checkpoints \
  --log-format simple --log-interval 50

# 4. Reconstruct the test set (plain text thanks to --post-process sentencepiece; sacreBLEU on
#    words, not pieces) and sample from the prior.
fairseq-generate "$work/data-bin" --user-dir "$user_dir" --task sentence_vae \
  --path "$work/checkpoints/checkpoint_best.pt" --gen-subset test --beam 5 --batch-size 200 \
  --post-process sentencepiece --scoring sacrebleu --cpu --num-workers 0 > "$work/reconstruct-test.txt"
fairseq-generate "$work/data-bin" --user-dir "$user_dir" --task sentence_vae \
  --path "$work/checkpoints/checkpoint_best.pt" --sample-from-prior --prior-samples 20 --beam 1 --seed 1 \
  --post-process sentencepiece --cpu --num-workers 0 > "$work/prior-samples.txt"

echo "== test-set reconstruction =="
grep '^Generate test' "$work/reconstruct-test.txt"
echo "== prior samples =="
grep '^H-' "$work/prior-samples.txt" | sort -t- -k2 -n | cut -f3
