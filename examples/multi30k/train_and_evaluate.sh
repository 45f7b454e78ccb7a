#!/usr/bin/env bash
# The models of model_options.sh trained on WORK_DIR/data-bin (fairseq translation data), then
# svae-translation-eval on its test split against the given reference files. Shared by
# examples/multi30k/recipe.sh and examples/paraphrase/recipe.sh.
#
#   bash examples/multi30k/train_and_evaluate.sh WORK_DIR TITLE REFERENCE_FILE [REFERENCE_FILE ...]
#
# Trains WORK_DIR/{lstm,moe,cvae} (JOBS at a time, one thread each; a run started again resumes
# from its checkpoint_last.pt and one that is done ends at once; MODELS picks which, default
# "lstm moe cvae"), then writes WORK_DIR/results/{results.json,results.md} and every
# fairseq-generate output. DEVICE=gpu trains and decodes on the GPU; STOP_TIME_HOURS also ends
# each training after that much training time; EVALUATE_ONLY=1 skips the trainings; IW_SAMPLES
# sets the CVAE's importance samples.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=${1:?usage: train_and_evaluate.sh WORK_DIR TITLE REFERENCE_FILE...}
title=${2:?usage: train_and_evaluate.sh WORK_DIR TITLE REFERENCE_FILE...}
shift 2
references=("$@")
[ ${#references[@]} -ge 1 ] || { echo "train_and_evaluate.sh: error: OptionError: no reference file given" >&2; exit 1; }
models=${MODELS:-lstm moe cvae}
device=${DEVICE:-cpu}
jobs=${JOBS:-$( [ "$device" = gpu ] && echo 99 || nproc )}
. "$here/model_options.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}

device_options=(--cpu)
[ "$device" = gpu ] && device_options=()
common=("${training_options[@]}" "${device_options[@]}" ${STOP_TIME_HOURS:+--stop-time-hours "$STOP_TIME_HOURS"})

running=0
train() {  # train NAME ARGS...: fairseq-train in the background into WORK_DIR/NAME, at most $jobs at a time
  local name=$1; shift
  case " $models " in *" $name "*) ;; *) return 0 ;; esac
  if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
  echo "training $name: $work/$name.log"
  fairseq-train "$work/data-bin" "$@" "${common[@]}" --save-dir "$work/$name" >> "$work/$name.log" 2>&1 &
  running=$((running + 1))
}

if [ -z "${EVALUATE_ONLY:-}" ]; then
  # --user-dir: fairseq 0.12 reads its own checkpoints (to resume) only through the plugin's
  # weights-only loading under torch >= 2.6; translation_moe's directory brings its task too.
  train lstm --user-dir "$(svae-user-dir)" "${lstm_model_options[@]}"
  train moe --user-dir "$(svae-user-dir translation_moe)" "${moe_model_options[@]}"
  train cvae --user-dir "$(svae-user-dir)" "${cvae_model_options[@]}"
  while [ "$running" -gt 0 ]; do
    wait -n || { echo "train_and_evaluate.sh: a training failed; see $work/*.log" >&2; exit 1; }
    running=$((running - 1))
  done
fi

lstm=$work/lstm/checkpoint_best.pt moe=$work/moe/checkpoint_best.pt cvae=$work/cvae/checkpoint_best.pt
settings=()
if [ -f "$lstm" ]; then
  settings+=(--setting "lstm beam 5" "$lstm" "--beam 5"
             --setting "lstm 5-best" "$lstm" "--beam 5 --nbest 5"
             --setting "lstm sampling" "$lstm" "--sampling --beam 5 --nbest 5"
             --nll lstm "$lstm")
fi
[ -f "$moe" ] && settings+=(--setting "hMoEup ${MOE_EXPERTS:-5} experts" "$moe" "${moe_task_options[*]} --beam 5")
if [ -f "$cvae" ]; then
  # Five outputs: the most frequent of twenty draws' (the default: an output most draws agree
  # on comes again, up to its share), the same with at most two copies of one (a point between
  # the default and five different: Multi30k's README, Several seeds), kept five different, and
  # one a draw.
  settings+=(--setting "CVAE prior mean, beam 5" "$cvae" "--beam 5"
             --setting "CVAE 5 outputs of 20 draws of z, beam 5" "$cvae" "$CVAE_OUTPUTS_OPTION 5 --beam 5"
             --setting "CVAE 5 outputs of 20 draws of z, at most 2 copies, beam 5" "$cvae" "$CVAE_OUTPUTS_OPTION 5 --latent-max-copies 2 --beam 5"
             --setting "CVAE 5 different outputs of 20 draws of z, beam 5" "$cvae" "$CVAE_OUTPUTS_OPTION 5 --latent-distinct --beam 5"
             --setting "CVAE 5 draws of z, one output each, beam 5" "$cvae" "$CVAE_OUTPUTS_OPTION 5 --latent-candidates 5 --beam 5"
             --nll CVAE "$cvae")
fi
gpu_option=()
[ "$device" = gpu ] && gpu_option=(--gpu)
# --max-len-a/b: room for any real output (pieces: 2 x the source's + 10), and a bound on the
# endless outputs of an under-trained model.
# IW_SAMPLES: the CVAE's importance samples K (default 100; the estimate tightens as K grows).
svae-translation-eval "$work/data-bin" --references "${references[@]}" --output-dir "$work/results" \
  --post-process sentencepiece --generate-options "--max-len-a 2 --max-len-b 10" --title "$title" \
  --iw-samples "${IW_SAMPLES:-100}" \
  "${gpu_option[@]}" "${settings[@]}"
