"""``--sample-from-prior``: numbered placeholders for fairseq-generate's batch loop.

Nothing is read from disk: item ``i`` is just the id whose z the generator draws (from the
stream of (``--seed``, i)). fairseq-generate prints the H-/D-/P- lines of each, and no S-/T-
lines since there is no source and no reference.
"""

import numpy as np
import torch
from fairseq.data import FairseqDataset

from fairseq_svae.data.every_sentence_batching import EverySentenceBatching
from fairseq_svae.errors import OptionError
from fairseq_svae.generation.latent_sequence_generator import latent_batch

# fairseq batches by --max-tokens (12,000 by default in fairseq-generate) counted on the
# source. A prior sample has none; counting each as a typical 20-word sentence plus </s> gives
# batches of about 570 samples by default, large enough to keep the vocabulary projection
# efficient and small enough for beam search's (batch x beam x vocabulary) scores.
# --batch-size N sets the batch exactly.
NOMINAL_SAMPLE_TOKENS = 21


class PriorSamplesDataset(EverySentenceBatching, FairseqDataset):
    def __init__(self, num_samples: int, eos: int):
        if num_samples < 1:
            raise OptionError(f"--prior-samples must be at least 1, got {num_samples}")
        self.eos = eos
        self.sizes = np.full(num_samples, NOMINAL_SAMPLE_TOKENS, dtype=np.int64)

    def __getitem__(self, index):
        return index

    def __len__(self):
        return len(self.sizes)

    def num_tokens(self, index):
        return int(self.sizes[index])

    def num_tokens_vec(self, indices):
        return self.sizes[indices]

    def size(self, index):
        return int(self.sizes[index])

    def ordered_indices(self):
        return np.arange(len(self), dtype=np.int64)

    def filter_indices_by_size(self, indices, max_positions):
        # There is no sentence to be too long; --max-len-b bounds what is generated.
        return indices, []

    def collater(self, samples):
        return latent_batch(torch.tensor(samples, dtype=torch.long), self.eos)
