# The one home of the Multi30k recipe's model and training options (sourced by recipe.sh; the
# paraphrase recipe sources it too, so both examples compare the same models).
#
# All three models are fairseq's attention LSTM (one encoder and one decoder layer, attention,
# input feeding) of one size: 256-d embeddings, 256 hidden units and a 256-d output, half of
# fairseq `lstm`'s defaults, which suits 29,000 pairs and trains about twice as fast on one CPU
# thread; dropout 0.3 instead of fairseq's 0.1 (so few pairs over-fit at 0.1). SIZE_OPTIONS=""
# trains at fairseq lstm's own sizes (512) instead. The CVAE's defaults are fairseq lstm's, so it
# gets the same size options, and adds its latent code.
read -r -a size_options <<< "${SIZE_OPTIONS---encoder-embed-dim 256 --encoder-hidden-size 256 --decoder-embed-dim 256 --decoder-hidden-size 256 --decoder-out-embed-dim 256}"

# fairseq's lstm: the exact-likelihood baseline, its beam, n-best and sampling outputs.
lstm_model_options=(--arch lstm "${size_options[@]}" --dropout 0.3 --criterion cross_entropy)
# fairseq's translation_moe (Shen et al. 2019) on the same lstm: hMoEup (hard mixture, uniform
# prior; hMoElp's gating network reads only Transformer-format encoder output). The task options
# are also how fairseq-generate decodes it (svae-translation-eval runs one pass per expert).
moe_task_options=(--task translation_moe --method hMoEup --num-experts "${MOE_EXPERTS:-5}")
moe_model_options=("${moe_task_options[@]}" "${lstm_model_options[@]}")
# The conditional Sentence VAE (fairseq_svae/models/sentence_cvae.py): CVAE_OPTIONS overrides.
# About 3 nats of KL, no word dropout, a tenth of the sentences decoded from z ~ p(z|x) in
# training (--prior-draw-fraction, Sohn et al.'s hybrid): on Multi30k word dropout 0.25 cost 2.2
# BLEU and 2.1 nats of likelihood, 5 nats cost another 1.6 BLEU and 0.6 nats against 3, and the
# prior draws lift the outputs decoded from p(z|x) by 1.6 BLEU (prior mean) and 3.8 BLEU (five
# draws) at the same KL; on the caption paraphrases by 3.4 and 2.5 (the READMEs' development runs).
# --target-kl 3.3: the prior draws pull the code's KL below the target (2.7 at --target-kl 3).
CVAE_OPTIONS=${CVAE_OPTIONS:---arch sentence_cvae --dropout 0.3 --criterion annealed_elbo --target-kl 3.3 --word-dropout 0 --prior-draw-fraction 0.1}
read -r -a cvae_model_options <<< "${size_options[*]} $CVAE_OPTIONS"
# fairseq-generate's option for N different outputs per source, decoded from draws z ~ p(z|x)
# (the N most frequent of 4N draws' outputs; with --latent-candidates N one output a draw).
CVAE_OUTPUTS_OPTION=${CVAE_OUTPUTS_OPTION:---latent-samples}

# The same batches, optimizer and budget for every model: --max-tokens 4000 is about 210 pairs
# an update, 140 updates an epoch; MAX_UPDATE (default 2,000: about 14 epochs) bounds each run,
# checkpoint_best.pt is the best validation loss of the epochs. SAVE_INTERVAL_UPDATES=N also
# validates and saves every N updates (keeping one such checkpoint): for data whose epoch is
# longer than the budget (the paraphrase pairs), and so that a stopped run resumes near where it was.
# SEED (default 1) trains another run of the same recipe: the seeds move the Multi30k models by
# more than the systems differ, so systems are compared over several (compare_seeds.py).
training_options=(--optimizer adam --lr 1e-3 --clip-norm 1.0 --max-tokens 4000
                  --max-update "${MAX_UPDATE:-2000}" --seed "${SEED:-1}" --num-workers 0 --no-epoch-checkpoints
                  --log-format json --log-interval 50
                  ${SAVE_INTERVAL_UPDATES:+--save-interval-updates "$SAVE_INTERVAL_UPDATES" --keep-interval-updates 1})
