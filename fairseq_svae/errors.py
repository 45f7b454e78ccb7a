"""Errors a user can act on when feeding sentences or checkpoints to the Sentence VAE.

They subclass ``ValueError`` so that callers who already catch bad values keep working; the
message always says what was wrong, with the value, and what to do instead.
"""


class SentenceInputError(ValueError):
    """A sentence the model cannot read: empty, or longer than the model allows."""


class IncompatibleCheckpointError(ValueError):
    """A checkpoint that is not a Sentence VAE, or that does not fit the given data directory."""


class DictionaryMismatchError(IncompatibleCheckpointError):
    """The data directory's dict.txt is not the dictionary the checkpoint was trained with."""
