#!/usr/bin/env bash
# The Brown recipe of examples/brown/README.md: a sentence_vae_bowman VAE that keeps its latent
# code in use (free bits, no word dropout) and an lstm_lm baseline with the same decoder sizes
# and the same budget (Adam 1e-3, batch 32, 6 epochs), both evaluated on the test split with
# svae-eval (importance-weighted NLL with K = 500 for the VAE, exact NLL for the LM).
#
#   bash examples/brown/recipe.sh            # runs both trainings side by side, one thread each
#
# Set WORK_DIR to choose where the data, checkpoints and logs go (default runs/brown-recipe).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=${WORK_DIR:-runs/brown-recipe}
epochs=${EPOCHS:-6}
user_dir=$(svae-user-dir)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}

bash "$here/prepare_data.sh" "$work"

common=(--optimizer adam --lr 1e-3 --batch-size 32 --max-epoch "$epochs" --cpu --num-workers 0 --seed 1
        --log-format json --log-interval 100 --no-epoch-checkpoints)

# The VAE: Bowman's sizes; KL weight linear from 0 to 1 over 5,000 updates; a floor of 0.3 nats
# per latent dimension (free bits) so the KL cannot collapse; no word dropout (it costs NLL at
# test time, where the decoder sees every word).
fairseq-train "$work/data-bin" --user-dir "$user_dir" --task sentence_vae --arch sentence_vae_bowman \
  --criterion annealed_elbo --kl-schedule linear --kl-anneal-updates 5000 --free-bits 0.3 \
  --word-dropout 0 --dropout 0.3 "${common[@]}" --save-dir "$work/vae" > "$work/vae.log" 2>&1 &
vae=$!

# The baseline: fairseq's own LSTM language model with the decoder's sizes.
fairseq-train "$work/data-bin" --task language_modeling --sample-break-mode eos --arch lstm_lm \
  --decoder-embed-dim 353 --decoder-hidden-size 191 --decoder-out-embed-dim 191 --dropout 0.3 \
  --criterion cross_entropy "${common[@]}" --save-dir "$work/lm" > "$work/lm.log" 2>&1 &
lm=$!
wait $vae $lm

svae-eval "$work/data-bin" --path "$work/lm/checkpoint_best.pt" --gen-subset test --cpu \
  --json "$work/lm-test.json"
OMP_NUM_THREADS=$(nproc) svae-eval "$work/data-bin" --user-dir "$user_dir" --path "$work/vae/checkpoint_best.pt" \
  --gen-subset test --iw-samples 500 --cpu --seed 1 --json "$work/vae-test.json"
python "$here/../../scripts/plot_training.py" "$work/vae.log" --output "$work/vae-training.png"
