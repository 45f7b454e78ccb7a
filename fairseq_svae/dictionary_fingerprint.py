"""A short, pickle-safe description of a fairseq Dictionary, stored in every checkpoint.

fairseq checkpoints do not contain the dictionary: the word of embedding row i is whatever line
i of the data directory's ``dict.txt`` says at load time. A different ``dict.txt`` (another
corpus, another ``--thresholdsrc``) of the same size would load silently and decode nonsense;
of another size it fails with a tensor-shape error deep inside torch. Comparing fingerprints
before the weights are loaded turns both into one clear error.
"""

import hashlib
from typing import Dict, Union

from fairseq.data import Dictionary

Fingerprint = Dict[str, Union[int, str]]


def dictionary_fingerprint(dictionary: Dictionary) -> Fingerprint:
    """Number of types and a SHA-256 of the symbols in id order (counts do not matter)."""
    digest = hashlib.sha256("\n".join(dictionary.symbols).encode("utf-8")).hexdigest()
    # Plain ints and strings only: checkpoints are read with torch's weights_only protection.
    return {"types": len(dictionary), "sha256": digest}


def describe(fingerprint: Fingerprint) -> str:
    return f"{fingerprint['types']} types, sha256 {str(fingerprint['sha256'])[:12]}"
