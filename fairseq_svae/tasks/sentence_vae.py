"""``--task sentence_vae``: one sentence per sample, reconstructed by the model.

Reads what ``fairseq-preprocess --only-source`` writes (``dict.txt``, ``{split}.bin/.idx``). Each
sample's encoder input is ``w_1 .. w_n </s>``, the decoder reads ``</s> w_1 .. w_n`` and predicts
``w_1 .. w_n </s>``: exactly fairseq's source/target layout with the sentence on both sides, so
fairseq's batching, ``fairseq-generate`` and its scorers work unchanged.
"""

import contextlib
import importlib.util
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from fairseq import utils
from fairseq.data import Dictionary, LanguagePairDataset, data_utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.logging import metrics
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, DictConfig, open_dict

from fairseq_svae.checkpoint_io import load_checkpoint_state
from fairseq_svae.criterions.annealed_elbo import LATENT_SENTENCES, MI_X_SENTENCES
from fairseq_svae.data import SentencePairDataset, TruncatedSentenceDataset
from fairseq_svae.dictionary_fingerprint import describe, dictionary_fingerprint
from fairseq_svae.errors import DictionaryMismatchError, MissingDataError, OptionError
from fairseq_svae.fitted_prior import load_fitted_prior
from fairseq_svae.generation import LatentSequenceGenerator, PriorSamplesDataset
from fairseq_svae.generation.latent_sequence_generator import (
    FROM_POSTERIOR_MEAN,
    FROM_POSTERIOR_SAMPLE,
    FROM_PRIOR,
)

from fairseq_svae.precision import bf16_autocast, warn_unless_native_bf16
from fairseq_svae.preprocess_hints import (
    against_dictionary_command,
    missing_split_message,
    new_corpus_command,
)
from fairseq_svae.sentence_vae_checkpoint import require_sentence_vae
from fairseq_svae.startup_checks import check_split_files
from fairseq_svae.tasks.aggressive_encoder import (
    ENCODER_STEPS,
    AggressiveEncoderUpdates,
    AggressiveSchedule,
    encoder_only_parameters,
    encoder_steps_of,
    restored_checkpoint_path,
)

logger = logging.getLogger(__name__)

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
    # Generation (fairseq-generate, svae-interpolate, the hub).
    sample_from_prior: bool = field(
        default=False,
        metadata={"help": "fairseq-generate: decode sentences from z ~ N(0, I) instead of "
                          "reconstructing --gen-subset; nothing is read but the dictionary"},
    )
    prior_samples: int = field(
        default=100,
        metadata={"help": "with --sample-from-prior: how many sentences to sample (sample i "
                          "is the same for a given --seed whatever the batching or search)"},
    )
    fitted_prior: Optional[str] = field(
        default=None,
        metadata={"help": "a prior fitted to the model's codes by svae-fit-prior (CHECKPOINT_NAME.prior.pt): "
                          "sample from it instead of N(0, I) (--sample-from-prior, svae-report, the hub)"},
    )
    reconstruct_from: ChoiceEnum([FROM_POSTERIOR_MEAN, FROM_POSTERIOR_SAMPLE]) = field(
        default=FROM_POSTERIOR_MEAN,
        metadata={"help": "fairseq-generate reconstruction: decode from the posterior mean "
                          "(deterministic) or from one z ~ q(z|x) per sentence (seeded by --seed)"},
    )
    shared_sampling_noise: bool = field(
        default=False,
        metadata={"help": "with --sampling: every sentence draws its words with the same random "
                          "numbers (seeded by --seed), so a code always decodes to the same sentence "
                          "whatever the batch, and nearby codes to similar ones (homotopies)"},
    )
    # Training precision. fairseq 0.12's --bf16 is its TPU mode (it crashes on a CPU and on a
    # GPU), hence the plugin's own option; see fairseq_svae.precision for what runs in which dtype.
    bf16_autocast: bool = field(
        default=False,
        metadata={"help": "train and validate in bfloat16 under torch.autocast, on a CPU or a GPU: "
                          "the KL, the softmax cross entropy, master weights and optimizer state "
                          "stay fp32 (on a CPU the LSTMs too), and no loss scaling is needed, unlike "
                          "--fp16; on a CPU it pays only with AVX512-BF16 or AMX"},
    )
    # The option's first name, from when it ran on CPUs only: saved configs and older command
    # lines still hold it, and it means the same.
    cpu_bf16: bool = field(default=False, metadata={"help": "the same as --bf16-autocast (its earlier name)"})
    # He et al. 2019's aggressive encoder updates; see fairseq_svae.tasks.aggressive_encoder.
    aggressive_encoder_updates: bool = field(
        default=False,
        metadata={"help": "He et al. 2019: before each update, train the encoder alone on random "
                          "training batches until its loss stops falling, then update the decoder "
                          "alone; the phase ends at the first validation whose valid_mi does not "
                          "rise (costs several times an ordinary update while it lasts)"},
    )
    aggressive_max_encoder_steps: int = field(
        default=AggressiveSchedule.max_encoder_steps,
        metadata={"help": "with --aggressive-encoder-updates: at most this many encoder steps "
                          "before an update"},
    )
    aggressive_window: int = field(
        default=AggressiveSchedule.window,
        metadata={"help": "with --aggressive-encoder-updates: the encoder steps stop when the loss "
                          "per token of a window of this many steps is not below the previous window's"},
    )
    aggressive_max_updates: int = field(
        default=AggressiveSchedule.max_updates,
        metadata={"help": "with --aggressive-encoder-updates: end the phase at this update even if "
                          "valid_mi still rises, to bound its cost (0: no limit)"},
    )
    seed: int = II("common.seed")
    bf16: bool = II("common.bf16")
    fp16: bool = II("common.fp16")
    # Where fairseq-train resumes from: its trainer restores everything but the task state,
    # which the aggressive phase reads back itself.
    train_subset: str = II("dataset.train_subset")
    save_dir: str = II("checkpoint.save_dir")
    restore_file: str = II("checkpoint.restore_file")
    checkpoint_suffix: str = II("checkpoint.checkpoint_suffix")
    continue_once: Optional[str] = II("checkpoint.continue_once")


@register_task("sentence_vae", dataclass=SentenceVAETaskConfig)
class SentenceVAETask(FairseqTask):
    # reduce_metrics calls criterion.observe_training_update after every update (--target-kl).
    observes_training_updates = True

    def __init__(self, cfg: SentenceVAETaskConfig, dictionary: Dictionary):
        super().__init__(cfg)
        self.dictionary = dictionary
        self._bf16_checked = False
        self.aggressive = (
            AggressiveEncoderUpdates(
                AggressiveSchedule(cfg.aggressive_max_encoder_steps, cfg.aggressive_window,
                                   cfg.aggressive_max_updates),
                seed=cfg.seed,
            )
            if cfg.aggressive_encoder_updates else None
        )
        self._training_state_restored = False
        self._encoder_fitted_for_update: Optional[int] = None
        # The criterion fairseq-train trains with: its KL rate controller's state is training
        # state that the checkpoint's task state carries.
        self._criterion = None
        self._fitted_prior = None

    @classmethod
    def setup_task(cls, cfg: SentenceVAETaskConfig, **kwargs):
        if not cfg.data:
            raise OptionError(
                "the sentence_vae task needs a data directory: pass it as the first argument, "
                "e.g. fairseq-train data-bin/brown ... (create it with "
                + new_corpus_command("data-bin/brown") + ")"
            )
        data_path = utils.split_paths(cfg.data)[0]
        if not os.path.isdir(data_path):
            raise MissingDataError(
                f"data directory {data_path!r} does not exist; create it with: "
                + new_corpus_command(data_path)
            )
        dict_path = os.path.join(data_path, "dict.txt")
        if not os.path.isfile(dict_path):
            raise MissingDataError(
                f"dictionary {dict_path!r} not found; fairseq-preprocess --only-source writes it "
                f"with the binarized splits: " + new_corpus_command(data_path)
            )
        check_precision_options(cfg)
        dictionary = Dictionary.load(dict_path)
        logger.info("dictionary: %d types (%s)", len(dictionary), dict_path)
        return cls(cfg, dictionary)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        if self.cfg.sample_from_prior:
            self.datasets[split] = PriorSamplesDataset(self.cfg.prior_samples, self.dictionary.eos())
            logger.info("%s: %d samples from the prior (no data read)", split, self.cfg.prior_samples)
            return
        paths = utils.split_paths(self.cfg.data)
        data_path = paths[(epoch - 1) % len(paths)]
        split_path = os.path.join(data_path, split)
        # Startup check (issue 25): a missing half, a truncated or altered .bin/.idx, in one line.
        check_split_files(split_path, self.dictionary, combine=combine)
        sentences = data_utils.load_indexed_dataset(split_path, self.dictionary, combine=combine)
        if sentences is None:
            raise MissingDataError(missing_split_message(data_path, split))
        if self.cfg.truncate_long_sentences:
            sentences = TruncatedSentenceDataset(
                sentences, self.cfg.max_sentence_length, self.dictionary.eos()
            )
        logger.info("%s: %d sentences from %s", split, len(sentences), split_path)
        self.datasets[split] = self.sentence_pairs(sentences, sentences.sizes)

    def sentence_pairs(self, sentences, sizes, with_target: bool = True) -> LanguagePairDataset:
        """The sentence as source and (when given) as target: what the encoder and decoder read."""
        return SentencePairDataset(
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

    def build_dataset_for_inference(self, src_tokens, src_lengths, **kwargs) -> LanguagePairDataset:
        """Sentences given as token tensors (``w_1 .. w_n </s>``), for the encoder only."""
        return self.sentence_pairs(src_tokens, np.asarray(src_lengths), with_target=False)

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
        if not self._training_state_restored:
            self._restore_training_state(update_num)
        aggressive = self.aggressive is not None and self.aggressive.is_active(update_num)
        encoder_steps = None
        # Once per update, however many batches --update-freq accumulates into it.
        if aggressive and self._encoder_fitted_for_update != update_num:
            encoder_steps = self.aggressive.fit_encoder(
                model, criterion, self.dataset(self.cfg.train_subset), lr=optimizer.get_lr(),
                update_num=update_num, batch_sentences=sample["target"].size(0),
                max_positions=self.max_positions()[0], precision=lambda: self.precision(model),
            )
            self._encoder_fitted_for_update = update_num
        with self.precision(model):
            loss, sample_size, logging_output = super().train_step(
                sample, model, criterion, optimizer, update_num, ignore_grad
            )
        if aggressive:
            # This update is the decoder's: the encoder stays where its own steps left it.
            for param in encoder_only_parameters(model):
                param.grad = None
        if self.aggressive is not None:  # 0 once the phase is over: the log shows it ended
            logging_output[ENCODER_STEPS] = encoder_steps or 0
        return loss, sample_size, logging_output

    def _restore_training_state(self, update_num: int) -> None:
        """Read back the task's part of the checkpoint fairseq-train resumed from (its trainer
        restores everything else): the aggressive phase and the KL rate controller."""
        self._training_state_restored = True
        path = restored_checkpoint_path(self.cfg.save_dir, self.cfg.restore_file,
                                        self.cfg.checkpoint_suffix, self.cfg.continue_once)
        if update_num == 0 or path is None:
            return
        saved = load_checkpoint_state(path).get("task_state", {})
        if self.aggressive is not None and AggressiveEncoderUpdates.STATE_KEY in saved:
            self.aggressive.load_state_dict(saved[AggressiveEncoderUpdates.STATE_KEY])
        controller = self._rate_controller()
        if controller is not None and RATE_CONTROL_STATE_KEY in saved:
            controller.load_state_dict(saved[RATE_CONTROL_STATE_KEY])

    def build_criterion(self, cfg):
        self._criterion = super().build_criterion(cfg)
        return self._criterion

    def _rate_controller(self):
        return getattr(self._criterion, "rate_controller", None)

    def valid_step(self, sample, model, criterion):
        with self.precision(model):
            loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        if self.aggressive is not None:
            self.aggressive.record_validation(logging_output, MI_X_SENTENCES, LATENT_SENTENCES)
        return loss, sample_size, logging_output

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        # fairseq calls this once per update with the outputs summed over all workers, so
        # every rank's controller takes the same step.
        if hasattr(criterion, "observe_training_update"):
            criterion.observe_training_update(logging_outputs)
        encoder_steps = encoder_steps_of(logging_outputs)
        if encoder_steps is not None:
            metrics.log_scalar("encoder_steps", encoder_steps, round=1)

    def precision(self, model):
        """The autocast context of a training or validation step (a no-op without --bf16-autocast)."""
        enabled = wants_bf16_autocast(self.cfg)
        device_type = next(model.parameters()).device.type
        if enabled and not self._bf16_checked:
            if device_type == "cpu":
                warn_unless_native_bf16("--bf16-autocast")
            self._bf16_checked = True
        return bf16_autocast(device_type, enabled=enabled)

    def build_model(self, cfg, from_checkpoint=False):
        # Checked before building: another task's model may not even build with this task's
        # dictionaries, and would fail somewhere deep inside fairseq.
        require_sentence_vae(cfg)
        if from_checkpoint and getattr(cfg, "load_pretrained_encoder_from", None):
            # The checkpoint holds the trained encoder; the pretraining file it started from
            # is neither needed nor, on another machine, necessarily there.
            with open_dict(cfg) if isinstance(cfg, DictConfig) else contextlib.nullcontext():
                cfg.load_pretrained_encoder_from = None
        return super().build_model(cfg, from_checkpoint)

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        """fairseq-generate's decoding, under --bf16-autocast in bf16 too (the vocabulary
        projection, and the LSTM where the hardware has a bf16 LSTM; the search reads the scores in
        fp32)."""
        with self.precision(models[0]):
            return super().inference_step(generator, models, sample, prefix_tokens, constraints)

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None, **kwargs):
        """fairseq's search over the decoder, with z taken from the prior, a posterior sample or
        the posterior mean (see :class:`LatentSequenceGenerator`)."""
        if getattr(args, "score_reference", False):
            return super().build_generator(models, args, **kwargs)
        latent_source = FROM_PRIOR if self.cfg.sample_from_prior else self.cfg.reconstruct_from
        defaults = {"shared_sampling_noise": self.cfg.shared_sampling_noise,
                    "fitted_prior": self.fitted_prior(models[0].latent_dim) if self.cfg.get("fitted_prior") else None}
        extra = dict(defaults, **(extra_gen_cls_kwargs or {}), latent_source=latent_source, seed=self.cfg.seed)
        return super().build_generator(
            models, args, seq_gen_cls=seq_gen_cls or LatentSequenceGenerator,
            extra_gen_cls_kwargs=extra, **kwargs,
        )

    def fitted_prior(self, latent_dim: int):
        """The --fitted-prior (a FittedPrior checked against ``latent_dim``), or None."""
        path = self.cfg.get("fitted_prior")  # a configuration saved before the option existed lacks it
        if path and self._fitted_prior is None:
            self._fitted_prior = load_fitted_prior(path, latent_dim)
        return self._fitted_prior

    def use_fitted_prior(self, path: Optional[str]) -> None:
        """Sample from the prior in ``path`` from now on (None: from N(0, I))."""
        with open_dict(self.cfg) if isinstance(self.cfg, DictConfig) else contextlib.nullcontext():
            self.cfg.fitted_prior = path
        self._fitted_prior = None

    def state_dict(self):
        # Saved in every checkpoint, so loading it with another dict.txt fails clearly.
        state = dict(super().state_dict())
        state[DICTIONARY_STATE_KEY] = dictionary_fingerprint(self.dictionary)
        if self.aggressive is not None:
            state[AggressiveEncoderUpdates.STATE_KEY] = self.aggressive.state_dict()
        if self._rate_controller() is not None:
            state[RATE_CONTROL_STATE_KEY] = self._rate_controller().state_dict()
        return state

    def load_state_dict(self, state_dict):
        # fairseq calls this with the checkpoint's task state before it builds the model.
        saved = state_dict.get(DICTIONARY_STATE_KEY)
        here = dictionary_fingerprint(self.dictionary)
        if saved is not None and dict(saved) != here:
            dict_path = os.path.join(utils.split_paths(self.cfg.data)[0], "dict.txt")
            raise DictionaryMismatchError(
                f"the dictionary {dict_path} ({describe(here)}) is not the one this checkpoint "
                f"was trained with ({describe(saved)}): every embedding row would stand for "
                f"another word. Pass the data directory the model was trained on, or binarize "
                f"your text against that dictionary: "
                + against_dictionary_command("TRAINING_DATA_DIR/dict.txt", "data-bin/mytext")
            )
        if self.aggressive is not None and AggressiveEncoderUpdates.STATE_KEY in state_dict:
            self.aggressive.load_state_dict(state_dict[AggressiveEncoderUpdates.STATE_KEY])
            self._training_state_restored = True
        super().load_state_dict(state_dict)

    @property
    def source_dictionary(self):
        # None with --sample-from-prior: fairseq-generate then prints no (empty) S- lines.
        return None if self.cfg.sample_from_prior else self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary


DICTIONARY_STATE_KEY = "dictionary"
RATE_CONTROL_STATE_KEY = "kl_rate_control"


def check_precision_options(cfg: SentenceVAETaskConfig) -> None:
    """Stop before fairseq's trainer starts on precision flags that cannot work."""
    # fairseq 0.12 turns every --bf16 into a TPU run (options.py sets --tpu with it), which
    # fails deep inside the trainer without torch_xla, on a CPU and on a GPU alike.
    # "is True": a config built in Python, outside fairseq's command line, holds the
    # unresolved interpolation string instead of the flag.
    bf16, fp16 = cfg.bf16 is True, cfg.fp16 is True
    if bf16 and importlib.util.find_spec("torch_xla") is None:
        raise OptionError(
            "fairseq's --bf16 means a TPU run (it needs torch_xla); for bfloat16 on a CPU or a GPU "
            "drop --bf16 and pass the plugin's --bf16-autocast"
        )
    if wants_bf16_autocast(cfg) and fp16:
        raise OptionError("--bf16-autocast cannot be combined with --fp16: keep one")


def wants_bf16_autocast(cfg: SentenceVAETaskConfig) -> bool:
    """--bf16-autocast, or its earlier name --cpu-bf16."""
    return bool(cfg.bf16_autocast or cfg.cpu_bf16)
