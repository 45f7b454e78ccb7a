import numpy as np


class EverySentenceBatching:
    """Mixin for a fairseq dataset: ``batch_by_size`` that never loses a sentence.

    fairseq 0.12's ``batch_by_size`` drops a last batch whose size is not a multiple of
    ``--required-batch-size-multiple`` (8 by default; fairseq issue #5036). In training that
    loses a few sentences an epoch; in validation, ``fairseq-generate``, prior sampling or an
    evaluation it silently leaves sentences out of what is reported. Those sentences come back
    here as one last batch, which fairseq had already checked against ``--max-tokens`` /
    ``--batch-size``.
    """

    def batch_by_size(self, indices, max_tokens=None, max_sentences=None, required_batch_size_multiple=1):
        batches = super().batch_by_size(indices, max_tokens, max_sentences, required_batch_size_multiple)
        batched = sum(len(batch) for batch in batches)
        if batched < len(indices):
            # batch_by_size walks the indices in order, so what it dropped is their tail.
            batches = list(batches) + [np.asarray(indices[batched:], dtype=np.int64)]
        return batches
