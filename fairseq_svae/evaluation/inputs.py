"""What svae-eval scores: the split's sentences in batches, and the model of a checkpoint."""

import os

import numpy as np
from fairseq import checkpoint_utils
from fairseq.data import data_utils
from fairseq.models import FairseqLanguageModel

from fairseq_svae.errors import IncompatibleCheckpointError, OptionError
from fairseq_svae.preprocess_hints import against_dictionary_command
from fairseq_svae.sentence_vae_checkpoint import (
    checkpoint_file,
    is_sentence_vae,
    model_class_of,
    saved_config,
)
from fairseq_svae.tasks.sentence_vae import SentenceVAETask, SentenceVAETaskConfig

LANGUAGE_MODEL, SENTENCE_VAE = "language model", "sentence VAE"

# Sentence batches when neither --max-tokens nor --batch-size is given. The VAE repeats each
# batch for many posterior samples, so a moderate batch already fills the decoder's matmuls.
DEFAULT_MAX_TOKENS = 4096


def load_split(data_dir: str, split: str):
    """The split as the sentence_vae task reads it, with every sentence kept at full length."""
    task = SentenceVAETask.setup_task(SentenceVAETaskConfig(data=data_dir))
    task.load_dataset(split)  # a missing split is explained there
    return task, task.dataset(split)


def sentence_batches(dataset, first_sentences, max_tokens, batch_size):
    """Batches over the first ``first_sentences`` sentences (all if None), grouped by length."""
    total = len(dataset)
    if first_sentences is not None:
        if first_sentences < 1:
            raise OptionError(f"--first-sentences must be >= 1, got {first_sentences}")
        total = min(total, first_sentences)
    indices = np.arange(total, dtype=np.int64)
    # A stable sort by length: the same batches every run, with little padding.
    indices = indices[np.argsort(dataset.src_sizes[indices], kind="stable")]
    num_tokens = dataset.num_tokens_vec(indices).astype(np.int64)
    if max_tokens is None and batch_size is None:
        max_tokens = DEFAULT_MAX_TOKENS
    # batch_by_size refuses a sentence longer than max_tokens; evaluation must keep it.
    if max_tokens is not None:
        max_tokens = max(max_tokens, int(num_tokens.max()))
    return indices, data_utils.batch_by_size(
        indices, dataset.num_tokens, max_tokens=max_tokens, max_sentences=batch_size,
        num_tokens_vec=num_tokens,
    )


def load_model(path: str, data_dir: str, data_task):
    """(model, kind, arch) for a sentence_vae or a fairseq language model checkpoint."""
    path = checkpoint_file(path, remedy="svae-eval scores one model at a time: pass --path "
                                        "SAVE_DIR/checkpoint_best.pt")
    # fairseq's loader with the plugin's weights-only protection and readable errors.
    state = checkpoint_utils.load_checkpoint_to_cpu(path, arg_overrides={"data": data_dir})
    cfg = saved_config(state)
    arch, model_class = model_class_of(cfg.model)
    if is_sentence_vae(cfg.model):
        kind, task = SENTENCE_VAE, data_task
    elif model_class is not None and issubclass(model_class, FairseqLanguageModel):
        # The language model's own task (language_modeling) on this data directory builds it.
        kind, task = LANGUAGE_MODEL, None
    else:
        raise IncompatibleCheckpointError(
            f"{path} holds a {arch!r} model: svae-eval scores a sentence_vae or a fairseq "
            f"language model (e.g. --arch lstm_lm trained with --task language_modeling)"
        )
    try:
        models, _, _ = checkpoint_utils.load_model_ensemble_and_task([path], task=task, state=state)
    except RuntimeError as error:
        if "size mismatch" not in str(error):
            raise
        # A language model's checkpoint has no dictionary fingerprint (the sentence_vae task
        # checks one before building), so another dict.txt shows up as wrong tensor shapes.
        embedding = state["model"].get("decoder.embed_tokens.weight")
        trained_with = f"{embedding.size(0)} types" if embedding is not None else "another size"
        raise IncompatibleCheckpointError(
            f"{path} was trained with a dictionary of {trained_with}, but "
            f"{os.path.join(data_dir, 'dict.txt')} has {len(data_task.dictionary)} types. Pass the "
            f"data directory the model was trained on, or binarize your text against its "
            f"dictionary: " + against_dictionary_command("TRAINING_DATA_DIR/dict.txt", "data-bin/mytext")
        ) from error
    return models[0], kind, arch
