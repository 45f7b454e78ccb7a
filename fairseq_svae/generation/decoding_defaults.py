"""How the latent-space commands decode when the user says nothing: the one home of those defaults.

Chosen from ``svae-report`` on the pretrained Brown model (figures in
examples/brown/pretrained/README.md), one choice per use:

- Sentences of the prior (``sample``): ancestral sampling with nucleus (top-p 0.9) truncation
  and 3-gram blocking (``no_repeat_ngram_size=3``). Greedy search from the prior runs 87% of the
  samples into loops to the length cap ("the <unk> of the <unk> of ..."); nucleus sampling gives
  the data's length, variety (distinct-2 0.79 against the test sentences' 0.74) and a critic
  perplexity near the data's (183 against 170).
- Sentences of a given code (reconstructions, homotopies, attribute shifts, posterior samples,
  imputation): nucleus sampling at temperature 0.8 with *shared noise* (every sentence draws its
  words with the same seeded random numbers), so that a code always decodes to the same
  sentence, a path's endpoints are the two reconstructions, and what changes along a path comes
  from the code. Greedy decoding of a code, as Bowman et al. decoded, gives the decoder's generic
  sentence for nearly every code of a model whose code carries about 2 nats: 2.9 distinct
  sentences on a 7-step homotopy against 7.0, and reconstructions that are all alike
  (distinct-2 0.02 against 0.57).
- ``<unk>``: the decoder may not output it (``unkpen``, a penalty of 30 nats on its
  log-probability: never in practice). A word-level model sees 5.9% <unk> in Brown's test split and
  learns to say it where any rare word fits; in text a person reads it is noise. With
  ``unkpen=0`` the model's own distribution comes back.

A model trained to carry a high rate (``--target-kl`` of :data:`GREEDY_FROM_NATS` nats or more,
read from its checkpoint) is decoded greedily for both uses, as Bowman et al. decoded: its code
fixes most of the sentence, and sampled words only add noise to what the code says. On a
captions model trained at ``--target-kl 40`` (the showcase before the 80-nat one) greedy
decoding with 3-gram blocking gives fitted-prior samples at a critic perplexity of 23.0 against
nucleus sampling's 38.7 (the test captions: 23.7), reconstruction BLEU 36.3 against 31.7 and
homotopies whose neighbouring steps share more words (Jaccard 0.33 against 0.29), still 6.8
distinct sentences of 7.

Options a user passes win; a user who names any search option (beam, sampling, sampling_topk,
sampling_topp, temperature) chooses the search alone, with none of these search defaults mixed in.
"""

from typing import Dict, Iterable, Optional

# Penalty in nats on <unk>'s log-probability: e^-30 (1e-13) makes it never chosen in practice,
# while a <unk> forced by a given beginning (imputation) keeps a finite score in fp32.
NO_UNK = 30.0

DECODE_CODE = {"beam": 1, "sampling": True, "sampling_topp": 0.9, "temperature": 0.8, "shared_sampling_noise": True,
               "no_repeat_ngram_size": 3, "unkpen": NO_UNK}
SAMPLE_PRIOR = {"beam": 1, "sampling": True, "sampling_topp": 0.9, "no_repeat_ngram_size": 3, "unkpen": NO_UNK}

# The rate from which greedy search decodes: between the Brown model's ~5 nats, where greedy
# search loops or says one generic sentence, and the captions model's 40, where it is best.
GREEDY_FROM_NATS = 20.0
DECODE_HIGH_RATE = {"beam": 1, "no_repeat_ngram_size": 3, "unkpen": NO_UNK}

# The two uses of the defaults: a code given (reconstruction, homotopy, ...) and a prior sample.
CODE, PRIOR = "code", "prior"

SEARCH_OPTIONS = frozenset({"beam", "sampling", "sampling_topk", "sampling_topp", "temperature",
                            "shared_sampling_noise"})


def with_defaults(defaults: Dict, given: Dict, pinned: Iterable[str] = ()) -> Dict:
    """``given`` options over ``defaults``, leaving out the defaults of any ``pinned`` option (set
    when the model was loaded) and, when a search option is given or pinned, every search default."""
    chosen = set(given) | set(pinned)
    searching = bool(chosen & SEARCH_OPTIONS)
    kept = {name: value for name, value in defaults.items()
            if name not in chosen and not (searching and name in SEARCH_OPTIONS)}
    return {**kept, **given}


def defaults_for(use: str, trained_rate: Optional[float]) -> Dict:
    """The decoding defaults of ``use`` (:data:`CODE` or :data:`PRIOR`) for a model trained to hold
    ``trained_rate`` nats of KL (None: not trained at a set rate)."""
    if use not in (CODE, PRIOR):
        raise ValueError(f"use must be {CODE!r} or {PRIOR!r}, got {use!r}")
    if trained_rate is not None and trained_rate >= GREEDY_FROM_NATS:
        return DECODE_HIGH_RATE
    return DECODE_CODE if use == CODE else SAMPLE_PRIOR


def trained_rate(saved_cfg) -> Optional[float]:
    """The ``--target-kl`` a checkpoint's configuration (dict or DictConfig) was trained with."""
    criterion = (saved_cfg or {}).get("criterion") or {}
    rate = criterion.get("target_kl") if hasattr(criterion, "get") else None
    return float(rate) if rate is not None else None
