"""A trained conditional VAE (``--arch sentence_cvae``, ``--task translation``) in Python.

    from fairseq_svae import SentenceCVAEModel
    cvae = SentenceCVAEModel.from_pretrained("checkpoints/multi30k", checkpoint_file="checkpoint_best.pt",
                                             data_name_or_path="data-bin/multi30k")
    cvae.translate("a man rides a bike .")            # one output, from the prior mean
    cvae.translate(["a man rides a bike ."], n=5)     # five different outputs per sentence, z_k ~ p(z|x)

fairseq's :class:`~fairseq.hub_utils.GeneratorHubInterface` with its conventions (``translate``,
``sample``, ``generate``, ``encode``/``decode`` with the checkpoint's tokenizer and BPE, fairseq
generation options as keywords: ``beam=5``, ``sampling=True``, ``max_len_b=50``...), plus ``n``:
the number of different outputs per sentence, each decoded from its own z ~ p(z|x) (what
``fairseq-generate --latent-samples n`` prints). Checkpoints load through the plugin's safe loader.
"""

import logging
import os
from typing import List, Optional, Union

import torch
from fairseq import hub_utils

from fairseq_svae.errors import IncompatibleCheckpointError, MissingCheckpointError, OptionError
from fairseq_svae.generation.latent_samples import (
    CANDIDATES_KEY,
    DISTINCT_KEY,
    MAX_COPIES_KEY,
    SAMPLES_KEY,
    SCALE_KEY,
    SEED_KEY,
)
from fairseq_svae.models.sentence_cvae import is_conditional_vae

Sentences = Union[str, List[str]]
logger = logging.getLogger(__name__)
# sentencepiece marks a word's first piece with this character.
SENTENCEPIECE_WORD_START = "\u2581"


def looks_like_sentencepiece(dictionary) -> bool:
    """Whether a fairseq dictionary holds sentencepiece pieces: a tenth or more of its symbols
    (beyond the special ones) start a word with sentencepiece's mark; a word-level one has none."""
    symbols = dictionary.symbols[dictionary.nspecial:]
    return bool(symbols) and sum(symbol.startswith(SENTENCEPIECE_WORD_START) for symbol in symbols) >= 0.1 * len(symbols)


class ConditionalVAEHubInterface(hub_utils.GeneratorHubInterface):
    """fairseq's generator hub over one conditional VAE, with ``n`` outputs per sentence."""

    def __init__(self, cfg, task, models):
        if len(models) != 1 or not is_conditional_vae(models[0]):
            raise IncompatibleCheckpointError(
                f"expected one conditional VAE (--arch sentence_cvae), got "
                f"{', '.join(type(model).__name__ for model in models)}")
        super().__init__(cfg, task, models)
        if self.bpe is None and looks_like_sentencepiece(self.src_dict):
            # Not an error: sentences already split into pieces still translate.
            logger.warning(
                "the model's dictionary holds sentencepiece pieces but no bpe was given, so a sentence "
                "would be split at spaces into words the model has never seen and the outputs left as "
                "pieces; pass bpe='sentencepiece', sentencepiece_model='<the spm.model it was trained "
                "with>' to from_pretrained (the recipes' is WORK_DIR/spm/spm.model)")

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, checkpoint_file: str = "checkpoint_best.pt",
                        data_name_or_path: str = ".", **overrides) -> "ConditionalVAEHubInterface":
        """Load ``model_name_or_path/checkpoint_file`` with the dictionaries in ``data_name_or_path``
        (the fairseq-preprocess directory it was trained on; a path starting with "." is relative
        to the model directory, as in fairseq). Other keywords override the saved configuration."""
        if not os.path.isfile(os.path.join(model_name_or_path, checkpoint_file)):
            raise MissingCheckpointError(
                f"checkpoint {os.path.join(model_name_or_path, checkpoint_file)!r} not found; pass the "
                f"--save-dir of fairseq-train and a checkpoint in it (checkpoint_best.pt)")
        loaded = hub_utils.from_pretrained(model_name_or_path, checkpoint_file, data_name_or_path, **overrides)
        return cls(loaded["args"], loaded["task"], loaded["models"])

    def translate(self, sentences: Sentences, n: Optional[int] = None, beam: int = 5,
                  seed: Optional[int] = None, verbose: bool = False, latent_scale: float = 1.0,
                  latent_candidates: int = 0, latent_distinct: bool = False, latent_max_copies: int = 0,
                  **generation):
        """Outputs for each sentence, with fairseq's search (``beam``, or ``sampling=True``).

        ``n`` = None: one output per sentence, decoded from the prior mean (a string per
        sentence, as fairseq's ``translate``). ``n`` = k: k outputs per sentence (a list of k
        strings per sentence), each decoded from its own draw z_i ~ p(z|x): the most
        frequent outputs of m = 4k draws (``--latent-samples k``; an output that most draws agree
        on comes again, up to its share of the k, unless ``latent_distinct``, as
        ``--latent-distinct``; ``latent_max_copies`` = c: at most c times, as
        ``--latent-max-copies``); ``seed`` fixes
        the draws (and the sampled words with ``sampling=True``), as ``--seed`` does for
        ``fairseq-generate --latent-samples k``; ``latent_scale`` = S draws z_i = mean + S * std *
        eps_i (``--latent-scale``: below 1 closer to the prior mean's output, above 1 further);
        ``latent_candidates`` = m >= k sets the number of draws (``--latent-candidates``; m = k:
        the i-th output is the i-th draw's, repeats included).
        """
        if isinstance(sentences, str):
            return self.translate([sentences], n, beam, seed, verbose, latent_scale, latent_candidates,
                                  latent_distinct, latent_max_copies, **generation)[0]
        if n is None:
            if latent_scale != 1.0 or latent_candidates or latent_distinct or latent_max_copies:
                raise OptionError("latent_scale, latent_candidates, latent_distinct and latent_max_copies choose "
                                  "the n outputs; pass "
                                  "n (without it the output is decoded from the prior mean)")
            return self.sample(sentences, beam, verbose, **generation)
        if n < 1:
            raise OptionError(f"n must be at least 1, got {n}")
        # latent_scale and latent_candidates are checked where the generator is built.
        seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else int(seed)
        generation = dict(generation, **{SAMPLES_KEY: n, SEED_KEY: seed, SCALE_KEY: float(latent_scale),
                                         CANDIDATES_KEY: int(latent_candidates), DISTINCT_KEY: bool(latent_distinct),
                                         MAX_COPIES_KEY: int(latent_max_copies)})
        with torch.random.fork_rng(devices=[]):  # torch's own generator is left as it was
            torch.manual_seed(seed)
            batched = self.generate([self.encode(sentence) for sentence in sentences], beam, verbose, **generation)
        return [[self.decode(hypo["tokens"]) for hypo in hypos] for hypos in batched]
