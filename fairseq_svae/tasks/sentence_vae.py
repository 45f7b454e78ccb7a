"""``--task sentence_vae``: one sentence per sample, reconstructed by the model.

Reads what ``fairseq-preprocess --only-source`` writes (``dict.txt``, ``{split}.bin/.idx``). Each
sample's encoder input is ``w_1 .. w_n </s>``, the decoder reads ``</s> w_1 .. w_n`` and predicts
``w_1 .. w_n </s>``: exactly fairseq's source/target layout with the sentence on both sides, so
fairseq's batching, ``fairseq-generate`` and its scorers work unchanged.
"""

import logging
import os
from dataclasses import dataclass, field
from typing import Optional

from fairseq import utils
from fairseq.data import Dictionary, LanguagePairDataset, data_utils
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task

from fairseq_svae.data import TruncatedSentenceDataset

logger = logging.getLogger(__name__)

PREPROCESS_HINT = (
    "fairseq-preprocess --only-source --trainpref train.txt --validpref valid.txt "
    "--testpref test.txt --thresholdsrc 3 --destdir {destdir}"
)


@dataclass
class SentenceVAETaskConfig(FairseqDataclass):
    data: Optional[str] = field(
        default=None,
        metadata={"help": "directory written by fairseq-preprocess --only-source "
                          "(several directories separated by ':' are used in turn, one per epoch)"},
    )
    max_sentence_length: int = field(
        default=200,
        metadata={"help": "sentences with more words (end-of-sentence not counted) are skipped, "
                          "with a logged count, or truncated with --truncate-long-sentences"},
    )
    truncate_long_sentences: bool = field(
        default=False,
        metadata={"help": "keep the first --max-sentence-length words of a long sentence "
                          "instead of skipping it"},
    )
    # Read by FairseqTask.get_batch_iterator. fairseq 0.12 otherwise builds the batches once,
    # seeded with --seed and the epoch it starts in, and reuses them: a run resumed in epoch 2
    # would then train on other batches than the uninterrupted run. Rebuilding them every
    # epoch (seeded with --seed + epoch) makes resuming exact and costs well under a second.
    rebuild_batches: bool = field(
        default=True,
        metadata={"help": "rebuild the batches every epoch, so that a resumed run trains on "
                          "the same batches as an uninterrupted one"},
    )


@register_task("sentence_vae", dataclass=SentenceVAETaskConfig)
class SentenceVAETask(FairseqTask):
    def __init__(self, cfg: SentenceVAETaskConfig, dictionary: Dictionary):
        super().__init__(cfg)
        self.dictionary = dictionary

    @classmethod
    def setup_task(cls, cfg: SentenceVAETaskConfig, **kwargs):
        if not cfg.data:
            raise ValueError(
                "the sentence_vae task needs a data directory: pass it as the first argument, "
                "e.g. fairseq-train data-bin/brown ... (create it with "
                + PREPROCESS_HINT.format(destdir="data-bin/brown") + ")"
            )
        data_path = utils.split_paths(cfg.data)[0]
        if not os.path.isdir(data_path):
            raise FileNotFoundError(
                f"data directory {data_path!r} does not exist; create it with: "
                + PREPROCESS_HINT.format(destdir=data_path)
            )
        dict_path = os.path.join(data_path, "dict.txt")
        if not os.path.isfile(dict_path):
            raise FileNotFoundError(
                f"dictionary {dict_path!r} not found; fairseq-preprocess --only-source writes it: "
                + PREPROCESS_HINT.format(destdir=data_path)
            )
        dictionary = Dictionary.load(dict_path)
        logger.info("dictionary: %d types (%s)", len(dictionary), dict_path)
        return cls(cfg, dictionary)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        paths = utils.split_paths(self.cfg.data)
        data_path = paths[(epoch - 1) % len(paths)]
        split_path = os.path.join(data_path, split)
        sentences = data_utils.load_indexed_dataset(split_path, self.dictionary, combine=combine)
        if sentences is None:
            raise FileNotFoundError(
                f"split {split!r} not found: no {split_path}.bin/.idx. Binarize it against the "
                f"existing dictionary with: fairseq-preprocess --only-source --{split_flag(split)} "
                f"{split}.txt --srcdict {os.path.join(data_path, 'dict.txt')} --destdir {data_path}"
            )
        if self.cfg.truncate_long_sentences:
            sentences = TruncatedSentenceDataset(
                sentences, self.cfg.max_sentence_length, self.dictionary.eos()
            )
        logger.info("%s: %d sentences from %s", split, len(sentences), split_path)
        self.datasets[split] = self.sentence_pairs(sentences, sentences.sizes)

    def sentence_pairs(self, sentences, sizes, with_target: bool = True) -> LanguagePairDataset:
        """The sentence as source and (when given) as target: what the encoder and decoder read."""
        return LanguagePairDataset(
            sentences,
            sizes,
            self.dictionary,
            tgt=sentences if with_target else None,
            tgt_sizes=sizes if with_target else None,
            tgt_dict=self.dictionary,
            # Right padding on both sides: the encoder packs its input and the decoder is
            # causal, so padding never reaches a real position.
            left_pad_source=False,
            left_pad_target=False,
        )

    def filter_indices_by_size(self, indices, dataset, max_positions=None, ignore_invalid_inputs=False):
        # Long sentences are skipped in every split, not only where fairseq's
        # --skip-invalid-size-inputs-valid-test asks for it: --max-sentence-length is the
        # user's statement of what to skip, and a crash in validation would help nobody.
        kept, ignored = dataset.filter_indices_by_size(indices, max_positions)
        if len(ignored) > 0:
            logger.warning(
                "skipped %d of %d sentences longer than --max-sentence-length=%d words "
                "(first ids: %s); raise --max-sentence-length or pass --truncate-long-sentences "
                "to keep them",
                len(ignored), len(indices), self.cfg.max_sentence_length, list(ignored[:10]),
            )
        return kept

    def max_positions(self):
        longest = self.cfg.max_sentence_length + 1  # + </s>
        return (longest, longest)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        # The KL weight follows the update count; fairseq 0.12 tells only the model about it.
        if hasattr(criterion, "set_num_updates"):
            criterion.set_num_updates(update_num)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary


def split_flag(split: str) -> str:
    """The fairseq-preprocess option that writes ``split`` (valid1 -> validpref, ...)."""
    for name in ("train", "valid", "test"):
        if split.startswith(name):
            return name + "pref"
    return "testpref"
