import numpy as np
from fairseq.data import LanguagePairDataset


class SentencePairDataset(LanguagePairDataset):
    """fairseq's source/target dataset, batched without losing sentences.

    fairseq 0.12's ``batch_by_size`` drops a last batch whose size is not a multiple of
    ``--required-batch-size-multiple`` (8 by default; fairseq issue #5036). In training that
    loses a few sentences an epoch; in validation, ``fairseq-generate`` or an evaluation it
    silently leaves sentences out of the reported figures. Those sentences come back here as one
    last batch, which fairseq had already checked against ``--max-tokens``/``--batch-size``.
    """

    def batch_by_size(self, indices, max_tokens=None, max_sentences=None, required_batch_size_multiple=1):
        batches = super().batch_by_size(indices, max_tokens, max_sentences, required_batch_size_multiple)
        batched = sum(len(batch) for batch in batches)
        if batched < len(indices):
            # batch_by_size walks the indices in order, so what it dropped is their tail.
            batches = list(batches) + [np.asarray(indices[batched:], dtype=np.int64)]
        return batches
