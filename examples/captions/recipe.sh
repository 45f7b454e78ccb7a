#!/usr/bin/env bash
# The captions recipe of examples/captions/README.md: fairseq's lstm_lm and Sentence VAEs of the
# same decoder sizes trained at asked rates (--target-kl, nats of KL per caption), the showcase
# VAE exported to a model directory with a prior fitted to its codes, and svae-report with the
# probes of what z holds.
#
#   bash examples/captions/recipe.sh                     # the showcase rate only, on the CPU
#   RATES="10 20 40 80" SHOWCASE_RATE=80 DEVICE=gpu bash examples/captions/recipe.sh
#
# WORK_DIR (default runs/captions-recipe) receives the data, checkpoints and logs; TEXT_DIR may
# name another corpus (train/valid/test.txt, one sentence per line; default: the embedded
# captions). A run that is started again resumes from its checkpoint_last.pt. MAX_UPDATE bounds each run (default 12,000 updates of BATCH = 64 captions, five
# epochs); JOBS trainings run at a time (default: one per core, one thread each; on a GPU all).
# TRAIN_ONLY=1 stops after the trainings; STOP_TIME_HOURS also ends each training after that
# much training time (fairseq's --stop-time-hours). PRECISION=bf16 trains the VAEs under the
# plugin's --bf16-autocast (about 1.5x on CPUs with AVX512-BF16 or AMX, and on GPUs; the same
# validation loss within 0.5%), PRECISION=fp16 under fairseq's --fp16 (GPUs); default fp32.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=${WORK_DIR:-runs/captions-recipe}
rates=${RATES:-${SHOWCASE_RATE:-80}}
showcase_rate=${SHOWCASE_RATE:-80}
max_update=${MAX_UPDATE:-12000}
batch=${BATCH:-64}
device=${DEVICE:-cpu}
jobs=${JOBS:-$( [ "$device" = gpu ] && echo 99 || nproc )}
user_dir=$(svae-user-dir)
. "$here/vae_options.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}

mkdir -p "$work"
if [ -z "${TEXT_DIR:-}" ]; then
  python "$here/../brown/extract_corpus.py" "$work/text" --corpus "$here/corpus" > /dev/null
fi
bash "$here/../brown/prepare_data.sh" "$work" "${TEXT_DIR:-$work/text}"

device_options=(--cpu)
[ "$device" = gpu ] && device_options=()
case ${PRECISION:-fp32} in
  fp32) vae_precision=() ;;
  bf16) vae_precision=(--bf16-autocast) ;;
  fp16) vae_precision=(--fp16) ;;
  *) echo "recipe.sh: PRECISION must be fp32, bf16 or fp16, not '${PRECISION}'" >&2; exit 2 ;;
esac
# Validation every 1,000 updates with batches of 256 captions, whose MI estimate can show up to
# log 256 = 5.5 nats; checkpoint_best.pt is the best negative ELBO of those validations.
common=(--optimizer adam --lr 1e-3 --batch-size "$batch" --max-update "$max_update" --num-workers 0
        --seed 1 --log-format json --log-interval 100 --no-epoch-checkpoints --validate-interval-updates 1000
        --save-interval-updates 1000 --keep-interval-updates 1 --batch-size-valid 256 "${device_options[@]}"
        ${STOP_TIME_HOURS:+--stop-time-hours "$STOP_TIME_HOURS"})

running=0
train() {  # train LOG ARGS...: fairseq-train in the background, at most $jobs at a time
  local log=$1; shift
  if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
  fairseq-train "$work/data-bin" "$@" "${common[@]}" >> "$log" 2>&1 &  # a resumed run appends
  running=$((running + 1))
}

# The baseline and critic: fairseq's own LSTM language model with the decoder's sizes.
# (--user-dir only makes fairseq read its checkpoints with the weights-only protection, so that
# a run started again resumes: fairseq 0.12 alone cannot read them under torch >= 2.6.)
train "$work/lm.log" --user-dir "$user_dir" --task language_modeling --sample-break-mode eos --criterion cross_entropy \
    "${lm_model_options[@]}" --save-dir "$work/lm"
# A VAE at each asked rate: the KL weight starts at 0 and the criterion then holds the training
# KL at the rate (fairseq_svae/kl_control.py, KLRateController).
for rate in $rates; do
  train "$work/vae-kl$rate.log" --user-dir "$user_dir" --task sentence_vae --criterion annealed_elbo \
    --target-kl "$rate" "${vae_model_options[@]}" ${vae_precision[@]+"${vae_precision[@]}"} --save-dir "$work/vae-kl$rate"
done
wait
[ -n "${TRAIN_ONLY:-}" ] && exit 0

WORK_DIR="$work" bash "$here/showcase.sh" "$work/vae-kl$showcase_rate/checkpoint_best.pt"
