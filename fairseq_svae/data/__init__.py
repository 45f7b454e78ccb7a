from fairseq_svae.data.every_sentence_batching import EverySentenceBatching
from fairseq_svae.data.sentence_pair_dataset import SentencePairDataset
from fairseq_svae.data.truncated_sentence_dataset import TruncatedSentenceDataset

__all__ = ["EverySentenceBatching", "SentencePairDataset", "TruncatedSentenceDataset"]
