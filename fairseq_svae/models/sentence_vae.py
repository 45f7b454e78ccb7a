"""``--arch sentence_vae``: the Sentence VAE of Bowman et al. (2016) as a fairseq model.

Defaults live in :func:`base_architecture` only; the named architectures override sizes.
"""

import logging

import torch.nn as nn
from fairseq.models import (
    FairseqEncoderDecoderModel,
    register_model,
    register_model_architecture,
)

from fairseq_svae.errors import IncompatibleCheckpointError, OptionError
from fairseq_svae.models.bag_of_words import BAG_OF_WORDS_NLL, BagOfWordsHead, check_bag_of_words_loss
from fairseq_svae.models.sentence_vae_decoder import SentenceVAEDecoder
from fairseq_svae.models.sentence_vae_encoder import (
    POSTERIOR_LOGVAR,
    POSTERIOR_MEAN,
    LATENT,
    SentenceVAEEncoder,
)

logger = logging.getLogger(__name__)


def build_embedding(dictionary, embed_dim: int) -> nn.Embedding:
    embedding = nn.Embedding(len(dictionary), embed_dim, padding_idx=dictionary.pad())
    nn.init.uniform_(embedding.weight, -0.1, 0.1)
    nn.init.zeros_(embedding.weight[dictionary.pad()])
    return embedding


@register_model("sentence_vae")
class SentenceVAEModel(FairseqEncoderDecoderModel):
    """LSTM encoder -> diagonal Gaussian q(z|x) -> z -> LSTM decoder p(x|z)."""

    @staticmethod
    def add_args(parser):
        # fmt: off
        parser.add_argument("--latent-dim", type=int, metavar="N",
                            help="size of the latent code z")
        parser.add_argument("--dropout", type=float, metavar="D",
                            help="dropout on embeddings, between LSTM layers and on LSTM outputs "
                                 "(the encoder's too, unless --encoder-dropout is given)")
        parser.add_argument("--encoder-dropout", type=float, metavar="D",
                            help="the encoder's dropout (default: --dropout); dropout on the "
                                 "summary that the posterior is read from adds noise to z in "
                                 "training that the decoder learns to discount")
        parser.add_argument("--word-dropout", type=float, metavar="P",
                            help="in training, replace each decoder input word with <unk> with "
                                 "probability P (Bowman et al.); 1 gives an inputless decoder")
        parser.add_argument("--encoder-embed-dim", type=int, metavar="N",
                            help="encoder word embedding size")
        parser.add_argument("--encoder-hidden-size", type=int, metavar="N",
                            help="encoder LSTM hidden size (per direction)")
        parser.add_argument("--encoder-layers", type=int, metavar="N",
                            help="number of encoder LSTM layers")
        parser.add_argument("--encoder-bidirectional", action="store_true",
                            help="make the encoder LSTM bidirectional")
        parser.add_argument("--decoder-embed-dim", type=int, metavar="N",
                            help="decoder word embedding size")
        parser.add_argument("--decoder-hidden-size", type=int, metavar="N",
                            help="decoder LSTM hidden size")
        parser.add_argument("--decoder-layers", type=int, metavar="N",
                            help="number of decoder LSTM layers")
        parser.add_argument("--decoder-out-embed-dim", type=int, metavar="N",
                            help="size of the features fed to the output softmax "
                                 "(a projection is added when it differs from the hidden size)")
        parser.add_argument("--feed-latent", action="store_true",
                            help="also concatenate z to the decoder input at every step "
                                 "(by default z only sets the initial LSTM state)")
        parser.add_argument("--share-decoder-input-output-embed", action="store_true",
                            help="tie the decoder input embedding and the output softmax weights")
        parser.add_argument("--share-encoder-decoder-embed", action="store_true",
                            help="use one word embedding for the encoder and the decoder")
        parser.add_argument("--posterior-mean-bn-gamma", type=float, metavar="G",
                            help="BN-VAE (Zhu et al. 2020): batch-normalize the posterior mean "
                                 "with the fixed scale G, which keeps the expected KL of each "
                                 "latent dimension at least G^2 / 2; 0 disables it")
        parser.add_argument("--posterior-mean-bn-population-statistics", action="store_true",
                            help="with --posterior-mean-bn-gamma, normalize training batches with "
                                 "moving estimates of the whole data's statistics (batch "
                                 "renormalization) instead of each batch's own: fairseq's batches "
                                 "hold sentences of one length, and their own statistics make "
                                 "training codes differ from the codes of scored sentences")
        parser.add_argument("--load-pretrained-encoder-from", type=str, metavar="CHECKPOINT",
                            help="start the encoder (embedding, LSTM and posterior head) from this "
                                 "Sentence VAE checkpoint and the decoder afresh: the second stage "
                                 "of Li et al. (2019), after an autoencoder stage trained with "
                                 "--kl-schedule constant --kl-max-weight 0")
        parser.add_argument("--bag-of-words-loss", type=float, metavar="W",
                            help="Zhao et al. (2017): a linear head predicts the sentence's words, "
                                 "in any order, from z, and training adds W times its NLL to the "
                                 "loss, so that z holds what the sentence says rather than how the "
                                 "decoder continues it; not part of the ELBO or the reported "
                                 "likelihoods; 0 (the default) builds no head")
        # fmt: on

    @classmethod
    def build_model(cls, args, task):
        base_architecture(args)  # fill in any option an older checkpoint lacks
        dictionary = task.target_dictionary
        encoder_embed = build_embedding(dictionary, args.encoder_embed_dim)
        if args.share_encoder_decoder_embed:
            if args.encoder_embed_dim != args.decoder_embed_dim:
                raise OptionError(
                    f"--share-encoder-decoder-embed needs --encoder-embed-dim ({args.encoder_embed_dim}) "
                    f"equal to --decoder-embed-dim ({args.decoder_embed_dim})"
                )
            decoder_embed = encoder_embed
        else:
            decoder_embed = build_embedding(dictionary, args.decoder_embed_dim)
        if not 0.0 <= args.word_dropout <= 1.0:
            raise OptionError(f"--word-dropout must be in [0, 1], got {args.word_dropout}")
        for option, rate in (("--dropout", args.dropout), ("--encoder-dropout", args.encoder_dropout)):
            if not 0.0 <= rate < 1.0:
                raise OptionError(f"{option} must be in [0, 1), got {rate}")

        encoder = SentenceVAEEncoder(
            dictionary,
            encoder_embed,
            hidden_size=args.encoder_hidden_size,
            num_layers=args.encoder_layers,
            bidirectional=args.encoder_bidirectional,
            latent_dim=args.latent_dim,
            dropout=args.encoder_dropout,
            mean_bn_gamma=args.posterior_mean_bn_gamma,
            mean_bn_population_statistics=args.posterior_mean_bn_population_statistics,
        )
        if args.posterior_mean_bn_gamma < 0:
            raise OptionError(f"--posterior-mean-bn-gamma must be >= 0, got {args.posterior_mean_bn_gamma}")
        if args.posterior_mean_bn_population_statistics and args.posterior_mean_bn_gamma == 0:
            raise OptionError("--posterior-mean-bn-population-statistics needs --posterior-mean-bn-gamma G > 0")
        if args.load_pretrained_encoder_from:
            load_pretrained_encoder(encoder, args.load_pretrained_encoder_from)
        decoder = SentenceVAEDecoder(
            dictionary,
            decoder_embed,
            hidden_size=args.decoder_hidden_size,
            num_layers=args.decoder_layers,
            latent_dim=args.latent_dim,
            out_embed_dim=args.decoder_out_embed_dim,
            dropout=args.dropout,
            word_dropout=args.word_dropout,
            feed_latent=args.feed_latent,
            share_input_output_embed=args.share_decoder_input_output_embed,
        )
        model = cls(encoder, decoder)
        check_bag_of_words_loss(args.bag_of_words_loss)
        model.bag_of_words_weight = args.bag_of_words_loss
        if args.bag_of_words_loss > 0:
            model.bag_of_words = BagOfWordsHead(
                args.latent_dim, len(dictionary), ignored_ids=(dictionary.pad(), dictionary.eos()))
        return model

    @property
    def latent_dim(self) -> int:
        return self.encoder.latent_dim

    @classmethod
    def from_pretrained(cls, model_name_or_path, checkpoint_file="checkpoint_best.pt",
                        data_name_or_path=".", **kwargs):
        """Load a trained model as a :class:`~fairseq_svae.hub_interface.SentenceVAEHubInterface`
        (encode, reconstruct, sample, interpolate, posterior_samples, attribute_vector, shift)."""
        # Imported here: the hub needs the task, whose generator imports the models package.
        from fairseq_svae.hub_interface import SentenceVAEHubInterface

        return SentenceVAEHubInterface.from_pretrained(
            model_name_or_path, checkpoint_file, data_name_or_path, **kwargs
        )

    def forward(self, src_tokens, src_lengths, prev_output_tokens, sample_latent: bool = True,
                features_only: bool = False, **kwargs):
        """The ELBO's forward: z ~ q(z|x) (one reparameterized sample) in training and validation.

        Returns the decoder output (logits, or features with ``features_only``) and a dict that
        also holds the posterior mean and log-variance for the KL term.
        """
        encoder_out = self.encoder(src_tokens, src_lengths, sample_latent=sample_latent)
        output, extra = self.decoder(
            prev_output_tokens, encoder_out=encoder_out, features_only=features_only
        )
        extra[POSTERIOR_MEAN] = encoder_out[POSTERIOR_MEAN]
        extra[POSTERIOR_LOGVAR] = encoder_out[POSTERIOR_LOGVAR]
        if getattr(self, "bag_of_words", None) is not None:
            # From the same z the decoder reads (a sample of q(z|x) in training).
            extra[BAG_OF_WORDS_NLL] = self.bag_of_words.nll(encoder_out[LATENT], src_tokens)
        return output, extra


def load_pretrained_encoder(encoder: SentenceVAEEncoder, path: str) -> None:
    """Copy the encoder of the Sentence VAE checkpoint ``path`` into ``encoder``."""
    # Imported here: the checkpoint helpers import the model registry.
    from fairseq_svae.sentence_vae_checkpoint import checkpoint_file, load_sentence_vae_state

    path = checkpoint_file(path, option="--load-pretrained-encoder-from",
                           remedy="pass --load-pretrained-encoder-from AE_DIR/checkpoint_best.pt")
    state = load_sentence_vae_state(path)["model"]
    prefix = "encoder."
    weights = {name[len(prefix):]: value for name, value in state.items() if name.startswith(prefix)}
    ours = encoder.state_dict()
    if weights.keys() != ours.keys() or any(weights[k].shape != ours[k].shape for k in ours):
        raise IncompatibleCheckpointError(
            f"the encoder in {path} does not fit this model's encoder (sizes or options differ: "
            f"--encoder-*, --latent-dim, --posterior-mean-bn-gamma); train the autoencoder stage "
            f"with the same model options as this stage"
        )
    encoder.load_state_dict(weights)
    logger.info("encoder loaded from %s (%d tensors); the decoder starts afresh", path, len(weights))


@register_model_architecture("sentence_vae", "sentence_vae")
def base_architecture(args):
    args.latent_dim = getattr(args, "latent_dim", 32)
    args.dropout = getattr(args, "dropout", 0.3)
    args.encoder_dropout = getattr(args, "encoder_dropout", args.dropout)
    args.word_dropout = getattr(args, "word_dropout", 0.0)
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 256)
    args.encoder_hidden_size = getattr(args, "encoder_hidden_size", 512)
    args.encoder_layers = getattr(args, "encoder_layers", 1)
    args.encoder_bidirectional = getattr(args, "encoder_bidirectional", False)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", args.encoder_embed_dim)
    args.decoder_hidden_size = getattr(args, "decoder_hidden_size", args.encoder_hidden_size)
    args.decoder_layers = getattr(args, "decoder_layers", 1)
    args.decoder_out_embed_dim = getattr(args, "decoder_out_embed_dim", args.decoder_hidden_size)
    args.feed_latent = getattr(args, "feed_latent", False)
    args.share_decoder_input_output_embed = getattr(args, "share_decoder_input_output_embed", False)
    args.share_encoder_decoder_embed = getattr(args, "share_encoder_decoder_embed", False)
    args.posterior_mean_bn_gamma = getattr(args, "posterior_mean_bn_gamma", 0.0)
    args.posterior_mean_bn_population_statistics = getattr(args, "posterior_mean_bn_population_statistics", False)
    args.load_pretrained_encoder_from = getattr(args, "load_pretrained_encoder_from", None)
    args.bag_of_words_loss = getattr(args, "bag_of_words_loss", 0.0)


@register_model_architecture("sentence_vae", "sentence_vae_bowman")
def sentence_vae_bowman(args):
    """Bowman et al. (2016), Penn Treebank sizes: 353-d embeddings, 191 hidden units, 13-d z."""
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 353)
    args.encoder_hidden_size = getattr(args, "encoder_hidden_size", 191)
    args.latent_dim = getattr(args, "latent_dim", 13)
    base_architecture(args)


@register_model_architecture("sentence_vae", "sentence_vae_large")
def sentence_vae_large(args):
    """He et al. (2019): 512-d embeddings, 1024 hidden units, 32-d z."""
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 512)
    args.encoder_hidden_size = getattr(args, "encoder_hidden_size", 1024)
    args.latent_dim = getattr(args, "latent_dim", 32)
    base_architecture(args)
