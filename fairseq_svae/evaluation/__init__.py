"""What ``svae-eval`` does, in parts: what to score (:mod:`.inputs`), how long it will take
(:mod:`.time_estimate`), the scoring run (:mod:`.run`) and the figures it reports (:mod:`.report`).
The scorers themselves are :mod:`fairseq_svae.sentence_scorer`; the estimators
:mod:`fairseq_svae.importance_sampling`."""

from fairseq_svae.evaluation.run import evaluate

__all__ = ["evaluate"]
