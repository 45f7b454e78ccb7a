"""A trained Sentence VAE in Python, in the style of fairseq's hub interfaces.

    from fairseq_svae import SentenceVAEModel
    svae = SentenceVAEModel.from_pretrained("checkpoints/brown", data_name_or_path="data-bin/brown")
    svae.reconstruct(["the jury said it did not know ."])
    svae.sample(5, seed=1)
    svae.interpolate("he was told .", "she asked him to leave the room .", steps=5)

Every method takes raw text and applies the tokenizer and BPE the model was trained with (a
``--bpe sentencepiece`` checkpoint carries them in its configuration), and the text-returning
methods return lists of plain strings. Each use decodes with its defaults (codes of sentences:
nucleus sampling with shared noise; the prior: nucleus sampling; a model trained at
``--target-kl`` 20 nats or more: greedy search with 3-gram blocking for both; never ``<unk>``; see
:mod:`fairseq_svae.generation.decoding_defaults`) unless fairseq generation options are passed
(``beam=5``, ``sampling=True, sampling_topk=10``, ``temperature=0.7``, ``unkpen=0``, ...); batches
hold ``svae.batch_size`` sentences or codes (256). Drawn codes are seeded per sample:
``prior_latents(n, seed=s)[i]`` is the code of ``fairseq-generate --sample-from-prior --seed s``'s
sample i.
"""

import ast
import copy
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from fairseq import checkpoint_utils, file_utils, tasks, utils
from fairseq.data import encoders
from fairseq.dataclass.configs import GenerationConfig
from omegaconf import open_dict
from torch import Tensor

from fairseq_svae.errors import (
    IncompatibleCheckpointError,
    MissingCheckpointError,
    OptionError,
    SentenceInputError,
    nth_sentence,
)
from fairseq_svae.generation import latent_batch
from fairseq_svae.generation.decoding_defaults import CODE, PRIOR, defaults_for, trained_rate, with_defaults
from fairseq_svae.generation.imputation import impute_suffixes
from fairseq_svae.generation.latent_draws import posterior_latents, prior_latents
from fairseq_svae.generation.latent_space import attribute_vector, interpolation_path, shift
from fairseq_svae.sentence_vae_checkpoint import checkpoint_file as one_checkpoint_file
from fairseq_svae.sentence_vae_checkpoint import is_sentence_vae_model, load_sentence_vae_state, saved_config
from fairseq_svae.tasks.sentence_vae import SentenceVAETask

logger = logging.getLogger(__name__)

Sentences = Union[str, Sequence[str]]

# Sentences encoded / codes decoded together (``svae.batch_size``). The checkpoint's --batch-size
# was chosen for training; for decoding, a few hundred rows keep the vocabulary projection
# efficient while beam search's (rows x beam x vocabulary) scores stay small.
DEFAULT_BATCH_SIZE = 256
# fairseq's file names for a BPE model shipped next to the checkpoint (as in hub_utils).
SENTENCEPIECE_MODEL_FILE = "sentencepiece.bpe.model"


def _as_list(sentences: Sentences) -> List[str]:
    return [sentences] if isinstance(sentences, str) else list(sentences)


def _random_seed() -> int:
    # Drawn from torch's global generator, so torch.manual_seed makes "no seed" reproducible too.
    return int(torch.randint(0, 2**31 - 1, ()).item())


# The priors a hub samples from.
PRIOR_FITTED = "fitted"
PRIOR_STANDARD = "standard"


class SentenceVAEHubInterface(nn.Module):
    """Encode sentences to q(z|x), decode sentences from z, and move between them."""

    def __init__(self, cfg, task, models):
        super().__init__()
        if len(models) != 1:
            raise IncompatibleCheckpointError(
                f"the hub interface wraps one Sentence VAE, got an ensemble of {len(models)}: "
                f"Sentence VAEs trained separately do not share a latent space")
        if not is_sentence_vae_model(models[0]) or not isinstance(task, SentenceVAETask):
            raise IncompatibleCheckpointError(
                f"expected a Sentence VAE (--task sentence_vae), got a {type(models[0]).__name__} "
                f"for task {type(task).__name__}"
            )
        self.cfg = cfg
        self.task = task
        self.models = nn.ModuleList(models)
        self.dictionary = task.target_dictionary
        for model in self.models:
            model.prepare_for_inference_(cfg)
        self.tokenizer = encoders.build_tokenizer(cfg.tokenizer)
        self.bpe = encoders.build_bpe(cfg.bpe)
        self.batch_size = DEFAULT_BATCH_SIZE
        # Generation options whose value the user chose when loading (never replaced by defaults).
        self.pinned_generation = frozenset()
        # The --target-kl the model was trained with (None: no set rate): it chooses the decoding
        # defaults (see decoding_defaults). Set by the constructors from the checkpoint.
        self.trained_rate = None
        # Follows .cuda() / .to(), like fairseq's GeneratorHubInterface.
        self.register_buffer("_float_tensor", torch.tensor([0], dtype=torch.float))

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, checkpoint_file: str = "checkpoint_best.pt",
                        data_name_or_path: str = ".", **overrides) -> "SentenceVAEHubInterface":
        """Load ``model_name_or_path/checkpoint_file`` with the dictionary in ``data_name_or_path``.

        ``data_name_or_path`` is the fairseq-preprocess directory the model was trained on (a
        path starting with "." is relative to the model directory, as in fairseq). Other
        keyword arguments override the saved configuration: generation options (``beam``,
        ``max_len_b``), ``max_sentence_length``, ``bpe`` / ``sentencepiece_model``, ``tokenizer``.
        """
        model_path = model_name_or_path
        if not os.path.isdir(model_path):
            model_path = file_utils.load_archive_file(model_name_or_path)  # URLs and archives
        if model_path is None or not os.path.isdir(model_path):
            raise MissingCheckpointError(
                f"model directory {model_name_or_path!r} not found; pass the --save-dir of "
                f"fairseq-train (the directory holding checkpoint_best.pt)"
            )
        checkpoint = one_checkpoint_file(
            os.path.join(model_path, checkpoint_file), option="checkpoint_file",
            remedy="pass from_pretrained(SAVE_DIR, checkpoint_file=NAME) with an existing NAME",
        )
        overrides = dict(overrides)
        # Set on the task after loading: a configuration saved before the option existed lacks
        # it, and fairseq overrides only the options a checkpoint's configuration has.
        fitted_prior = overrides.pop("fitted_prior", None)
        if fitted_prior and not os.path.isabs(fitted_prior) and os.path.isfile(os.path.join(model_path, fitted_prior)):
            fitted_prior = os.path.join(model_path, fitted_prior)  # a file shipped beside the model
        if data_name_or_path.startswith("."):
            overrides["data"] = os.path.abspath(os.path.join(model_path, data_name_or_path))
        else:
            overrides["data"] = data_name_or_path
        shipped_sentencepiece = os.path.join(model_path, SENTENCEPIECE_MODEL_FILE)
        if os.path.isfile(shipped_sentencepiece):
            overrides.setdefault("sentencepiece_model", shipped_sentencepiece)
        # Generation options given here are the user's choice for every call (see decoding_defaults).
        pinned = {name for name in overrides if name in GenerationConfig.__dataclass_fields__}
        overrides.setdefault("beam", 1)  # fairseq's default is 5; one beam unless asked for more
        # fairseq's default --seed rather than the training run's: the shared sampling noise of
        # decoded codes is then the one svae-interpolate and fairseq-generate use by default.
        overrides.setdefault("seed", 1)

        state = load_sentence_vae_state(checkpoint, overrides)
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
            [checkpoint], arg_overrides=overrides, state=state
        )
        hub = cls(cfg, task, models)
        hub.trained_rate = trained_rate(saved_config(state))
        hub.pinned_generation = frozenset(pinned)
        if fitted_prior:
            task.use_fitted_prior(fitted_prior)
            hub.fitted_prior  # loaded and checked against the model now, not at the first sample
        return hub

    @classmethod
    def from_command_line(cls, cfg) -> "SentenceVAEHubInterface":
        """The hub over ``--path`` for a command built on fairseq's generation parser (``cfg``
        as fairseq-generate has it): its task options, generation options and ``--cpu``."""
        utils.import_user_module(cfg.common)
        path = one_checkpoint_file(cfg.common_eval.path)
        overrides = ast.literal_eval(cfg.common_eval.model_overrides)
        state = load_sentence_vae_state(path, overrides)
        task = tasks.setup_task(cfg.task)
        models, saved_cfg = checkpoint_utils.load_model_ensemble([path], arg_overrides=overrides, task=task,
                                                                 state=state)
        # Raw text must be split as the training data was: unless the command line says
        # otherwise, use the tokenizer and BPE the checkpoint was trained with.
        with open_dict(cfg):
            for component in ("tokenizer", "bpe"):
                if cfg[component] is None and saved_cfg.get(component) is not None:
                    cfg[component] = saved_cfg[component]
        hub = cls(cfg, task, models)
        hub.trained_rate = trained_rate(saved_config(state))
        # The command line's options (its parser's defaults included) are the decoding.
        hub.pinned_generation = frozenset(GenerationConfig.__dataclass_fields__)
        if torch.cuda.is_available() and not cfg.common.cpu:
            hub.cuda()
        return hub

    # ----------------------------------------------------------------------------------------
    # Text <-> token ids

    @property
    def model(self) -> nn.Module:
        """The Sentence VAE (a :class:`~fairseq_svae.models.sentence_vae.SentenceVAEModel`)."""
        return self.models[0]

    @property
    def device(self) -> torch.device:
        return self._float_tensor.device

    @property
    def latent_dim(self) -> int:
        return self.model.latent_dim

    def text_to_tokens(self, sentence: str, index: int = 0, unknown: Optional[List[str]] = None) -> Tensor:
        """``w_1 .. w_n </s>`` ids of one raw sentence, tokenized as the training data was.

        Words not in the dictionary read as ``<unk>`` and are appended to ``unknown`` (when not
        given, one warning names them); an empty sentence or one longer than
        ``max_sentence_length`` is refused with :class:`SentenceInputError`.
        """
        if not isinstance(sentence, str):
            raise SentenceInputError(
                f"{nth_sentence(index)} is not a string but {type(sentence).__name__} {sentence!r}")
        text = sentence.strip()
        if self.tokenizer is not None:
            text = self.tokenizer.encode(text)
        if self.bpe is not None:
            text = self.bpe.encode(text)
        unknown_here: List[str] = []

        def note_unknown(word, word_id):
            if word_id == self.dictionary.unk() and word != self.dictionary.unk_word:
                unknown_here.append(word)

        tokens = self.dictionary.encode_line(
            text, add_if_not_exist=False, consumer=note_unknown, append_eos=True
        ).long()
        words = tokens.numel() - 1
        if words == 0:
            raise SentenceInputError(
                f"{nth_sentence(index)} is empty ({sentence!r}): the encoder needs at least one "
                f"word. Leave out empty lines."
            )
        limit = self.task.cfg.max_sentence_length
        if words > limit:
            raise SentenceInputError(
                f"{nth_sentence(index)} has {words} tokens, more than this model's "
                f"max_sentence_length of {limit} ({sentence[:60]!r}...). Split it, or raise the "
                f"limit to read it anyway (the model never saw sentences that long in training): "
                f"--max-sentence-length {words} on the command line, "
                f"from_pretrained(..., max_sentence_length={words}) in Python."
            )
        if unknown is None:
            self._warn_unknown_words(unknown_here, sentences=1)
        else:
            unknown.extend(unknown_here)
        return tokens

    def sentences_to_tokens(self, sentences: Sentences) -> List[Tensor]:
        """:meth:`text_to_tokens` of each sentence, with one summary line for all unknown words."""
        unknown: List[str] = []
        sentences = _as_list(sentences)
        token_lists = [self.text_to_tokens(s, i, unknown) for i, s in enumerate(sentences)]
        self._warn_unknown_words(unknown, len(sentences))
        return token_lists

    def _warn_unknown_words(self, unknown: List[str], sentences: int) -> None:
        if not unknown:
            return
        distinct = list(dict.fromkeys(unknown))
        examples = ", ".join(map(repr, distinct[:8])) + (", ..." if len(distinct) > 8 else "")
        logger.warning(
            "%d word(s) in %d sentence(s) are not in the model's dictionary and read as %s: %s",
            len(unknown), sentences, self.dictionary.unk_word, examples,
        )

    def tokens_to_text(self, tokens: Tensor) -> str:
        """Plain text of generated ids: end-of-sentence dropped, BPE and tokenizer undone."""
        text = self.dictionary.string(tokens.cpu())
        if self.bpe is not None:
            text = self.bpe.decode(text)
        if self.tokenizer is not None:
            text = self.tokenizer.decode(text)
        return text

    # ----------------------------------------------------------------------------------------
    # The encoder: q(z|x)

    @torch.no_grad()
    def encode(self, sentences: Sentences) -> Tuple[Tensor, Tensor]:
        """Posterior means and log-variances of q(z|x), each ``len(sentences) x latent_dim``."""
        return self.encode_tokens(self.sentences_to_tokens(sentences))

    @torch.no_grad()
    def encode_tokens(self, token_lists: List[Tensor]) -> Tuple[Tensor, Tensor]:
        """:meth:`encode` for sentences already as ids (``w_1 .. w_n </s>``, e.g. a binarized split)."""
        means = torch.empty(len(token_lists), self.latent_dim, device=self.device)
        logvars = torch.empty_like(means)
        if not token_lists:
            return means, logvars
        dataset = self.task.build_dataset_for_inference(token_lists, [t.numel() for t in token_lists])
        # Batches of similar lengths, as fairseq builds them, but without fairseq's data loader
        # (and its per-call log lines) and keeping the last, possibly smaller batch.
        batches = dataset.batch_by_size(
            dataset.ordered_indices(), max_sentences=self.batch_size, required_batch_size_multiple=1
        )
        for indices in batches:
            batch = dataset.collater([dataset[int(index)] for index in indices])
            batch = utils.apply_to_sample(lambda t: t.to(self.device), batch)
            net_input = batch["net_input"]
            mean, logvar = self.model.encoder.posterior(net_input["src_tokens"], net_input["src_lengths"])
            means[batch["id"]] = mean
            logvars[batch["id"]] = logvar
        return means, logvars

    def posterior_means(self, token_lists: List[Tensor], progress=None) -> np.ndarray:
        """The posterior mean of each token list (n x latent_dim, fp32 numpy), encoded a batch at a
        time in order of length (little padding); ``progress(k)`` after each batch of k."""
        order = np.argsort([tokens.numel() for tokens in token_lists], kind="stable")
        means = np.empty((len(token_lists), self.latent_dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            means[chunk] = self.encode_tokens([token_lists[i] for i in chunk])[0].float().cpu().numpy()
            if progress is not None:
                progress(len(chunk))
        return means

    # ----------------------------------------------------------------------------------------
    # The decoder: p(x|z), through fairseq's generator

    def build_generator(self, **generation):
        """fairseq's generator over this model, with fairseq-generate options as keywords."""
        gen_cfg = copy.deepcopy(self.cfg.generation)
        extra = {}
        if "shared_sampling_noise" in generation:  # the task's option, handed to our generator
            generation = dict(generation)
            extra["shared_sampling_noise"] = bool(generation.pop("shared_sampling_noise"))
        with open_dict(gen_cfg):
            for name, value in generation.items():
                if name not in gen_cfg:
                    raise OptionError(
                        f"unknown generation option {name!r}; use fairseq-generate's options with "
                        f"underscores, e.g. beam=5, sampling=True, sampling_topk=10, "
                        f"temperature=0.7, max_len_b=50"
                    )
                setattr(gen_cfg, name, value)
        return self.task.build_generator(self.models, gen_cfg, extra_gen_cls_kwargs=extra)

    def decode_latents(self, latents: Tensor, **generation) -> List[str]:
        """One sentence per row of ``latents`` (``n x latent_dim``), decoded in batches."""
        return [self.tokens_to_text(tokens) for tokens in self.decode_latents_to_tokens(latents, **generation)]

    @torch.no_grad()
    def decode_latents_to_tokens(self, latents: Tensor, progress=None, **generation) -> List[Tensor]:
        """The best hypothesis' token ids (ending in ``</s>``) for each row of ``latents``;
        ``progress(n)`` is called after each batch of n rows."""
        if latents.dim() != 2 or latents.size(1) != self.latent_dim:
            raise OptionError(f"latents must be n x {self.latent_dim}, got {tuple(latents.shape)}")
        generator = self.build_generator(**self.decoding(CODE, generation))
        decoded = []
        for start in range(0, latents.size(0), self.batch_size):
            chunk = latents[start : start + self.batch_size].to(self.device).float()
            ids = torch.arange(start, start + chunk.size(0), device=self.device)
            hypos = self.task.inference_step(
                generator, self.models, latent_batch(ids, self.dictionary.eos(), chunk)
            )
            decoded.extend(hypo[0]["tokens"].cpu() for hypo in hypos)
            if progress is not None:
                progress(chunk.size(0))
        return decoded

    def max_output_tokens(self, **generation) -> int:
        """The most tokens (``</s>`` included) a decoded sentence can have: outputs that long
        were cut off by the length limit (``max_len_b``, and ``max_len_a`` per source token)."""
        generator = self.build_generator(**generation)
        # A latent code is decoded from a one-token source (see latent_batch).
        return min(int(generator.max_len_a * 1 + generator.max_len_b), generator.max_len - 1) + 1

    def reconstruct(self, sentences: Sentences, **generation) -> List[str]:
        """Each sentence decoded from its posterior mean (what fairseq-generate prints as H-)."""
        means, _ = self.encode(sentences)
        return self.decode_latents(means, **generation)

    @property
    def fitted_prior(self):
        """The prior fitted to this model's codes (``from_pretrained(..., fitted_prior=FILE)``,
        ``--fitted-prior``), or None."""
        return self.task.fitted_prior(self.latent_dim)

    def prior_latents(self, n: int, seed: Optional[int] = None, prior: Optional[str] = None) -> Tensor:
        """``n`` codes from the prior; sample i under ``seed`` is fairseq-generate's sample i.

        ``prior``: ``"fitted"`` (the fitted prior, the default when one was loaded) or
        ``"standard"`` (N(0, I), the default otherwise)."""
        if n < 1:
            raise OptionError(f"n must be at least 1, got {n}")
        seed = _random_seed() if seed is None else seed
        if prior not in (None, PRIOR_FITTED, PRIOR_STANDARD):
            raise OptionError(f"prior must be {PRIOR_FITTED!r} or {PRIOR_STANDARD!r}, got {prior!r}")
        fitted = self.fitted_prior
        if prior == PRIOR_FITTED and fitted is None:
            raise OptionError(
                "prior='fitted' needs a fitted prior: from_pretrained(..., fitted_prior='NAME.prior.pt') "
                "(svae-fit-prior writes one beside the checkpoint)"
            )
        if fitted is not None and prior != PRIOR_STANDARD:
            return fitted.latents(range(n), seed, device=self.device)
        return prior_latents(range(n), self.latent_dim, seed, device=self.device)

    def sample(self, n: int, seed: Optional[int] = None, prior: Optional[str] = None, **generation) -> List[str]:
        """``n`` sentences decoded from the prior (``prior``: see :meth:`prior_latents`), by
        default with nucleus sampling, or greedily for a model trained at a high rate (see
        :mod:`~fairseq_svae.generation.decoding_defaults`).
        ``seed`` fixes the codes (sample i is fairseq-generate's sample i) and the sampled words;
        torch's own generator is left as it was."""
        seed = _random_seed() if seed is None else seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.decode_latents(self.prior_latents(n, seed, prior),
                                       **self.decoding(PRIOR, generation))

    def decoding(self, use: str, generation: Dict) -> Dict:
        """The generation options of a call: ``generation`` over this model's defaults for
        ``use`` ("code" or "prior"), as :mod:`~fairseq_svae.generation.decoding_defaults` chooses
        and combines them."""
        return with_defaults(defaults_for(use, self.trained_rate), generation, self.pinned_generation)

    def posterior_samples(self, sentence: str, n: int = 5, seed: Optional[int] = None,
                          **generation) -> List[str]:
        """``n`` sentences decoded from z ~ q(z|sentence): the sentence's neighbourhood."""
        if n < 1:
            raise OptionError(f"n must be at least 1, got {n}")
        mean, logvar = self.encode([sentence])
        latents = posterior_latents(
            mean.expand(n, -1), logvar.expand(n, -1), range(n), _random_seed() if seed is None else seed
        )
        return self.decode_latents(latents, **generation)

    def interpolate(self, start: str, end: str, steps: int = 7, spherical: bool = False,
                    **generation) -> List[str]:
        """``steps`` sentences along the path between the two posterior means (endpoints
        included: they are the two reconstructions), linear or, with ``spherical``, slerp."""
        means, _ = self.encode([start, end])
        return self.decode_latents(interpolation_path(means[0], means[1], steps, spherical), **generation)

    def impute(self, beginnings: Sentences, iterations: int = 10, seed: Optional[int] = None,
               **generation) -> List[str]:
        """Complete sentences whose last words are missing, through the latent code (Bowman et
        al. 2016, section 5.1; see :mod:`~fairseq_svae.generation.imputation`): each result
        starts with its beginning's words."""
        token_lists = self.sentences_to_tokens(beginnings)
        prefixes = [tokens[:-1] for tokens in token_lists]  # without </s>: the sentence goes on
        completed = impute_suffixes(self, prefixes, iterations, _random_seed() if seed is None else seed,
                                    **self.decoding(CODE, generation))
        return [self.tokens_to_text(tokens) for tokens in completed]

    def attribute_vector(self, sentences_with: Sentences, sentences_without: Sentences) -> Tensor:
        """Mean posterior mean of ``sentences_with`` minus that of ``sentences_without``."""
        return attribute_vector(self.encode(sentences_with)[0], self.encode(sentences_without)[0])

    def shift(self, sentences: Sentences, vector: Tensor, alpha: float = 1.0, **generation) -> List[str]:
        """Each sentence decoded from its posterior mean plus ``alpha`` times ``vector``."""
        means, _ = self.encode(sentences)
        return self.decode_latents(shift(means, vector, alpha), **generation)
