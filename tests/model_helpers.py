"""Building a small real SentenceVAE in-process (no fairseq-train) for model-level tests."""

import argparse

import torch
from fairseq.data import Dictionary

from fairseq_svae.models.sentence_vae import SentenceVAEModel, base_architecture
from fairseq_svae.tasks.sentence_vae import SentenceVAETask, SentenceVAETaskConfig

WORDS = "the cat sat on a mat and dog ran away from big red house".split()


def small_dictionary() -> Dictionary:
    dictionary = Dictionary()
    for word in WORDS:
        dictionary.add_symbol(word)
    return dictionary


def build_small_model(seed: int = 0, **options) -> SentenceVAEModel:
    torch.manual_seed(seed)
    task = SentenceVAETask(SentenceVAETaskConfig(), small_dictionary())
    options = {"encoder_embed_dim": 16, "encoder_hidden_size": 24, "latent_dim": 6, "dropout": 0.0, **options}
    args = argparse.Namespace(**options)
    base_architecture(args)
    return SentenceVAEModel.build_model(args, task)


def encode_sentences(dictionary: Dictionary, sentences):
    """Right-padded (src_tokens, src_lengths, prev_output_tokens, target) like the task's batches."""
    ids = [dictionary.encode_line(s, add_if_not_exist=False, append_eos=True).long() for s in sentences]
    lengths = torch.tensor([len(x) for x in ids])
    width = int(lengths.max())
    pad, eos = dictionary.pad(), dictionary.eos()
    src = torch.full((len(ids), width), pad, dtype=torch.long)
    prev = torch.full((len(ids), width), pad, dtype=torch.long)
    for row, x in enumerate(ids):
        src[row, : len(x)] = x
        prev[row, 0] = eos
        prev[row, 1 : len(x)] = x[:-1]
    return src, lengths, prev, src.clone()
