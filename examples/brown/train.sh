#!/usr/bin/env bash
# Train a small Sentence VAE on the embedded Brown corpus for a short CPU budget, then print the
# test-set reconstruction NLL, KL and negative ELBO (nats per sentence) and what the model writes:
# prior samples, reconstructions, a homotopy, imputed sentences (examples/brown/quickstart.py).
#
#   bash examples/brown/train.sh                 # 600 updates: about 5 minutes on an idle CPU core
#   MAX_UPDATE=6000 WORK_DIR=runs/big bash examples/brown/train.sh
#
# Every step is a plain fairseq command; see the README for what each flag does.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=${WORK_DIR:-runs/brown-small}
max_update=${MAX_UPDATE:-600}
user_dir=$(svae-user-dir)
. "$here/vae_options.sh"

bash "$here/prepare_data.sh" "$work"

# The recipe's model options (vae_options.sh: BN-VAE's fixed-scale posterior mean, which keeps
# the code from collapsing, z fed to the decoder at every step, dropout in the decoder only). The
# KL weight rises linearly over the first half of the run.
fairseq-train "$work/data-bin" --user-dir "$user_dir" \
  --task sentence_vae --arch sentence_vae_bowman \
  --criterion annealed_elbo --kl-schedule linear --kl-anneal-updates $((max_update / 2)) \
  "${vae_model_options[@]}" \
  --optimizer fused_adam --lr 1e-3 --batch-size 32 --max-update "$max_update" \
  --cpu --num-workers 0 --seed 1 \
  --save-dir "$work/checkpoints" --no-epoch-checkpoints \
  --log-format simple --log-interval 50

echo
echo "== test split (nats per sentence; ppl is exp(negative ELBO per token), an upper bound) =="
fairseq-validate "$work/data-bin" --user-dir "$user_dir" --task sentence_vae \
  --path "$work/checkpoints/checkpoint_last.pt" --valid-subset test --cpu --max-tokens 8000 --seed 1 \
  2>&1 | grep "valid on 'test' subset" | sed 's/.*| test | //'

echo
echo "== what the model writes (examples/brown/quickstart.py on $work/checkpoints/checkpoint_last.pt) =="
python "$here/quickstart.py" --checkpoint "$work/checkpoints/checkpoint_last.pt" --data "$work/data-bin"
