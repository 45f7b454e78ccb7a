"""The generative network p(x|z): an LSTM language model whose initial state comes from z."""

from typing import Dict, Optional

import torch
import torch.nn as nn
from fairseq.models import FairseqIncrementalDecoder
from torch import Tensor

from fairseq_svae.errors import OptionError
from fairseq_svae.models.dropout import Dropout
from fairseq_svae.models.sentence_vae_encoder import LATENT
from fairseq_svae.precision import full_precision, recurrent_precision


def word_dropout(tokens: Tensor, probability: float, unk: int, keep: Tensor) -> Tensor:
    """Replace each token with ``unk`` with the given probability, except where ``keep`` is True.

    Bowman et al. (2016): weakening the decoder's view of the previous words forces it to rely
    on z. ``probability`` = 1 gives their inputless decoder.
    """
    if probability <= 0:
        return tokens
    dropped = torch.rand(tokens.shape, device=tokens.device) < probability
    return tokens.masked_fill(dropped & ~keep, unk)


class SentenceVAEDecoder(FairseqIncrementalDecoder):
    """Predicts ``w_1 .. w_n </s>`` from ``</s> w_1 .. w_n`` and z.

    z sets the initial hidden and cell state of every layer (Bowman et al. 2016); with
    ``feed_latent`` it is also concatenated to the input at every step. Training runs one fused
    ``nn.LSTM`` call over the whole sequence; generation carries (h, c) in fairseq's
    incremental state, so each step costs one LSTM step.
    """

    def __init__(self, dictionary, embed_tokens: nn.Embedding, hidden_size: int, num_layers: int,
                 latent_dim: int, out_embed_dim: int, dropout: float, word_dropout: float,
                 feed_latent: bool, share_input_output_embed: bool):
        super().__init__(dictionary)
        self.embed_tokens = embed_tokens
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.word_dropout = word_dropout
        self.feed_latent = feed_latent
        self.dropout_module = Dropout(dropout, module_name=self.__class__.__name__)
        input_size = embed_tokens.embedding_dim + (latent_dim if feed_latent else 0)
        self.lstm = nn.LSTM(
            input_size=input_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.latent_to_state = nn.Linear(latent_dim, 2 * num_layers * hidden_size)
        self.project_out = (
            nn.Linear(hidden_size, out_embed_dim, bias=False) if out_embed_dim != hidden_size else None
        )
        self.share_input_output_embed = share_input_output_embed
        if share_input_output_embed:
            if out_embed_dim != embed_tokens.embedding_dim:
                raise OptionError(
                    f"--share-decoder-input-output-embed needs --decoder-out-embed-dim "
                    f"({out_embed_dim}) equal to --decoder-embed-dim ({embed_tokens.embedding_dim})"
                )
            self.output_projection = None
        else:
            self.output_projection = nn.Linear(out_embed_dim, len(dictionary))
        self._protected = [dictionary.pad(), dictionary.eos(), dictionary.bos()]
        self._unk = dictionary.unk()

    def initial_state(self, latent: Tensor):
        """(h0, c0), each layers x B x H, from z."""
        batch = latent.size(0)
        dtype = self.latent_to_state.weight.dtype
        state = self.latent_to_state(latent.to(dtype))
        state = state.view(batch, 2, self.num_layers, self.hidden_size).permute(1, 2, 0, 3)
        return state[0].contiguous(), state[1].contiguous()

    def forward(self, prev_output_tokens, encoder_out=None, incremental_state=None,
                features_only: bool = False, **kwargs):
        features, extra = self.extract_features(prev_output_tokens, encoder_out, incremental_state)
        if features_only:
            return features, extra
        return self.output_layer(features), extra

    def extract_features(self, prev_output_tokens: Tensor, encoder_out: Dict[str, Optional[Tensor]],
                         incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
                         **kwargs):
        """Decoder features, B x T x out_embed_dim (before the vocabulary projection)."""
        latent = encoder_out[LATENT]
        cached = self.get_incremental_state(incremental_state, "cached_state") if incremental_state is not None else None
        if cached is not None:
            prev_output_tokens = prev_output_tokens[:, -1:]
            state = (cached["hidden"], cached["cell"])
        else:
            with full_precision():
                state = self.initial_state(latent)

        tokens = prev_output_tokens
        if self.training and self.word_dropout > 0:
            keep = sum(tokens.eq(symbol) for symbol in self._protected).bool()
            tokens = word_dropout(tokens, self.word_dropout, self._unk, keep)

        # Time-major end to end: the embedding lookup of the transposed ids is already the
        # T x B x C layout that nn.LSTM wants, so there is no copy.
        x = self.dropout_module(self.embed_tokens(tokens.t()))
        if self.feed_latent:
            steps = x.size(0)
            x = torch.cat([x, latent.to(x.dtype).unsqueeze(0).expand(steps, -1, -1)], dim=-1)
        with recurrent_precision():  # bf16 where the hardware has a bf16 LSTM (fairseq_svae.precision)
            x, (hidden, cell) = self.lstm(x, state)

        if incremental_state is not None:
            self.set_incremental_state(incremental_state, "cached_state", {"hidden": hidden, "cell": cell})

        x = self.dropout_module(x.transpose(0, 1))
        if self.project_out is not None:
            x = self.project_out(x)
        return x, {"attn": None}

    def output_layer(self, features: Tensor) -> Tensor:
        """Vocabulary logits; callers pass only the positions whose logits they need."""
        if self.output_projection is None:
            return nn.functional.linear(features, self.embed_tokens.weight)
        return self.output_projection(features)

    def reorder_incremental_state(self, incremental_state, new_order: Tensor):
        cached = self.get_incremental_state(incremental_state, "cached_state")
        if cached is None:
            return
        reordered = {key: value.index_select(1, new_order) for key, value in cached.items()}
        self.set_incremental_state(incremental_state, "cached_state", reordered)

    def max_positions(self):
        return int(1e5)  # an LSTM has no positional limit; the task bounds sentence length
