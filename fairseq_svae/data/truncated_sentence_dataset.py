import numpy as np
import torch
from fairseq.data import BaseWrapperDataset


class TruncatedSentenceDataset(BaseWrapperDataset):
    """Keeps the first ``max_words`` tokens of each ``w_1 .. w_n </s>`` item and its ``</s>``.

    fairseq's ``TruncateDataset`` would cut the end-of-sentence marker off, and the decoder
    must still learn to end a (truncated) sentence.
    """

    def __init__(self, dataset, max_words: int, eos: int):
        super().__init__(dataset)
        self.max_words = max_words
        self.eos = eos
        self._sizes = np.minimum(np.asarray(dataset.sizes), max_words + 1)

    def __getitem__(self, index):
        item = self.dataset[index]
        if len(item) <= self.max_words + 1:
            return item
        return torch.cat([item[: self.max_words], item.new_tensor([self.eos])])

    @property
    def sizes(self):
        return self._sizes

    def size(self, index):
        return self._sizes[index]

    def num_tokens(self, index):
        return self._sizes[index]
