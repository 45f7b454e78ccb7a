"""The bag-of-words loss of Zhao, Zhao & Eskenazi (2017): z must predict the sentence's words in
any order.

A linear head maps z to one distribution over the vocabulary, and the loss is the negative
log-likelihood of every word of the sentence under it (its end-of-sentence and padding left out),
summed per sentence. The decoder can predict the next word from the words before it, and so
learns to need z only for what those words do not already say; this loss asks z for the content
itself, whatever the word order, which is what paraphrases of one thing share. It is an extra
training term (``--bag-of-words-loss W``, weight W), not part of the ELBO: the reported negative
ELBO, the IW-NLL and validation stay the model's likelihood figures.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fairseq_svae.errors import OptionError

# The key of the decoder's extra output that holds the batch's summed bag-of-words NLL (nats).
BAG_OF_WORDS_NLL = "bag_of_words_nll"


def check_bag_of_words_loss(weight: float) -> None:
    """--bag-of-words-loss W, for every model that has it."""
    if weight < 0:
        raise OptionError(f"--bag-of-words-loss must be >= 0, got {weight}")


class BagOfWordsHead(nn.Module):
    """z -> log p(word) over the vocabulary, one distribution per sentence (a conditional VAE's
    head reads z beside the source's summary, as Zhao et al.'s reads z beside the context)."""

    def __init__(self, input_dim: int, vocabulary: int, ignored_ids):
        super().__init__()
        self.projection = nn.Linear(input_dim, vocabulary)
        self.ignored_ids = tuple(ignored_ids)

    def sentence_nll(self, features: Tensor, tokens: Tensor) -> Tensor:
        """Each sentence's summed NLL (B) of ``tokens`` (B x T ids) under its word distribution
        from ``features`` (B x input_dim), in fp32 (a log-softmax over the vocabulary)."""
        logits = self.projection(features.to(self.projection.weight.dtype))  # (a half model under --fp16)
        log_probs = F.log_softmax(logits.float(), dim=-1)
        counted = torch.ones_like(tokens, dtype=torch.bool)
        for ignored in self.ignored_ids:
            counted &= tokens.ne(ignored)
        return -(log_probs.gather(1, tokens) * counted).sum(dim=1)

    def nll(self, features: Tensor, tokens: Tensor) -> Tensor:
        """The batch's summed NLL (see :meth:`sentence_nll`)."""
        return self.sentence_nll(features, tokens).sum()
