"""How the latent-space commands decode when the user says nothing: the one home of those defaults.

Chosen from ``svae-report`` on the pretrained Brown model (figures in
examples/brown/pretrained/README.md), one choice per use:

- Sentences of a given code (reconstructions, homotopies, attribute shifts, posterior samples,
  imputation): greedy search, as Bowman et al. decoded, so that a code always gives the same
  sentence and a path's endpoints are the two reconstructions; ``no_repeat_ngram_size=3`` stops
  the loops a word-level decoder of a small corpus falls into ("the <unk> of the <unk> of ...").
- Sentences of the prior (``sample``): ancestral sampling with nucleus (top-p) truncation and the
  same 3-gram blocking. Greedy search from the prior returns the decoder's most likely sentence
  for every code: a handful of generic sentences. Sampling matches the data's variety.
- ``<unk>``: the decoder may not output it (``unkpen``, a penalty of 30 nats on its
  log-probability: never in practice). A word-level model sees 5.9% <unk> in Brown's test split and
  learns to say it where any rare word fits; in text a person reads it is noise. With
  ``unkpen=0`` the model's own distribution comes back.

Options a user passes win; a user who names any search option (beam, sampling, sampling_topk,
sampling_topp, temperature) chooses the search alone, with none of these search defaults mixed in.
"""

from typing import Dict, Iterable

# Penalty in nats on <unk>'s log-probability: e^-30 (1e-13) makes it never chosen in practice,
# while a <unk> forced by a given beginning (imputation) keeps a finite score in fp32.
NO_UNK = 30.0

DECODE_CODE = {"beam": 1, "no_repeat_ngram_size": 3, "unkpen": NO_UNK}
SAMPLE_PRIOR = {"beam": 1, "sampling": True, "sampling_topp": 0.9, "no_repeat_ngram_size": 3, "unkpen": NO_UNK}

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
