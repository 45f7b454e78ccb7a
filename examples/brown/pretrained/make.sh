#!/usr/bin/env bash
# How examples/brown/pretrained/model.pt was made: the earlier free-bits recipe of
# examples/brown/recipe.sh (sentence_vae_bowman, linear KL annealing, free bits 0.3, no word
# dropout, Adam 1e-3, batch 32) with a shorter budget, and fairseq's lstm_lm of the decoder's
# sizes as the critic language model of svae-report; then the fp16 export and the report behind
# the decoding defaults.
#
#   bash examples/brown/pretrained/make.sh      # two trainings side by side, one thread each
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=${WORK_DIR:-runs/pretrained}
vae_epochs=${VAE_EPOCHS:-2}
lm_epochs=${LM_EPOCHS:-2}
user_dir=$(svae-user-dir)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}

bash "$here/../prepare_data.sh" "$work"

common=(--optimizer adam --lr 1e-3 --batch-size 32 --cpu --num-workers 0 --seed 1
        --log-format json --log-interval 100 --no-epoch-checkpoints)
fairseq-train "$work/data-bin" --user-dir "$user_dir" --task sentence_vae --arch sentence_vae_bowman \
  --criterion annealed_elbo --kl-schedule linear --kl-anneal-updates 2500 --free-bits 0.3 \
  --word-dropout 0 --dropout 0.3 "${common[@]}" --max-epoch "$vae_epochs" --save-dir "$work/vae" \
  > "$work/vae.log" 2>&1 &
vae=$!
fairseq-train "$work/data-bin" --user-dir "$user_dir" --task language_modeling --sample-break-mode eos \
  --arch lstm_lm --decoder-embed-dim 353 --decoder-hidden-size 191 --decoder-out-embed-dim 191 \
  --dropout 0.3 --criterion cross_entropy "${common[@]}" --max-epoch "$lm_epochs" --save-dir "$work/lm" \
  > "$work/lm.log" 2>&1 &
lm=$!
wait $vae $lm

python "$here/../../../scripts/export_pretrained.py" "$work/vae/checkpoint_last.pt" "$work/data-bin" "$here"
svae-report "$work/data-bin" --user-dir "$user_dir" --path "$here/model.pt" --cpu --gen-subset test \
  --critic-path "$work/lm/checkpoint_last.pt" --json "$work/report.json"
