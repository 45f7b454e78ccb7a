"""Quality and diversity of N outputs per source, the figures of fairseq's translation_moe scorer
(``fairseq/examples/translation_moe/score.py``, Shen et al. 2019), for one or several references.

- average BLEU: corpus BLEU of all N x S outputs, each against its own source's references (the
  scorer's multi-reference BLEU, whose flattened corpus repeats each reference N times);
- oracle BLEU: corpus BLEU of the one output per source that scores best against that source's
  references at the sentence level (the scorer's smoothed sentence BLEU, which it uses to match
  outputs to references). It is usually well above the average, but not always: corpus BLEU is
  not a mean of sentence scores (its n-gram counts and brevity penalty are pooled), so picking
  each source's best sentence can lower it on a few short, poor outputs;
- pairwise BLEU: corpus BLEU of every ordered pair of different outputs of one source, one as the
  hypothesis and the other as the reference, pooled over all sources (the scorer's pairwise
  BLEU: 100 when the N outputs are the same, lower the more they differ).

With several references per source, :func:`diversity_figures` also gives the scorer's
leave-one-out multi-reference BLEU and the number of references covered (references that are the
best match of at least one output), and :func:`reference_figures` the same figures of the human
references themselves: the anchor a paraphrase model's diversity is read against.

Every corpus BLEU is :func:`fairseq_svae.text_statistics.bleu` (sacreBLEU, 13a tokenization), so
all systems are scored alike. Outputs and references are the text as the data ships it (here
lowercased and tokenized), with any subword segmentation removed.
"""

from typing import Dict, List, Sequence

from sacrebleu.metrics import BLEU

from fairseq_svae.errors import OptionError
from fairseq_svae.text_statistics import bleu as corpus_bleu

# Outputs[i] are the N outputs of source i; References[i] its references (one or more).
Outputs = Sequence[Sequence[str]]
References = Sequence[Sequence[str]]

# The scorer's sentence BLEU adds one to the matches and totals of 2- to 4-grams (so that a short
# sentence without a 4-gram match still ranks by its other n-grams), then smooths the rest as
# sacreBLEU's corpus BLEU does.
_SENTENCE_NGRAM_SMOOTHING = 1
_sentence_statistics = BLEU(force=True)


def sentence_bleu(hypothesis: str, references: Sequence[str]) -> float:
    """The scorer's smoothed sentence BLEU of one output against one or more references."""
    counts = _sentence_statistics.corpus_score([hypothesis], [[reference] for reference in references])
    correct, total = list(counts.counts), list(counts.totals)
    for order in range(1, len(correct)):
        correct[order] += _SENTENCE_NGRAM_SMOOTHING
        total[order] += _SENTENCE_NGRAM_SMOOTHING
    return BLEU.compute_bleu(correct, total, counts.sys_len, counts.ref_len, smooth_method="exp").score


def reference_streams(references: References) -> List[List[str]]:
    """sacreBLEU's layout: stream j holds every source's j-th reference."""
    counts = {len(source_references) for source_references in references}
    if len(counts) != 1 or 0 in counts:
        raise OptionError(f"every source needs the same number (>= 1) of references; found {sorted(counts)}")
    return [list(stream) for stream in zip(*references)]


def _check_outputs(outputs: Outputs, references: References) -> int:
    if len(outputs) != len(references):
        raise OptionError(f"{len(outputs)} sources have outputs but {len(references)} have references")
    counts = {len(source_outputs) for source_outputs in outputs}
    if len(counts) != 1 or 0 in counts:
        raise OptionError(f"every source needs the same number (>= 1) of outputs; found {sorted(counts)}")
    return counts.pop()


def average_bleu(outputs: Outputs, references: References) -> float:
    n = _check_outputs(outputs, references)
    flat_outputs = [output for source_outputs in outputs for output in source_outputs]
    streams = [[reference for reference in stream for _ in range(n)] for stream in reference_streams(references)]
    return corpus_bleu(flat_outputs, streams)


def best_outputs(outputs: Outputs, references: References) -> List[str]:
    """Each source's output with the highest sentence BLEU (the first of equals)."""
    _check_outputs(outputs, references)
    return [max(source_outputs, key=lambda output: sentence_bleu(output, source_references))
            for source_outputs, source_references in zip(outputs, references)]


def oracle_bleu(outputs: Outputs, references: References) -> float:
    return corpus_bleu(best_outputs(outputs, references), reference_streams(references))


def pairwise_bleu(outputs: Outputs) -> float:
    """Each output against each other output of its source; needs N >= 2."""
    hypotheses, others = [], []
    for source_outputs in outputs:
        for i, reference in enumerate(source_outputs):
            for j, hypothesis in enumerate(source_outputs):
                if i != j:
                    hypotheses.append(hypothesis)
                    others.append(reference)
    if not hypotheses:
        raise OptionError("pairwise BLEU needs at least two outputs per source")
    return corpus_bleu(hypotheses, [others])


def leave_one_out_bleu(outputs: Outputs, references: References) -> float:
    """The scorer's multi-reference BLEU: the mean over held-out references of the average BLEU
    against the others (comparable with the references' own figure); needs >= 2 references."""
    streams = reference_streams(references)
    if len(streams) < 2:
        raise OptionError("leave-one-out BLEU needs at least two references per source")
    scores = [average_bleu(outputs, [source_references[:held_out] + source_references[held_out + 1:]
                                     for source_references in references])
              for held_out in range(len(streams))]
    return sum(scores) / len(scores)


def references_covered(outputs: Outputs, references: References) -> float:
    """Mean number of a source's references that are the best sentence-BLEU match of at least one
    of its outputs (ties go to the first reference; the scorer breaks them at random)."""
    _check_outputs(outputs, references)
    covered = 0
    for source_outputs, source_references in zip(outputs, references):
        covered += len({max(range(len(source_references)),
                            key=lambda j: sentence_bleu(output, [source_references[j]]))
                        for output in source_outputs})
    return covered / len(outputs)


def diversity_figures(outputs: Outputs, references: References) -> Dict[str, float]:
    """Every figure that applies to N outputs per source and M references per source: the BLEU of
    the first outputs (a search's best), and for N >= 2 the average, oracle and pairwise BLEU."""
    n = _check_outputs(outputs, references)
    m = len(reference_streams(references))
    figures = {
        "outputs_per_source": n,
        "references_per_source": m,
        "first_output_bleu": corpus_bleu([source_outputs[0] for source_outputs in outputs],
                                         reference_streams(references)),
    }
    if n > 1:
        figures["average_bleu"] = average_bleu(outputs, references)
        figures["oracle_bleu"] = oracle_bleu(outputs, references)
        figures["pairwise_bleu"] = pairwise_bleu(outputs)
    if m > 1:
        figures["leave_one_out_bleu"] = leave_one_out_bleu(outputs, references)
        figures["references_covered"] = references_covered(outputs, references)
    return figures


def reference_figures(references: References) -> Dict[str, float]:
    """The human references' own pairwise BLEU and leave-one-out BLEU (each reference against the
    others of its source), for sources with at least two references."""
    streams = reference_streams(references)
    if len(streams) < 2:
        raise OptionError("the references' own figures need at least two references per source")
    hypotheses, others = [], [[] for _ in range(len(streams) - 1)]
    for j, stream in enumerate(streams):
        hypotheses.extend(stream)
        for k, other in enumerate(streams[:j] + streams[j + 1:]):
            others[k].extend(other)
    return {"pairwise_bleu": pairwise_bleu(references), "leave_one_out_bleu": corpus_bleu(hypotheses, others)}


def bleu_signature(references_per_source: int) -> str:
    """sacreBLEU's signature of the corpus BLEU settings, for the record."""
    metric = BLEU(force=True)
    metric.corpus_score(["."], [["."]] * references_per_source)  # the signature needs nrefs
    return metric.get_signature().format()
