#!/usr/bin/env bash
# The rate frontier of examples/brown/README.md: the recipe's VAE (vae_options.sh) trained at
# asked rates with --target-kl (nats of KL per sentence) instead of its linear KL annealing, each
# run otherwise as recipe.sh trains it (Adam 1e-3, batch 32, best checkpoint by validation).
#
#   RATES="15 40" bash examples/brown/rate_frontier.sh          # then examples/brown/frontier.py
#
# WORK_DIR (default runs/brown-recipe: the data-bin of recipe.sh is reused), MAX_UPDATE (default
# 19,368, the recipe VAE's budget), DEVICE=gpu to train on a GPU, STOP_TIME_HOURS to bound each
# run's training time. The runs go side by side, one thread each; a run started again resumes
# from its checkpoint_last.pt and appends to its log.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=${WORK_DIR:-runs/brown-recipe}
rates=${RATES:-15 40}
max_update=${MAX_UPDATE:-19368}
device_options=(--cpu)
[ "${DEVICE:-cpu}" = gpu ] && device_options=()
user_dir=$(svae-user-dir)
. "$here/vae_options.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}

bash "$here/prepare_data.sh" "$work" ${TEXT_DIR:+"$TEXT_DIR"}
for rate in $rates; do
  fairseq-train "$work/data-bin" --user-dir "$user_dir" --task sentence_vae --arch sentence_vae_bowman \
    --criterion annealed_elbo --target-kl "$rate" "${vae_model_options[@]}" --optimizer fused_adam \
    --lr 1e-3 --batch-size 32 --max-update "$max_update" --num-workers 0 --seed 1 --log-format json \
    --log-interval 100 --no-epoch-checkpoints --validate-interval-updates 1600 --save-interval-updates 1600 \
    --keep-interval-updates 1 "${device_options[@]}" ${STOP_TIME_HOURS:+--stop-time-hours "$STOP_TIME_HOURS"} \
    --save-dir "$work/vae-kl$rate" >> "$work/vae-kl$rate.log" 2>&1 &
done
wait
