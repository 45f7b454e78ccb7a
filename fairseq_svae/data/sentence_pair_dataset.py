from fairseq.data import LanguagePairDataset

from fairseq_svae.data.every_sentence_batching import EverySentenceBatching


class SentencePairDataset(EverySentenceBatching, LanguagePairDataset):
    """fairseq's source/target dataset (the sentence on both sides), batched without losing sentences."""
