#!/usr/bin/env bash
# The last steps of recipe.sh: a trained captions VAE made into a model directory to ship, and
# what it shows, measured.
#
#   WORK_DIR=runs/captions-recipe bash examples/captions/showcase.sh runs/captions-recipe/vae-kl40/checkpoint_best.pt
#
# 1. scripts/export_pretrained.py: fp16 weights and dict.txt in PRETRAINED_DIR (default
#    WORK_DIR/pretrained; examples/captions/pretrained is the shipped one);
# 2. svae-fit-prior: a Gaussian mixture fitted to the codes of 20,000 training captions,
#    PRETRAINED_DIR/model.prior.pt;
# 3. svae-eval on the first 1,000 test captions: the VAE's importance-weighted NLL (K = 100)
#    beside the exact NLL of WORK_DIR/lm (the lstm_lm baseline);
# 4. svae-report on the test split with the LM as critic, both priors, the paraphrase probe
#    (five captions an image, all 5,000 test captions), "man" -> "woman" and "red" -> "blue"
#    shifts and the latent map; reconstructions (all 1,000), homotopies, the reference and the
#    shifts read the first caption of each image (--first-of-each-group), as the targets of
#    examples/captions/README.md are measured.
set -euo pipefail

checkpoint=${1:?usage: showcase.sh CHECKPOINT}
here=$(cd "$(dirname "$0")" && pwd)
work=${WORK_DIR:-runs/captions-recipe}
pretrained=${PRETRAINED_DIR:-$work/pretrained}
device_options=(--cpu)
[ "${DEVICE:-cpu}" = gpu ] && device_options=()
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}

python "$here/../../scripts/export_pretrained.py" "$checkpoint" "$work/data-bin" "$pretrained"
svae-fit-prior "$work/data-bin" --path "$pretrained/model.pt" "${device_options[@]}" | tee "$work/fit-prior.txt"
svae-eval "$work/data-bin" --path "$pretrained/model.pt" --gen-subset test --first-sentences 1000 \
  --iw-samples 100 --seed 1 "${device_options[@]}" --json "$work/vae-test.json" --no-progress-bar &
svae-eval "$work/data-bin" --path "$work/lm/checkpoint_best.pt" --gen-subset test --first-sentences 1000 \
  "${device_options[@]}" --json "$work/lm-test.json" --no-progress-bar
svae-report "$work/data-bin" --path "$pretrained/model.pt" --fitted-prior "$pretrained/model.prior.pt" \
  --gen-subset test --critic-path "$work/lm/checkpoint_best.pt" --paraphrase-group-size 5 --first-of-each-group \
  --reconstructions 1000 --attribute-words woman,man --latent-map "$work/latent-map.png" "${device_options[@]}" \
  --json "$work/report.json" --no-progress-bar | tee "$work/report.txt"
svae-report "$work/data-bin" --path "$pretrained/model.pt" --gen-subset test --prior-samples 200 \
  --reconstructions 200 --homotopies 0 --imputations 0 --paraphrase-group-size 5 --first-of-each-group \
  --attribute-words blue,red "${device_options[@]}" \
  --json "$work/report-red-blue.json" --no-progress-bar > "$work/report-red-blue.txt"
wait
