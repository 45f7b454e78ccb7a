"""What ``svae-translation-eval`` does, in parts: the fairseq-generate runs of each setting and
their outputs (:mod:`.generation`), -log p(y | x) of the references (:mod:`.likelihood`), the
whole evaluation (:mod:`.run`) and its JSON and markdown (:mod:`.report`). The figures are
:mod:`fairseq_svae.diversity_bleu`'s."""
