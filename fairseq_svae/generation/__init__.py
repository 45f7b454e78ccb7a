"""Decoding sentences from latent codes: the generator behind fairseq-generate and the hub."""

from fairseq_svae.generation.latent_sequence_generator import (
    LATENT_SOURCES,
    LatentSequenceGenerator,
    latent_batch,
)
from fairseq_svae.generation.prior_samples_dataset import PriorSamplesDataset

__all__ = ["LATENT_SOURCES", "LatentSequenceGenerator", "PriorSamplesDataset", "latent_batch"]
