"""The inference network q(z|x): an LSTM over the sentence whose final state gives a diagonal Gaussian."""

from typing import Dict, Optional

import torch
import torch.nn as nn
from fairseq.models import FairseqEncoder
from torch import Tensor

from fairseq_svae.gaussian import clamp_logvar, reparameterize
from fairseq_svae.models.dropout import Dropout
from fairseq_svae.precision import full_precision, recurrent_precision

# Keys of the encoder output. Every value is a (batch, latent_dim) tensor or None, which keeps
# ``reorder_encoder_out`` a single loop. LATENT, the z the decoder is conditioned on, is also
# the keyword of ``forward`` (and so the ``net_input`` key) that supplies z instead of a sentence.
POSTERIOR_MEAN = "posterior_mean"
POSTERIOR_LOGVAR = "posterior_logvar"
LATENT = "latent"


class SentenceVAEEncoder(FairseqEncoder):
    """Reads ``w_1 .. w_n </s>`` with a (possibly bidirectional, multi-layer) LSTM.

    The last layer's final hidden state(s) are projected to the mean and log-variance of q(z|x).
    The encoder never sees word dropout: it must describe the sentence the decoder is asked to
    reconstruct, and corrupting its input would only make q(z|x) less informative.
    """

    def __init__(self, dictionary, embed_tokens: nn.Embedding, hidden_size: int, num_layers: int,
                 bidirectional: bool, latent_dim: int, dropout: float, mean_bn_gamma: float = 0.0,
                 mean_bn_population_statistics: bool = False):
        super().__init__(dictionary)
        self.embed_tokens = embed_tokens
        self.dropout_module = Dropout(dropout, module_name=self.__class__.__name__)
        self.lstm = nn.LSTM(
            input_size=embed_tokens.embedding_dim,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        self.num_directions = 2 if bidirectional else 1
        # One projection gives both halves: mean and log-variance.
        self.to_posterior = nn.Linear(hidden_size * self.num_directions, 2 * latent_dim)
        self.latent_dim = latent_dim
        self.mean_norm = (
            PosteriorMeanNorm(latent_dim, mean_bn_gamma, mean_bn_population_statistics)
            if mean_bn_gamma > 0 else None
        )

    def posterior(self, src_tokens: Tensor, src_lengths: Tensor):
        """Mean and (clamped, fp32) log-variance of q(z|x) for right-padded ``src_tokens``."""
        embedded = self.dropout_module(self.embed_tokens(src_tokens.t()))  # T x B x C
        with recurrent_precision():  # bf16 where the hardware has a bf16 LSTM (fairseq_svae.precision)
            if self.num_directions == 1:
                # One direction: the top layer's output at a sentence's last word is its final
                # hidden state, and the padding after it cannot change it, so the LSTM runs
                # unpacked: one oneDNN call, which runs in bf16 under --bf16-autocast (torch
                # runs a packed sequence in fp32 whatever the autocast) and is faster in fp32 too.
                outputs, _ = self.lstm(embedded)
                summary = outputs[src_lengths - 1, torch.arange(outputs.size(1), device=outputs.device)]
            else:
                packed = nn.utils.rnn.pack_padded_sequence(embedded, src_lengths.cpu(), enforce_sorted=False)
                _, (final_hidden, _) = self.lstm(packed)
                # final_hidden: (layers * directions) x B x H; keep the last layer, all directions.
                summary = torch.cat(list(final_hidden[-self.num_directions:]), dim=-1)
        # fp32 even under --bf16-autocast: the head whose mean and log-variance set the KL.
        with full_precision():
            # (the LSTM's bf16 output under the autocast, into the head's own dtype: fp32, or
            # half for a --fp16 model)
            summary = self.dropout_module(summary.to(self.to_posterior.weight.dtype))
            mean, logvar = self.to_posterior(summary).chunk(2, dim=-1)
            if self.mean_norm is not None:
                mean = self.mean_norm(mean.float())
        return mean.float(), clamp_logvar(logvar)

    def forward(self, src_tokens: Tensor, src_lengths: Tensor, sample_latent: bool = False,
                latent: Optional[Tensor] = None) -> Dict[str, Optional[Tensor]]:
        """Encode a batch.

        - ``sample_latent=False`` (what fairseq's generator gets): z is the posterior mean, so
          reconstruction is deterministic.
        - ``sample_latent=True``: z ~ q(z|x) by the reparameterization trick (the ELBO).
        - ``latent`` given: the sentence is not read; the decoder is conditioned on this z
          (prior samples, interpolation, latent arithmetic).
        """
        if latent is not None:
            return {POSTERIOR_MEAN: None, POSTERIOR_LOGVAR: None, LATENT: latent.float()}
        mean, logvar = self.posterior(src_tokens, src_lengths)
        z = reparameterize(mean, logvar) if sample_latent else mean
        return {POSTERIOR_MEAN: mean, POSTERIOR_LOGVAR: logvar, LATENT: z}

    def reorder_encoder_out(self, encoder_out: Dict[str, Optional[Tensor]], new_order: Tensor):
        return {
            key: None if value is None else value.index_select(0, new_order)
            for key, value in encoder_out.items()
        }

    def max_positions(self):
        return int(1e5)  # an LSTM has no positional limit; the task bounds sentence length


# The smallest standard deviation PosteriorMeanNorm divides by: it only keeps a dimension whose
# means are all equal from dividing by zero. It is not batch norm's epsilon (1e-5) added to the
# variance: with that, raw means whose variance falls below 1e-5 give codes that shrink with
# them, and Adam, which scales even a tiny gradient up to a full step, follows the KL's pull
# there. With a fast KL annealing (examples/brown/train.sh: weight 1 after 300 updates) the
# encoder did so within 300 updates and the KL fell to 0.006 nats, through the floor.
# Divided by the variance itself, the code does not depend on the raw means' scale at all.
MIN_STD = 1e-6


def std_of(variance: Tensor) -> Tensor:
    return variance.clamp(min=MIN_STD ** 2).sqrt()  # clamped before sqrt: a finite gradient at 0


class PosteriorMeanNorm(nn.Module):
    """BN-VAE (Zhu et al. 2020): batch normalization of the posterior mean with a fixed scale.

    Each dimension of the mean becomes gamma * (mean - batch mean) / batch std + beta, with
    gamma fixed and beta learned. Over the data the squared mean of a dimension is then
    gamma^2 + beta^2, and since the variance terms of the Gaussian KL are never negative,
    the expected KL of each dimension is at least gamma^2 / 2: the posterior cannot collapse to
    the prior, whatever the decoder does. gamma = 0.7 on 32 dimensions is the paper's Yahoo
    setting (a floor of 7.8 nats); on 13 dimensions gamma = 1 gives a floor of 6.5.

    Outside training, and for a training batch of one sentence (which has no batch
    statistics), the running statistics are used, so a sentence encodes the same way
    whatever batch it comes in.

    fairseq batches sentences of similar length together, so plain batch statistics are those
    of one length: training removes each batch's own mean (and with it what z could say about
    length), while the running statistics, averages of per-batch means and variances, leave the
    spread between lengths in. Scored sentences then get codes more spread out than any
    training batch's: early in training markedly so (at gamma 1.3 after 1,600 updates on Brown, a
    valid KL of 29 nats against 11.5 in training), at the end of a run little (7.00 against 6.93
    at gamma 1.0 without encoder dropout).
    ``population_statistics`` normalizes with estimates of the whole data's mean and variance
    in training too (batch renormalization, Ioffe 2017): the value is
    (mean - population mean) / population std, the same map as outside training, while the
    gradient is batch normalization's, so the encoder still cannot shrink the code below the
    floor. The estimates are moving averages of the batches' first and second moments over
    about 1 / POPULATION_MOMENTUM batches, long enough to span many lengths.
    """

    POPULATION_MOMENTUM = 0.01

    def __init__(self, latent_dim: int, gamma: float, population_statistics: bool = False):
        super().__init__()
        self.gamma = gamma
        self.population_statistics = population_statistics
        self.norm = nn.BatchNorm1d(latent_dim, affine=False)
        self.shift = nn.Parameter(torch.zeros(latent_dim))

    def forward(self, mean: Tensor) -> Tensor:
        if not (self.training and mean.size(0) > 1):
            running_mean, running_var = self.norm.running_mean.float(), self.norm.running_var.float()
            return self.gamma * (mean - running_mean) / std_of(running_var) + self.shift
        batch_mean, batch_var = mean.mean(dim=0), mean.var(dim=0, unbiased=False)
        batch_std = std_of(batch_var)
        normalized = (mean - batch_mean) / batch_std
        if self.population_statistics:
            normalized = self._renormalize(normalized, batch_mean, batch_var, batch_std)
        else:
            self._update_running_statistics(batch_mean, batch_var, mean.size(0))
        self.norm.num_batches_tracked.add_(1)
        return self.gamma * normalized + self.shift

    @torch.no_grad()
    def _update_running_statistics(self, batch_mean: Tensor, batch_var: Tensor, batch_size: int) -> None:
        """Update the running statistics as BatchNorm1d does (its momentum, the unbiased variance)."""
        unbiased_var = batch_var * (batch_size / (batch_size - 1))
        self.norm.running_mean.lerp_(batch_mean.to(self.norm.running_mean), self.norm.momentum)
        self.norm.running_var.lerp_(unbiased_var.to(self.norm.running_var), self.norm.momentum)

    def _renormalize(self, normalized: Tensor, batch_mean: Tensor, batch_var: Tensor, batch_std: Tensor) -> Tensor:
        """Fold a batch into the population estimates and carry its batch-normalized code to the
        population-normalized one (batch renormalization: the value of the population map, batch
        normalization's gradient, since the scale and offset are constants)."""
        with torch.no_grad():
            running_mean, running_var = self.norm.running_mean, self.norm.running_var
            if int(self.norm.num_batches_tracked) == 0:
                # The first batch replaces BatchNorm's placeholder (mean 0, variance 1).
                running_mean.copy_(batch_mean)
                running_var.copy_(batch_var)
            else:
                rate = self.POPULATION_MOMENTUM
                second_moment = running_var + running_mean.pow(2)
                batch_second_moment = batch_var + batch_mean.pow(2)
                running_mean.lerp_(batch_mean.to(running_mean), rate)
                second_moment.lerp_(batch_second_moment.to(second_moment), rate)
                running_var.copy_((second_moment - running_mean.pow(2)).clamp(min=0))
            population_std = std_of(running_var.float())
            scale = batch_std / population_std
            offset = (batch_mean - running_mean.float()) / population_std
        return normalized * scale + offset

    def extra_repr(self) -> str:
        statistics = "population" if self.population_statistics else "batch"
        return f"gamma={self.gamma}, training statistics={statistics}"
