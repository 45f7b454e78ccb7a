# The VAE model options of the Brown recipe, the one home for what recipe.sh and train.sh both
# train with (sourced by them, not run):
# - the posterior mean batch-normalized to the fixed scale 1.0 with a learned shift (BN-VAE, Zhu
#   et al. 2020), which keeps each of the 13 dimensions' expected KL at least 1.0^2 / 2 nats, so
#   the code cannot collapse while the decoder learns;
# - z fed to the decoder at every step, so the decoder does not have to carry it in its state;
# - no word dropout: it costs NLL at test time, where the decoder sees every word;
# - no dropout in the encoder: dropout on the summary the posterior is read from puts noise on z
#   in training that the decoder learns to discount (on Brown's valid split it cost 1.1 nats of
#   MI and 0.2 of NLL);
# - dropout 0.4 in the decoder: at 0.3 the VAE over-fits after 9 of its 12 epochs; at 0.4 its
#   best checkpoint scores 0.39 nats of IW-NLL lower on Brown's valid split (the LM keeps 0.3, its
#   own better setting there).
vae_model_options=(--posterior-mean-bn-gamma 1.0 --feed-latent --word-dropout 0 --dropout 0.4 --encoder-dropout 0)
