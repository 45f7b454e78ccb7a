from fairseq_svae.data.truncated_sentence_dataset import TruncatedSentenceDataset

__all__ = ["TruncatedSentenceDataset"]
