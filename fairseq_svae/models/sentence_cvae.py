"""``--arch sentence_cvae``: a conditional Sentence VAE for fairseq's ``--task translation``.

fairseq's attention LSTM (``--arch lstm``: its encoder and decoder, with its sizes and defaults)
plus a latent code z (Sohn et al. 2015; Zhang et al. 2016, "Variational Neural Machine
Translation"):

- the prior p(z|x): a diagonal Gaussian whose mean and log-variance are read from the source
  encoder's final state;
- the recognition network q(z|x, y): a second LSTM reads the target, and its final state with
  the source's gives q's mean and log-variance (training and likelihood estimates only);
- the decoder: fairseq's ``LSTMDecoder``, with z added (through a projection) to the initial
  state it takes from the encoder, and concatenated to its input at every step.

Training (``--criterion annealed_elbo``) decodes from z ~ q(z|x, y) and pays KL(q || p) with p
learned (with ``--prior-draw-fraction F``, a random fraction F of each batch's sentences is decoded
from z ~ p(z|x) instead: Sohn et al. 2015's hybrid of the CVAE and GSNN objectives, which trains
the decoder on the prior's codes that generation reads; ``--prior-draw-best-of K`` decodes each
of them from the best of K draws, the one under which its target (``--prior-draw-score-tokens
T``: its first T tokens) is likeliest (``--prior-draw-score-words N``: by a softmax over the
targets' words and the N most frequent only): hard EM over the prior's codes, so that different draws
learn different good outputs; with ``--prior-draw-choice posterior`` the best is the draw that
q(z|x, y) finds likeliest, without a decoder pass, and with ``--prior-draw-choice bag-of-words``
the draw under which the bag-of-words head of ``--bag-of-words-loss W`` (Zhao et al. 2017: z
and the source's summary predict the target's words in any order, W times that NLL added to
the loss) finds the target's words likeliest); generation decodes from the prior mean, or,
with ``--latent-samples N`` (:mod:`fairseq_svae.generation.latent_samples`), from N draws
z ~ p(z|x), one output each (``--latent-scale S`` scales their spread about the prior mean).
Defaults live in :func:`base_architecture`, which takes fairseq ``lstm``'s for every size.
"""

import contextlib
from typing import Dict, Optional

import torch
import torch.nn as nn
from fairseq import utils
from fairseq.models import (
    FairseqEncoder,
    FairseqEncoderDecoderModel,
    register_model,
    register_model_architecture,
)
from fairseq.models import lstm as fairseq_lstm
from torch import Tensor

from fairseq_svae.errors import OptionError
from fairseq_svae.gaussian import clamp_logvar, gaussian_log_density, reparameterize
from fairseq_svae.models.bag_of_words import BAG_OF_WORDS_NLL, BagOfWordsHead, check_bag_of_words_loss
from fairseq_svae.models.sentence_vae_decoder import word_dropout
from fairseq_svae.models.sentence_vae_encoder import LATENT, POSTERIOR_LOGVAR, POSTERIOR_MEAN
from fairseq_svae.token_nll import token_nll

# Keys of the encoder output and of the model's extra output. The criterion pays
# KL(posterior || prior) when the model's output carries PRIOR_MEAN (see annealed_elbo).
PRIOR_MEAN = "prior_mean"
PRIOR_LOGVAR = "prior_logvar"
# --prior-draw-choice: how --prior-draw-best-of K picks its draw.
LIKELIHOOD_CHOICE = "likelihood"
POSTERIOR_CHOICE = "posterior"
BAG_OF_WORDS_CHOICE = "bag-of-words"
PRIOR_DRAW_CHOICES = (LIKELIHOOD_CHOICE, POSTERIOR_CHOICE, BAG_OF_WORDS_CHOICE)
SOURCE_STATES = "source_states"  # fairseq LSTMEncoder's tuple: outputs, hiddens, cells, padding mask


def final_summary(final_hiddens: Tensor) -> Tensor:
    """The last layer's final hidden state (B x units) of a fairseq LSTMEncoder's output."""
    return final_hiddens[-1]


class LatentConditionedEmbedding(nn.Module):
    """Word embeddings with z appended to every position: how z reaches each decoder step.

    fairseq's LSTMDecoder feeds ``embed_tokens(prev_output_tokens)`` to its first layer; making
    that lookup return [embedding; z] feeds z at every step without rewriting the decoder's loop.
    z is set for the duration of one decoder call by :meth:`conditioned_on`.
    """

    def __init__(self, words: nn.Embedding, latent_dim: int):
        super().__init__()
        self.words = words
        self.latent_dim = latent_dim
        self.padding_idx = words.padding_idx
        self._latent: Optional[Tensor] = None

    @property
    def weight(self) -> Tensor:  # --share-decoder-input-output-embed ties the word embeddings
        return self.words.weight

    @contextlib.contextmanager
    def conditioned_on(self, latent: Tensor):
        self._latent = latent
        try:
            yield
        finally:
            self._latent = None

    def forward(self, tokens: Tensor) -> Tensor:
        embedded = self.words(tokens)  # B x T x C
        if self._latent is None:
            raise RuntimeError("the decoder's embedding was called without z (use conditioned_on)")
        latent = self._latent.to(embedded.dtype).unsqueeze(1).expand(-1, tokens.size(1), -1)
        return torch.cat([embedded, latent], dim=-1)


class ConditionalPriorEncoder(FairseqEncoder):
    """fairseq's LSTMEncoder over the source, the prior p(z|x) and the recognition network q(z|x, y).

    ``forward`` (what fairseq's generator calls) encodes the source and gives the prior; z is
    the prior mean unless ``latent`` supplies one (a draw from the prior, or from q in training).
    """

    def __init__(self, source_encoder: fairseq_lstm.LSTMEncoder, target_encoder: fairseq_lstm.LSTMEncoder,
                 latent_dim: int):
        super().__init__(source_encoder.dictionary)
        self.source_encoder = source_encoder
        self.target_encoder = target_encoder
        self.latent_dim = latent_dim
        units = source_encoder.output_units
        self.to_prior = nn.Linear(units, 2 * latent_dim)
        self.to_posterior = nn.Linear(units + target_encoder.output_units, 2 * latent_dim)

    def forward(self, src_tokens: Tensor, src_lengths: Tensor, latent: Optional[Tensor] = None,
                **kwargs) -> Dict:
        # Not sorted by length: the hub and the likelihood estimates repeat rows.
        states = self.source_encoder(src_tokens, src_lengths, enforce_sorted=False)
        # The heads run in fp32: their mean and log-variance set the KL.
        prior_mean, prior_logvar = self.to_prior(final_summary(states[1]).float()).chunk(2, dim=-1)
        prior_mean, prior_logvar = prior_mean.float(), clamp_logvar(prior_logvar)
        return {
            SOURCE_STATES: states,
            PRIOR_MEAN: prior_mean,
            PRIOR_LOGVAR: prior_logvar,
            LATENT: prior_mean if latent is None else latent.float(),
        }

    def posterior(self, encoder_out: Dict, target_tokens: Tensor):
        """Mean and log-variance of q(z|x, y), from the source states and the target's tokens
        (any layout that holds every target word: the decoder's ``prev_output_tokens`` does)."""
        lengths = target_tokens.ne(self.target_encoder.padding_idx).long().sum(dim=1)
        target_states = self.target_encoder(target_tokens, lengths, enforce_sorted=False)
        summary = torch.cat([final_summary(encoder_out[SOURCE_STATES][1]), final_summary(target_states[1])], dim=-1)
        mean, logvar = self.to_posterior(summary.float()).chunk(2, dim=-1)
        return mean.float(), clamp_logvar(logvar)

    def reorder_encoder_out(self, encoder_out: Dict, new_order: Tensor) -> Dict:
        reordered = {key: value.index_select(0, new_order) for key, value in encoder_out.items()
                     if key != SOURCE_STATES}
        reordered[SOURCE_STATES] = self.source_encoder.reorder_encoder_out(encoder_out[SOURCE_STATES], new_order)
        return reordered

    def max_positions(self):
        return self.source_encoder.max_positions()


class LatentLSTMDecoder(fairseq_lstm.LSTMDecoder):
    """fairseq's attention LSTMDecoder conditioned on z: z shifts the initial hidden and cell
    state taken from the encoder and is concatenated to the input at every step."""

    def __init__(self, dictionary, latent_dim: int, encoder_output_units: int, num_layers: int,
                 word_dropout_probability: float, **kwargs):
        super().__init__(dictionary, num_layers=num_layers, encoder_output_units=encoder_output_units, **kwargs)
        self.latent_to_state = nn.Linear(latent_dim, 2 * num_layers * encoder_output_units)
        self.word_dropout = word_dropout_probability
        self._protected = [dictionary.pad(), dictionary.eos(), dictionary.bos()]

    def forward(self, prev_output_tokens, encoder_out: Optional[Dict] = None, incremental_state=None,
                features_only: bool = False, **kwargs):
        features, attention = self.extract_features(prev_output_tokens, encoder_out, incremental_state)
        if features_only:
            return features, attention
        return self.output_layer(features), attention

    def output_layer_over(self, features: Tensor, words: Tensor) -> Tensor:
        """``output_layer(features)[..., words]``, computed for those words only (the CVAE
        builds its decoder without fairseq's adaptive softmax)."""
        if self.share_input_output_embed:
            weight, bias = self.embed_tokens.weight, None
        else:
            weight, bias = self.fc_out.weight, self.fc_out.bias
        return nn.functional.linear(features, weight.index_select(0, words),
                                    None if bias is None else bias.index_select(0, words))

    def extract_features(self, prev_output_tokens, encoder_out: Optional[Dict] = None, incremental_state=None):
        latent = encoder_out[LATENT]
        outputs, hiddens, cells, padding_mask = encoder_out[SOURCE_STATES]
        layers, batch, units = hiddens.shape
        shift = self.latent_to_state(latent.to(hiddens.dtype)).view(batch, 2, layers, units).permute(1, 2, 0, 3)
        states = (outputs, hiddens + shift[0], cells + shift[1], padding_mask)
        if self.training and self.word_dropout > 0:
            keep = sum(prev_output_tokens.eq(symbol) for symbol in self._protected).bool()
            prev_output_tokens = word_dropout(prev_output_tokens, self.word_dropout, self.dictionary.unk(), keep)
        with self.embed_tokens.conditioned_on(latent):
            return super().extract_features(prev_output_tokens, states, incremental_state)


@register_model("sentence_cvae")
class SentenceCVAEModel(FairseqEncoderDecoderModel):
    """Source LSTM -> p(z|x); target LSTM -> q(z|x, y); z -> attention LSTM decoder p(y|x, z)."""

    @staticmethod
    def add_args(parser):
        fairseq_lstm.LSTMModel.add_args(parser)  # fairseq lstm's options, with its meanings
        # fmt: off
        parser.add_argument("--latent-dim", type=int, metavar="N", help="size of the latent code z")
        parser.add_argument("--word-dropout", type=float, metavar="P",
                            help="in training, replace each decoder input word with <unk> with "
                                 "probability P (Bowman et al.): the decoder then leans on z")
        parser.add_argument("--prior-draw-fraction", type=float, metavar="F",
                            help="in training, decode a random fraction F of the sentences from "
                                 "z ~ p(z|x) instead of z ~ q(z|x, y) (Sohn et al. 2015's hybrid "
                                 "objective; the KL is still paid for every sentence): the decoder "
                                 "then also learns from the prior's codes, which generation decodes "
                                 "from. 0 = the ELBO alone")
        parser.add_argument("--prior-draw-best-of", type=int, metavar="K",
                            help="with --prior-draw-fraction: each sentence decoded from the prior "
                                 "learns from the best of K draws z ~ p(z|x), the one under which "
                                 "its target is likeliest (hard EM over the prior's codes, as "
                                 "translation_moe's hMoE trains the best expert of each pair), so "
                                 "that different regions of p(z|x) learn different good outputs; "
                                 "costs K forward passes of those sentences. 1 = one draw")
        parser.add_argument("--prior-draw-choice", choices=PRIOR_DRAW_CHOICES, metavar="BY",
                            help="with --prior-draw-best-of K, how the best draw is chosen: "
                                 "'likelihood' (the default), the draw under which the decoder "
                                 "gives the target the highest likelihood (K decoder passes); "
                                 "'posterior', the draw that the recognition network q(z|x, y) "
                                 "gives the highest density (no decoder pass: as fast as one draw); "
                                 "'bag-of-words', the draw under which --bag-of-words-loss's head "
                                 "gives the target's words the highest likelihood (one linear layer "
                                 "a draw, no decoder pass)")
        parser.add_argument("--prior-draw-score-tokens", type=int, metavar="T",
                            help="with --prior-draw-best-of K and the likelihood choice: score the "
                                 "draws on the target's first T tokens only (the decoder's scoring "
                                 "passes run T steps instead of the batch's longest target; the "
                                 "words a code chooses come early). 0 = the whole target")
        parser.add_argument("--prior-draw-score-words", type=int, metavar="N",
                            help="with --prior-draw-best-of K and the likelihood choice: score the "
                                 "draws with a softmax over the scored targets' own words and the "
                                 "target dictionary's N most frequent words instead of the whole "
                                 "vocabulary (Jean et al. 2015's target-vocabulary subset; the same "
                                 "words for every draw, so the ranking of the draws holds: the output "
                                 "layer, most of a scoring pass's cost, shrinks to those words). "
                                 "0 = the whole vocabulary (exact)")
        parser.add_argument("--bag-of-words-loss", type=float, metavar="W",
                            help="Zhao et al. (2017): a linear head predicts the target's words, in "
                                 "any order, from z and the source's summary, and training adds W "
                                 "times its NLL to the loss, so that z holds what the target says "
                                 "beyond the source rather than how the decoder continues it; not "
                                 "part of the ELBO or the reported likelihoods; 0 (the default) "
                                 "builds no head")
        parser.add_argument("--posterior-mean-bn-gamma", type=float, metavar="G",
                            help="BN-VAE is not available for sentence_cvae (its prior is learned); "
                                 "only 0 is accepted")
        # fmt: on

    @classmethod
    def build_model(cls, args, task):
        base_architecture(args)  # fill in any option an older checkpoint lacks
        check_options(args)
        source_dict, target_dict = task.source_dictionary, task.target_dictionary
        source_embed = fairseq_lstm.Embedding(len(source_dict), args.encoder_embed_dim, source_dict.pad())
        target_words = fairseq_lstm.Embedding(len(target_dict), args.decoder_embed_dim, target_dict.pad())
        task_cfg = getattr(task, "cfg", None)
        source_encoder = fairseq_lstm.LSTMEncoder(
            dictionary=source_dict, embed_dim=args.encoder_embed_dim, hidden_size=args.encoder_hidden_size,
            num_layers=args.encoder_layers, dropout_in=args.encoder_dropout_in,
            dropout_out=args.encoder_dropout_out, bidirectional=args.encoder_bidirectional,
            left_pad=bool(getattr(task_cfg, "left_pad_source", True)), pretrained_embed=source_embed,
        )
        # The recognition network reads the target with the decoder's word embeddings.
        target_encoder = fairseq_lstm.LSTMEncoder(
            dictionary=target_dict, embed_dim=args.decoder_embed_dim, hidden_size=args.encoder_hidden_size,
            num_layers=1, dropout_in=args.encoder_dropout_in, dropout_out=args.encoder_dropout_out,
            bidirectional=args.encoder_bidirectional,
            left_pad=bool(getattr(task_cfg, "left_pad_target", False)), pretrained_embed=target_words,
        )
        encoder = ConditionalPriorEncoder(source_encoder, target_encoder, args.latent_dim)
        decoder = LatentLSTMDecoder(
            target_dict,
            latent_dim=args.latent_dim,
            encoder_output_units=source_encoder.output_units,
            num_layers=args.decoder_layers,
            word_dropout_probability=args.word_dropout,
            embed_dim=args.decoder_embed_dim + args.latent_dim,  # [word; z] at every step
            hidden_size=args.decoder_hidden_size,
            out_embed_dim=args.decoder_out_embed_dim,
            dropout_in=args.decoder_dropout_in,
            dropout_out=args.decoder_dropout_out,
            attention=utils.eval_bool(args.decoder_attention),
            pretrained_embed=LatentConditionedEmbedding(target_words, args.latent_dim),
            share_input_output_embed=args.share_decoder_input_output_embed,
        )
        model = cls(encoder, decoder, latent_samples=args.latent_samples, latent_scale=args.latent_scale,
                    latent_candidates=args.latent_candidates, latent_distinct=args.latent_distinct,
                    latent_max_copies=args.latent_max_copies, prior_draw_fraction=args.prior_draw_fraction,
                    prior_draw_best_of=args.prior_draw_best_of, prior_draw_choice=args.prior_draw_choice,
                    prior_draw_score_tokens=args.prior_draw_score_tokens,
                    prior_draw_score_words=args.prior_draw_score_words)
        model.bag_of_words_weight = args.bag_of_words_loss
        if args.bag_of_words_loss > 0:
            model.bag_of_words = BagOfWordsHead(args.latent_dim + source_encoder.output_units, len(target_dict),
                                                ignored_ids=(target_dict.pad(), target_dict.eos()))
        return model

    def __init__(self, encoder, decoder, latent_samples: int = 0, latent_scale: float = 1.0,
                 latent_candidates: int = 0, latent_distinct: bool = False, latent_max_copies: int = 0,
                 prior_draw_fraction: float = 0.0,
                 prior_draw_best_of: int = 1, prior_draw_choice: str = LIKELIHOOD_CHOICE,
                 prior_draw_score_tokens: int = 0, prior_draw_score_words: int = 0):
        super().__init__(encoder, decoder)
        # Generation's choices, set by fairseq-generate --latent-samples / --latent-scale /
        # --latent-candidates / --latent-distinct / --latent-max-copies.
        self.latent_samples = latent_samples
        self.latent_scale = latent_scale
        self.latent_candidates = latent_candidates
        self.latent_distinct = latent_distinct
        self.latent_max_copies = latent_max_copies
        self.prior_draw_fraction = prior_draw_fraction
        self.prior_draw_best_of = prior_draw_best_of
        self.prior_draw_choice = prior_draw_choice
        self.prior_draw_score_tokens = prior_draw_score_tokens
        self.prior_draw_score_words = prior_draw_score_words
        # The update in progress: fairseq's train_step tells every model (set_num_updates),
        # while only some tasks tell the criterion, whose KL schedule needs it.
        self.num_updates = 0

    def set_num_updates(self, num_updates):
        self.num_updates = num_updates
        super().set_num_updates(num_updates)

    @property
    def latent_dim(self) -> int:
        return self.encoder.latent_dim

    @classmethod
    def from_pretrained(cls, model_name_or_path, checkpoint_file="checkpoint_best.pt",
                        data_name_or_path=".", **kwargs):
        """Load a trained model as a :class:`~fairseq_svae.conditional_hub_interface.ConditionalVAEHubInterface`
        (``translate(sentences, n=5)``)."""
        from fairseq_svae.conditional_hub_interface import ConditionalVAEHubInterface

        return ConditionalVAEHubInterface.from_pretrained(model_name_or_path, checkpoint_file,
                                                          data_name_or_path, **kwargs)

    def forward(self, src_tokens, src_lengths, prev_output_tokens, sample_latent: bool = True,
                features_only: bool = False, **kwargs):
        """The ELBO's forward: z ~ q(z|x, y), one reparameterized draw (``sample_latent=False``:
        q's mean; in training, ``--prior-draw-fraction`` of the sentences draw z ~ p(z|x) instead).
        Returns the decoder output and a dict that also holds the posterior's and the prior's mean
        and log-variance for the KL term."""
        encoder_out = self.encoder(src_tokens, src_lengths)
        posterior_mean, posterior_logvar = self.encoder.posterior(encoder_out, prev_output_tokens)
        latent = reparameterize(posterior_mean, posterior_logvar) if sample_latent else posterior_mean
        if self.training and self.prior_draw_fraction > 0:
            from_prior = torch.rand(latent.size(0), 1, device=latent.device) < self.prior_draw_fraction
            prior_draw = reparameterize(encoder_out[PRIOR_MEAN], encoder_out[PRIOR_LOGVAR])
            if self.prior_draw_best_of > 1 and from_prior.any():
                rows = from_prior.squeeze(1).nonzero().squeeze(1)
                if self.prior_draw_choice == POSTERIOR_CHOICE:
                    best = self.prior_draws_likeliest_under_posterior(
                        encoder_out, posterior_mean, posterior_logvar, rows)
                elif self.prior_draw_choice == BAG_OF_WORDS_CHOICE:
                    best = self.prior_draws_best_for_bag_of_words(encoder_out, prev_output_tokens, rows)
                else:
                    best = self.best_prior_draws(encoder_out, prev_output_tokens, rows)
                prior_draw = prior_draw.index_copy(0, rows, best)
            latent = torch.where(from_prior, prior_draw, latent)
        encoder_out = dict(encoder_out, **{LATENT: latent})
        output, attention = self.decoder(prev_output_tokens, encoder_out=encoder_out, features_only=features_only)
        extra = {
            "attn": attention,
            POSTERIOR_MEAN: posterior_mean,
            POSTERIOR_LOGVAR: posterior_logvar,
            PRIOR_MEAN: encoder_out[PRIOR_MEAN],
            PRIOR_LOGVAR: encoder_out[PRIOR_LOGVAR],
        }
        if getattr(self, "bag_of_words", None) is not None:
            # From the z the decoder reads (q's draw, or the prior's for --prior-draw-fraction's
            # sentences); the target's words are prev_output_tokens' but for end-of-sentence.
            summary = final_summary(encoder_out[SOURCE_STATES][1])
            extra[BAG_OF_WORDS_NLL] = self.bag_of_words.nll(bag_of_words_input(latent, summary), prev_output_tokens)
        return output, extra

    def best_prior_draws(self, encoder_out: Dict, prev_output_tokens: Tensor, rows: Tensor) -> Tensor:
        """For each sentence in ``rows``, of K = ``prior_draw_best_of`` draws z ~ p(z|x) the one
        under which the decoder gives the sentence's target the highest likelihood
        (reparameterized: the chosen draw still trains the prior). The K x rows scoring passes
        run without gradients."""
        draws = self.prior_draw_best_of
        candidates = self.prior_candidates(encoder_out, rows)  # K x R x D
        pad, eos = self.decoder.dictionary.pad(), self.decoder.dictionary.eos()
        # Scored as generation would decode them: without dropout (fairseq's translation_moe
        # also assigns each pair to its expert in eval mode).
        with torch.no_grad(), utils.model_eval(self.decoder):
            repeated_rows = rows.repeat(draws)  # draw k of row r at k * R + r
            scored_out = self.encoder.reorder_encoder_out(encoder_out, repeated_rows)
            scored_out[LATENT] = candidates.detach().reshape(-1, candidates.size(-1))
            inputs = prev_output_tokens.index_select(0, repeated_rows)
            targets = targets_of(inputs, pad, eos)
            if self.prior_draw_score_tokens:
                inputs, targets = inputs[:, :self.prior_draw_score_tokens], targets[:, :self.prior_draw_score_tokens]
            features, _ = self.decoder(inputs, encoder_out=scored_out, features_only=True)
            is_token = targets.ne(pad)
            scored_features, scored_targets = features[is_token], targets[is_token]
            if self.prior_draw_score_words:
                words = scoring_words(scored_targets, self.prior_draw_score_words, self.decoder.dictionary)
                logits = self.decoder.output_layer_over(scored_features, words)
                scored_targets = torch.searchsorted(words, scored_targets)  # each target's column
            else:
                logits = self.decoder.output_layer(scored_features)
            nll = features.new_zeros(targets.shape, dtype=torch.float)
            nll[is_token] = token_nll(logits, scored_targets)
            best = nll.sum(dim=1).view(draws, rows.numel()).argmin(dim=0)  # R
        return candidates[best, torch.arange(rows.numel(), device=rows.device)]

    def prior_draws_likeliest_under_posterior(self, encoder_out: Dict, posterior_mean: Tensor,
                                              posterior_logvar: Tensor, rows: Tensor) -> Tensor:
        """For each sentence in ``rows``, of K = ``prior_draw_best_of`` draws z ~ p(z|x) the one
        to which the recognition network q(z|x, y) gives the highest density: the prior's code
        nearest to what q reads from the target (a draw of p, resampled towards q), chosen
        without a decoder pass. The choice takes no gradient; the chosen draw stays
        reparameterized, so it still trains the prior."""
        candidates = self.prior_candidates(encoder_out, rows)  # K x R x D
        with torch.no_grad():
            log_q = gaussian_log_density(candidates, posterior_mean.index_select(0, rows),
                                         posterior_logvar.index_select(0, rows))  # K x R
            best = log_q.argmax(dim=0)
        return candidates[best, torch.arange(rows.numel(), device=rows.device)]

    def prior_draws_best_for_bag_of_words(self, encoder_out: Dict, prev_output_tokens: Tensor,
                                          rows: Tensor) -> Tensor:
        """For each sentence in ``rows``, of K = ``prior_draw_best_of`` draws z ~ p(z|x) the one
        under which the bag-of-words head gives the target's words the highest likelihood: the
        decoder's choice approximated by what z says about the target's words, one linear layer
        a draw instead of a decoder pass. The choice takes no gradient; the chosen draw stays
        reparameterized, so it still trains the prior."""
        draws = self.prior_draw_best_of
        candidates = self.prior_candidates(encoder_out, rows)  # K x R x D
        with torch.no_grad():
            summary = final_summary(encoder_out[SOURCE_STATES][1]).index_select(0, rows)
            features = bag_of_words_input(candidates, summary)  # K x R x (D + units)
            tokens = prev_output_tokens.index_select(0, rows).repeat(draws, 1)  # draw k of row r at k * R + r
            nll = self.bag_of_words.sentence_nll(features.reshape(draws * rows.numel(), -1), tokens)
            best = nll.view(draws, rows.numel()).argmin(dim=0)  # R
        return candidates[best, torch.arange(rows.numel(), device=rows.device)]

    def prior_candidates(self, encoder_out: Dict, rows: Tensor) -> Tensor:
        """K = ``prior_draw_best_of`` reparameterized draws z ~ p(z|x) for each sentence in ``rows``: K x R x D."""
        draws = self.prior_draw_best_of
        mean, logvar = encoder_out[PRIOR_MEAN].index_select(0, rows), encoder_out[PRIOR_LOGVAR].index_select(0, rows)
        return reparameterize(mean.expand(draws, -1, -1), logvar.expand(draws, -1, -1))


def bag_of_words_input(latent: Tensor, summary: Tensor) -> Tensor:
    """[z; the source's summary], what the CVAE's bag-of-words head reads (``latent``: B x D, or
    K x B x D for K draws of each of the B sentences; ``summary``: B x units)."""
    summary = summary.to(latent.dtype).expand(*latent.shape[:-1], -1)
    return torch.cat([latent, summary], dim=-1)


def scoring_words(targets: Tensor, frequent: int, dictionary) -> Tensor:
    """The words whose softmax scores the draws for ``--prior-draw-score-words N``, sorted: the
    targets' own words and the dictionary's N most frequent (fairseq-preprocess orders a
    dictionary by frequency after its special symbols). The frequent words carry most of the
    probability mass that the targets' words leave, so the softmax's normalizer stays close to
    the whole vocabulary's, and alike for every draw."""
    first = dictionary.nspecial
    frequent_words = torch.arange(first, min(first + frequent, len(dictionary)), device=targets.device)
    return torch.unique(torch.cat([targets, frequent_words]))


def targets_of(prev_output_tokens: Tensor, pad: int, eos: int) -> Tensor:
    """The targets that fairseq's translation batches pair with ``prev_output_tokens`` (the
    target moved one step right, starting with end-of-sentence, padded on the right): the same
    tokens one step left, ending with end-of-sentence."""
    lengths = prev_output_tokens.ne(pad).long().sum(dim=1)
    padding = prev_output_tokens.new_full((prev_output_tokens.size(0), 1), pad)
    targets = torch.cat([prev_output_tokens[:, 1:], padding], dim=1)
    return targets.scatter(1, (lengths - 1).unsqueeze(1), eos)


def is_conditional_vae(model) -> bool:
    return isinstance(model, SentenceCVAEModel)


# The one check of each generation-time option (fairseq-generate's parser, the model's options,
# the generator and the hub all call these).
def check_latent_samples(samples: int) -> None:
    """--latent-samples N, once asked for."""
    if samples < 1:
        raise OptionError(f"--latent-samples must be at least 1, got {samples}")


def check_latent_scale(scale: float) -> None:
    """--latent-scale S (the hub's ``latent_scale``)."""
    if not scale > 0:
        raise OptionError(f"--latent-scale must be > 0, got {scale} (the prior mean alone: leave out "
                          f"--latent-samples)")


# --latent-candidates' default: N outputs are chosen among 4N draws. Five draws of the Multi30k
# CVAE repeat an output for 73% of the sources (one output five times for 8%); twenty draws give
# five different outputs for 80%; the most frequent is the better output (30.1 BLEU against a
# single draw's 28.3) and the five are more different (examples/multi30k/README.md).
CANDIDATES_PER_OUTPUT = 4


def latent_draws(samples: int, candidates: int = 0) -> int:
    """How many z ~ p(z|x) are decoded for N = ``samples`` outputs (``candidates`` = 0: the default)."""
    return candidates or CANDIDATES_PER_OUTPUT * samples


def check_latent_candidates(candidates: int, samples: int) -> None:
    """--latent-candidates M against --latent-samples N (M = 0: the default, 4N)."""
    if candidates < 0 or (candidates and candidates < samples):
        raise OptionError(f"--latent-candidates ({candidates}) must be at least --latent-samples ({samples}): "
                          f"the N outputs are chosen among the outputs of M draws")


def check_latent_max_copies(max_copies: int, candidates: int, samples: int) -> None:
    """--latent-max-copies C (0: each output up to its share of the N) against --latent-samples N
    and --latent-candidates M."""
    if max_copies < 0:
        raise OptionError(f"--latent-max-copies must be >= 0 (0: each output up to its share of the N), got {max_copies}")
    if max_copies and candidates == samples:
        raise OptionError(f"--latent-max-copies (and --latent-distinct, which is 1) choose the N outputs "
                          f"among more draws than N; with "
                          f"--latent-candidates {candidates} = --latent-samples {samples} each draw gives one "
                          f"output: leave out --latent-candidates (4N draws) or raise it")


def check_options(args) -> None:
    if args.latent_dim < 1:
        raise OptionError(f"--latent-dim must be at least 1, got {args.latent_dim}")
    if not 0.0 <= args.word_dropout <= 1.0:
        raise OptionError(f"--word-dropout must be in [0, 1], got {args.word_dropout}")
    if not 0.0 <= args.prior_draw_fraction <= 1.0:
        raise OptionError(f"--prior-draw-fraction must be in [0, 1], got {args.prior_draw_fraction}")
    if args.prior_draw_best_of < 1:
        raise OptionError(f"--prior-draw-best-of must be at least 1, got {args.prior_draw_best_of}")
    if args.prior_draw_best_of > 1 and args.prior_draw_fraction == 0:
        raise OptionError(f"--prior-draw-best-of {args.prior_draw_best_of} chooses among the draws of "
                          f"--prior-draw-fraction, which is 0; add --prior-draw-fraction F (e.g. 0.25)")
    if args.prior_draw_score_tokens < 0:
        raise OptionError(f"--prior-draw-score-tokens must be >= 0 (0: the whole target), got {args.prior_draw_score_tokens}")
    if args.prior_draw_score_words < 0:
        raise OptionError(f"--prior-draw-score-words must be >= 0 (0: the whole vocabulary), got {args.prior_draw_score_words}")
    if args.prior_draw_choice not in PRIOR_DRAW_CHOICES:
        raise OptionError(f"--prior-draw-choice must be one of {', '.join(PRIOR_DRAW_CHOICES)}, "
                          f"got {args.prior_draw_choice!r}")
    check_bag_of_words_loss(args.bag_of_words_loss)
    if args.prior_draw_choice == BAG_OF_WORDS_CHOICE and args.bag_of_words_loss == 0:
        raise OptionError(f"--prior-draw-choice {BAG_OF_WORDS_CHOICE} chooses by the bag-of-words head, "
                          f"which --bag-of-words-loss 0 does not build; add --bag-of-words-loss W (e.g. 1)")
    if args.latent_samples < 0:
        raise OptionError(f"--latent-samples must be >= 0, got {args.latent_samples}")
    check_latent_scale(args.latent_scale)
    check_latent_candidates(args.latent_candidates, args.latent_samples)
    check_latent_max_copies(args.latent_max_copies, args.latent_candidates, args.latent_samples)
    if args.posterior_mean_bn_gamma:
        raise OptionError(
            f"--posterior-mean-bn-gamma {args.posterior_mean_bn_gamma}: BN-VAE is not available for "
            f"--arch sentence_cvae (its KL is against a learned prior, which BN-VAE's floor does not "
            f"bound); keep the KL up with --free-bits or --target-kl instead")
    if args.encoder_layers != args.decoder_layers:
        raise OptionError(f"--encoder-layers ({args.encoder_layers}) must equal --decoder-layers "
                          f"({args.decoder_layers}): each decoder layer starts from its encoder layer's state")
    if args.share_all_embeddings:
        raise OptionError("--share-all-embeddings is not available for sentence_cvae (the source and "
                          "target dictionaries are separate); use --share-decoder-input-output-embed")
    if args.share_decoder_input_output_embed and args.decoder_embed_dim != args.decoder_out_embed_dim:
        raise OptionError(
            f"--share-decoder-input-output-embed needs --decoder-out-embed-dim ({args.decoder_out_embed_dim}) "
            f"equal to --decoder-embed-dim ({args.decoder_embed_dim})")
    if args.encoder_embed_path or args.decoder_embed_path:
        raise OptionError("--encoder-embed-path / --decoder-embed-path are not available for sentence_cvae")


@register_model_architecture("sentence_cvae", "sentence_cvae")
def base_architecture(args):
    fairseq_lstm.base_architecture(args)  # fairseq lstm's sizes and dropouts: one home for them
    args.latent_dim = getattr(args, "latent_dim", 32)
    args.word_dropout = getattr(args, "word_dropout", 0.0)
    # Generation only: fairseq-generate --latent-samples N, --latent-scale S, --latent-candidates
    # M, --latent-distinct and --latent-max-copies C set them (see generation.latent_samples; 0
    # candidates, 0 copies: the defaults).
    args.latent_samples = getattr(args, "latent_samples", 0)
    args.latent_scale = getattr(args, "latent_scale", 1.0)
    args.latent_candidates = getattr(args, "latent_candidates", 0)
    args.latent_distinct = getattr(args, "latent_distinct", False)
    args.latent_max_copies = getattr(args, "latent_max_copies", 0)
    args.prior_draw_fraction = getattr(args, "prior_draw_fraction", 0.0)
    args.prior_draw_best_of = getattr(args, "prior_draw_best_of", 1)
    args.prior_draw_choice = getattr(args, "prior_draw_choice", LIKELIHOOD_CHOICE)
    args.prior_draw_score_tokens = getattr(args, "prior_draw_score_tokens", 0)
    args.prior_draw_score_words = getattr(args, "prior_draw_score_words", 0)
    args.bag_of_words_loss = getattr(args, "bag_of_words_loss", 0.0)
    args.posterior_mean_bn_gamma = getattr(args, "posterior_mean_bn_gamma", 0.0)
