"""Probes of what a latent code holds: labels, length, paraphrases, attribute vectors, a map.

Pure functions over posterior means (numpy arrays, one row per sentence) and the same
sentences' text (words as the model's dictionary sees them, separated by spaces), so that every
figure can be checked on data where the answer holds by construction. Each figure about z
stands beside the same measurement on the words themselves and beside chance: a code that
predicts a sentence's genre 30% of the time says little when the sentence's words predict it
25% of the time and the most frequent genre alone scores 14%.

The classifiers and projections are scikit-learn's; the attribute-vector arithmetic is
:mod:`fairseq_svae.generation.latent_space`'s. Decoding is the caller's: :func:`measure_shift`
takes a ``decode`` callback (codes in, sentences out), so this module needs no model.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.manifold import TSNE
from sklearn.metrics import pairwise_distances_chunked, r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fairseq_svae.errors import OptionError, TooFewSentencesError
from fairseq_svae.generation.latent_space import attribute_vector, shift
from fairseq_svae.text_statistics import bleu

Decode = Callable[[torch.Tensor], List[str]]
Judge = Callable[[Sequence[str]], float]

# A ceiling that converged fits never reach: a probe stopped early would understate what its
# features hold (scikit-learn's default of 100 stops lbfgs early on a 20k-word vocabulary).
MAX_ITERATIONS = 1000
# Colours of the latent map: matplotlib's tab10 has ten distinguishable ones.
MAP_LABELS = 10


# -- words -------------------------------------------------------------------------------------
def words(text: str) -> List[str]:
    """A sentence's tokens: the dictionary's words, which are separated by single spaces."""
    return text.split()


def _word_counter(vectorizer=CountVectorizer, **options):
    # Whole tokens as the dictionary has them: no lowercasing, punctuation kept as words.
    return vectorizer(tokenizer=words, token_pattern=None, lowercase=False, **options)


def bag_of_words_classifier():
    """Logistic regression on word counts: what the words alone say about a label.

    Newton-CG: on 10,000 Brown sentences (15 genres, 20k words) it converges in about ten
    iterations and 2 s, where lbfgs needs 180 iterations and 30 s for the same accuracy."""
    return make_pipeline(_word_counter(), LogisticRegression(solver="newton-cg", max_iter=MAX_ITERATIONS))


def latent_classifier():
    """Logistic regression on standardized posterior means (dimensions differ in scale by
    orders of magnitude: an inactive unit's means are all near 0)."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=MAX_ITERATIONS))


# -- labels and length -------------------------------------------------------------------------
def majority_label(labels: Sequence[str]) -> str:
    """The most frequent label; among equally frequent ones the first in sorted order, so the
    choice does not depend on the order of the sentences."""
    counts = Counter(labels)
    most = max(counts.values())
    return min(label for label, count in counts.items() if count == most)


def _check_aligned(means: np.ndarray, texts: Sequence, labels: Optional[Sequence], what: str) -> None:
    if len(means) != len(texts) or (labels is not None and len(labels) != len(texts)):
        raise ValueError(f"{what}: {len(means)} posterior means, {len(texts)} sentences"
                         + ("" if labels is None else f" and {len(labels)} labels") + " must be as many")


def length_r2(train_means: np.ndarray, train_texts: Sequence[str], eval_means: np.ndarray,
              eval_texts: Sequence[str]) -> float:
    """R² on the eval sentences of their length in words read linearly from z (fit on train)."""
    train_lengths = [len(words(text)) for text in train_texts]
    eval_lengths = [len(words(text)) for text in eval_texts]
    regression = LinearRegression().fit(np.asarray(train_means, dtype=np.float64), train_lengths)
    return float(r2_score(eval_lengths, regression.predict(np.asarray(eval_means, dtype=np.float64))))


def label_probe(train_means: np.ndarray, train_texts: Sequence[str], train_labels: Sequence[str],
                eval_means: np.ndarray, eval_texts: Sequence[str], eval_labels: Sequence[str]) -> Dict:
    """Accuracy on the eval sentences of a logistic regression on their posterior means, of one
    on their words and of the majority class (each fit on the train sentences), and the R² of
    sentence length read linearly from z."""
    _check_aligned(train_means, train_texts, train_labels, "train sentences")
    _check_aligned(eval_means, eval_texts, eval_labels, "eval sentences")
    classes = sorted(set(train_labels))
    if len(classes) < 2:
        raise TooFewSentencesError(
            f"a label probe needs training sentences of at least two labels, got only {classes}: "
            f"pass --train-labels with the labels of the train split, or more --probe-train-sentences")
    if len(eval_labels) == 0:
        raise TooFewSentencesError("a label probe needs at least one eval sentence; raise --probe-sentences")
    eval_labels = np.asarray(eval_labels)
    latent = latent_classifier().fit(np.asarray(train_means, dtype=np.float64), train_labels)
    lexical = bag_of_words_classifier().fit(list(train_texts), train_labels)
    majority = majority_label(train_labels)
    return {
        "train_sentences": len(train_labels),
        "eval_sentences": int(eval_labels.size),
        "classes": len(classes),
        "majority_label": majority,
        "accuracy_z": float(np.mean(latent.predict(np.asarray(eval_means, dtype=np.float64)) == eval_labels)),
        "accuracy_bag_of_words": float(np.mean(lexical.predict(list(eval_texts)) == eval_labels)),
        "accuracy_majority": float(np.mean(eval_labels == majority)),
        "length_r2_z": length_r2(train_means, train_texts, eval_means, eval_texts),
    }


# -- paraphrases -------------------------------------------------------------------------------
def nearest_neighbour_recall(vectors, group_size: int) -> float:
    """Share of rows whose cosine nearest neighbour among the other rows is in their group
    (rows ``g * group_size`` to ``(g + 1) * group_size - 1``); dense or sparse rows."""
    groups = np.arange(vectors.shape[0]) // group_size

    def nearest_other(distances, start):
        rows = np.arange(distances.shape[0])
        distances[rows, start + rows] = np.inf  # a sentence is not its own neighbour
        return distances.argmin(axis=1)

    # Chunked: 5,000 sentences would otherwise hold a 5,000 x 5,000 distance matrix at once.
    neighbours = np.concatenate(list(pairwise_distances_chunked(vectors, metric="cosine",
                                                                reduce_func=nearest_other)))
    return float(np.mean(groups[neighbours] == groups))


def paraphrase_chance(sentences: int, group_size: int) -> float:
    """recall@1 of a random neighbour: G - 1 of the N - 1 other sentences are in the group."""
    return (group_size - 1) / (sentences - 1)


def paraphrase_recall(means: np.ndarray, texts: Sequence[str], group_size: int) -> Dict:
    """recall@1 of paraphrases, where each ``group_size`` consecutive sentences describe one
    thing: by the posterior means, by TF-IDF vectors of the words, and by chance.

    Cosine over the raw means: an inactive unit's means are near 0 and add nothing, where
    standardizing would blow its noise up to the scale of the units in use."""
    _check_aligned(means, texts, None, "paraphrase sentences")
    if group_size < 2:
        raise OptionError(f"--paraphrase-group-size must be at least 2 (a sentence and a paraphrase), got {group_size}")
    count = len(texts) // group_size * group_size  # complete groups only
    if count < 2 * group_size:
        raise TooFewSentencesError(
            f"paraphrase recall needs at least two complete groups of {group_size} sentences, got "
            f"{len(texts)} sentences; raise --probe-sentences or check --paraphrase-group-size")
    texts = list(texts[:count])
    tfidf = _word_counter(TfidfVectorizer).fit_transform(texts)
    return {
        "sentences": count,
        "group_size": group_size,
        "groups": count // group_size,
        "recall_at_1_z": nearest_neighbour_recall(np.asarray(means[:count], dtype=np.float64), group_size),
        "recall_at_1_tfidf": nearest_neighbour_recall(tfidf, group_size),
        "chance": paraphrase_chance(count, group_size),
    }


# -- attribute vectors -------------------------------------------------------------------------
def has_word_and_not(text: str, present: str, absent: str) -> bool:
    """Whether ``present`` is one of the sentence's tokens and ``absent`` is not."""
    tokens = set(words(text))
    return present in tokens and absent not in tokens


def swap_word(text: str, source: str, target: str) -> str:
    """The sentence with every ``source`` token replaced by ``target``: a perfect word shift."""
    return " ".join(target if word == source else word for word in words(text))


def word_judge(target: str, source: str) -> Judge:
    """Share of sentences that say ``target`` and not ``source``."""
    return lambda texts: float(np.mean([has_word_and_not(t, target, source) for t in texts])) if texts else float("nan")


@dataclass
class AttributeShift:
    """An attribute vector, the eval sentences it moves, what a perfect move would say, and
    the judge of whether a sentence has the attribute."""

    vector: torch.Tensor
    means: np.ndarray
    sentences: List[str]
    references: List[str]
    judge: Judge
    description: Dict = field(default_factory=dict)


def _attribute_vector(train_means: np.ndarray, with_attribute: Sequence[int], without: Sequence[int]) -> torch.Tensor:
    train_means = torch.as_tensor(np.asarray(train_means, dtype=np.float32))
    return attribute_vector(train_means[list(with_attribute)], train_means[list(without)])


def word_attribute(train_means: np.ndarray, train_texts: Sequence[str], eval_means: np.ndarray,
                   eval_texts: Sequence[str], target: str, source: str) -> AttributeShift:
    """Move sentences that say ``source`` (and not ``target``) toward ``target``: the vector is
    the mean code of train sentences with ``target`` and not ``source`` minus that of the
    reverse; the reference of a shifted sentence is the original with the word swapped."""
    _check_aligned(train_means, train_texts, None, "train sentences")
    _check_aligned(eval_means, eval_texts, None, "eval sentences")
    with_target = [i for i, text in enumerate(train_texts) if has_word_and_not(text, target, source)]
    with_source = [i for i, text in enumerate(train_texts) if has_word_and_not(text, source, target)]
    moved = [i for i, text in enumerate(eval_texts) if has_word_and_not(text, source, target)]
    for side, found, split in ((f"{target!r} and not {source!r}", with_target, "training"),
                               (f"{source!r} and not {target!r}", with_source, "training"),
                               (f"{source!r} and not {target!r}", moved, "eval")):
        if not found:
            raise TooFewSentencesError(
                f"no {split} sentence says {side}: --attribute-words needs both words in the "
                f"training sentences and the second in the eval sentences; choose more frequent "
                f"words or raise --probe-train-sentences / --probe-sentences")
    sentences = [eval_texts[i] for i in moved]
    return AttributeShift(
        vector=_attribute_vector(train_means, with_target, with_source),
        means=np.asarray(eval_means)[moved],
        sentences=sentences,
        references=[swap_word(text, source, target) for text in sentences],
        judge=word_judge(target, source),
        description={"kind": "words", "target": target, "source": source,
                     "judge": f"says {target!r} and not {source!r}",
                     "train_target_sentences": len(with_target), "train_source_sentences": len(with_source),
                     "bleu_original": bleu(sentences, [[swap_word(t, source, target) for t in sentences]])},
    )


def label_attribute(train_means: np.ndarray, train_texts: Sequence[str], train_labels: Sequence[str],
                    eval_means: np.ndarray, eval_texts: Sequence[str], eval_labels: Sequence[str],
                    target: str, source: str) -> AttributeShift:
    """Move eval sentences labelled ``source`` toward ``target``: the vector is the mean code of
    train sentences labelled ``target`` minus that of those labelled ``source``; the judge is a
    bag-of-words classifier of the two labels fit on the same train sentences; the reference of
    a shifted sentence is the original (how much of it survives the move)."""
    _check_aligned(train_means, train_texts, train_labels, "train sentences")
    _check_aligned(eval_means, eval_texts, eval_labels, "eval sentences")
    with_target = [i for i, label in enumerate(train_labels) if label == target]
    with_source = [i for i, label in enumerate(train_labels) if label == source]
    moved = [i for i, label in enumerate(eval_labels) if label == source]
    for label, found, split in ((target, with_target, "training"), (source, with_source, "training"),
                                (source, moved, "eval")):
        if not found:
            raise TooFewSentencesError(
                f"no {split} sentence is labelled {label!r}: --attribute-labels TARGET,SOURCE needs "
                f"both labels among the training sentences and SOURCE among the eval sentences "
                f"(training labels: {sorted(set(train_labels))[:20]})")
    both = with_target + with_source
    classifier = bag_of_words_classifier().fit([train_texts[i] for i in both], [train_labels[i] for i in both])
    judged = [i for i, label in enumerate(eval_labels) if label in (target, source)]

    def says_target(texts: Sequence[str]) -> float:
        return float(np.mean(classifier.predict(list(texts)) == target)) if texts else float("nan")

    sentences = [eval_texts[i] for i in moved]
    return AttributeShift(
        vector=_attribute_vector(train_means, with_target, with_source),
        means=np.asarray(eval_means)[moved],
        sentences=sentences,
        references=sentences,
        judge=says_target,
        description={
            "kind": "labels", "target": target, "source": source,
            "judge": f"bag-of-words logistic regression ({target} vs {source}) says {target!r}",
            "train_target_sentences": len(with_target), "train_source_sentences": len(with_source),
            # How far to trust the judge: its accuracy on eval sentences of the two labels.
            "judge_accuracy": float(np.mean(
                classifier.predict([eval_texts[i] for i in judged]) == np.asarray([eval_labels[i] for i in judged]))),
        },
    )


def measure_shift(attribute: AttributeShift, decode: Decode, alphas: Sequence[float], examples: int = 3) -> Dict:
    """Decode each moved sentence's code plus alpha times the vector, for each alpha: the share
    the judge says has the attribute and sacreBLEU against the references, with examples.

    ``decode`` turns an ``n x latent_dim`` tensor of codes into n sentences."""
    means = torch.as_tensor(np.asarray(attribute.means, dtype=np.float32))
    rows = []
    for alpha in alphas:
        shifted = decode(shift(means, attribute.vector, float(alpha)))
        rows.append({
            "alpha": float(alpha),
            "judge": attribute.judge(shifted),
            "bleu": bleu(shifted, [attribute.references]),
            "examples": [{"sentence": s, "shifted": h} for s, h in zip(attribute.sentences[:examples], shifted)],
        })
    return dict(attribute.description, sentences=len(attribute.sentences),
                vector_norm=float(attribute.vector.norm()),
                judge_original=attribute.judge(attribute.sentences), alphas=rows)


# -- the map -----------------------------------------------------------------------------------
def _shown_labels(labels: Sequence[Optional[str]], most: int) -> List[str]:
    """The ``most`` most frequent labels; equally frequent ones in the order they first appear
    (paraphrase groups: group 1, 2, ..., 10)."""
    counts = Counter(label for label in labels if label is not None)
    return [label for label, _ in counts.most_common(most)]


def _tsne_rows(coloured: np.ndarray, most: int, seed: int) -> np.ndarray:
    """At most ``most`` rows (t-SNE's time grows with the points), coloured ones first so that
    a few groups among thousands of sentences stay on the map."""
    order = np.random.default_rng([seed, 30]).permutation(coloured.size)
    order = order[np.argsort(~coloured[order], kind="stable")]
    return np.sort(order[:most])


def latent_map(means: np.ndarray, labels: Sequence[Optional[str]], path: str, seed: int = 1,
               max_labels: int = MAP_LABELS, max_tsne_points: int = 5000) -> Dict:
    """A PNG of the posterior means in two dimensions, by PCA and by t-SNE, each point coloured
    by its label (the ``max_labels`` most frequent labels; the rest, and ``None``, in grey)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise OptionError("--latent-map draws with matplotlib, an optional dependency: "
                          "pip install 'fairseq-svae[plot]' (or pip install matplotlib)") from None
    means = np.asarray(means, dtype=np.float64)
    if len(labels) != len(means):
        raise ValueError(f"{len(means)} posterior means but {len(labels)} labels")
    if means.ndim != 2 or means.shape[1] < 2:
        raise OptionError(f"a 2-D map needs codes of at least 2 dimensions, got shape {means.shape}")
    if len(means) < 5:
        raise TooFewSentencesError(
            f"a latent map needs at least 5 sentences, got {len(means)}; raise --probe-sentences")
    shown = _shown_labels(labels, max_labels)
    colour_of = {label: number for number, label in enumerate(shown)}
    coloured = np.array([label in colour_of for label in labels])

    pca = PCA(n_components=2, random_state=seed).fit(means)
    tsne_rows = _tsne_rows(coloured, max_tsne_points, seed)
    # t-SNE's perplexity must stay below the number of points.
    perplexity = min(30.0, (tsne_rows.size - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(means[tsne_rows])

    # A Figure of its own, not pyplot: no global backend is chosen and no window can open.
    figure = Figure(figsize=(13, 6), layout="constrained")
    panels = figure.subplots(1, 2)
    variance = pca.explained_variance_ratio_
    for axes, points, rows, title in (
            (panels[0], pca.transform(means), np.arange(len(means)),
             f"PCA ({100 * variance[0]:.0f}% + {100 * variance[1]:.0f}% of the variance)"),
            (panels[1], tsne, tsne_rows, f"t-SNE ({tsne_rows.size} sentences)")):
        rest = ~coloured[rows]
        axes.scatter(points[rest, 0], points[rest, 1], s=4, c="lightgrey",
                     label="other" if rest.any() else None)
        for label in shown:
            mine = np.array([labels[i] == label for i in rows])
            axes.scatter(points[mine, 0], points[mine, 1], s=6, color=f"C{colour_of[label]}", label=label)
        axes.set_title(title)
        axes.set_xticks([])
        axes.set_yticks([])
    panels[1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3, frameon=False)
    figure.suptitle(f"posterior means of {len(means)} sentences")
    figure.savefig(path, dpi=110)
    return {"path": str(path), "sentences": len(means), "tsne_sentences": int(tsne_rows.size),
            "labels_shown": shown, "pca_explained_variance": [float(v) for v in variance]}


def shown_groups(count: int, group_size: int, most: int = MAP_LABELS) -> List[Optional[str]]:
    """Map labels for paraphrase groups: the first ``most`` groups by number, the rest None."""
    return [f"group {i // group_size + 1}" if i // group_size < most else None for i in range(count)]

