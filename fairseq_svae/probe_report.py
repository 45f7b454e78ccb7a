"""``svae-report``'s probes of what z holds: which sentences, labels and codes they read.

The figures are :mod:`fairseq_svae.latent_probes`'s; this module chooses the sentences (seeded),
reads the label files, computes posterior means with the hub, decodes shifted codes with the
report's decoding for codes, and prints the result. Probes are fit on sentences of the ``train``
split of the data directory and measured on sentences of the evaluated split, so that a probe
that memorises its training sentences gains nothing.
"""

import os
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from fairseq_svae.errors import MissingDataError, OptionError, TooFewSentencesError
from fairseq_svae.evaluation.inputs import load_split
from fairseq_svae.latent_probes import (
    label_attribute,
    label_probe,
    latent_map,
    measure_shift,
    paraphrase_recall,
    shown_groups,
    word_attribute,
)

TRAIN_SPLIT = "train"
Progress = Optional[Callable[[int], None]]


@dataclass
class ProbeSettings:
    labels: Optional[str] = None
    train_labels: Optional[str] = None
    sentences: int = 5000
    train_sentences: int = 10000
    paraphrase_group_size: int = 0
    attribute_words: Optional[Tuple[str, str]] = None  # (target, source)
    attribute_labels: Optional[Tuple[str, str]] = None  # (target, source)
    attribute_alphas: Tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    latent_map: Optional[str] = None
    # Attribute shifts move only the first sentence of each paraphrase group (captions: the first
    # caption of each image); recall still reads every sentence of the probed groups.
    first_of_each_group: bool = False
    seed: int = 1
    examples: int = 3

    @property
    def needs_train_split(self) -> bool:
        return bool(self.labels or self.attribute_words or self.attribute_labels)


# -- options -----------------------------------------------------------------------------------
def parse_pair(value: Optional[str], option: str, example: str) -> Optional[Tuple[str, str]]:
    if value is None:
        return None
    parts = [part.strip() for part in value.split(",")]
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1] or any(" " in part for part in parts):
        raise OptionError(f"{option} takes two different words separated by a comma, TARGET,SOURCE "
                          f"(e.g. {option} {example}), got {value!r}")
    return parts[0], parts[1]


def parse_alphas(value: str) -> Tuple[float, ...]:
    try:
        alphas = tuple(float(part) for part in value.split(","))
    except ValueError:
        raise OptionError(f"--attribute-alphas takes numbers separated by commas (e.g. 0.5,1,1.5,2), "
                          f"got {value!r}") from None
    return alphas


def settings_from_command_line(args) -> ProbeSettings:
    """The probe options of ``svae-report``, checked."""
    settings = ProbeSettings(
        labels=args.labels, train_labels=args.train_labels, sentences=args.probe_sentences,
        train_sentences=args.probe_train_sentences, paraphrase_group_size=args.paraphrase_group_size or 0,
        attribute_words=parse_pair(args.attribute_words, "--attribute-words", "woman,man"),
        attribute_labels=parse_pair(args.attribute_labels, "--attribute-labels", "romance,news"),
        attribute_alphas=parse_alphas(args.attribute_alphas), latent_map=args.latent_map,
        first_of_each_group=args.first_of_each_group, seed=args.seed,
    )
    if settings.sentences < 1 or settings.train_sentences < 1:
        raise OptionError(f"--probe-sentences and --probe-train-sentences must be >= 1, got "
                          f"{settings.sentences} and {settings.train_sentences}")
    group = settings.paraphrase_group_size
    if args.paraphrase_group_size is not None and group < 2:
        raise OptionError(f"--paraphrase-group-size must be at least 2 (a sentence and a paraphrase), got {group}")
    if group and settings.sentences < 2 * group:
        raise OptionError(f"--probe-sentences {settings.sentences} holds fewer than two groups of "
                          f"--paraphrase-group-size {group}; raise it to at least {2 * group}")
    if settings.attribute_labels and not settings.labels:
        raise OptionError("--attribute-labels needs --labels FILE (one label per sentence of the split)")
    if settings.latent_map and not (settings.labels or group):
        raise OptionError("--latent-map colours sentences by label or by paraphrase group: "
                          "add --labels FILE or --paraphrase-group-size G")
    return settings


def default_train_labels(labels: str, split: str) -> str:
    """``--labels``'s file with the split's name replaced by ``train`` (test.genre -> train.genre)."""
    folder, name = os.path.split(labels)
    parts = name.split(".")
    return os.path.join(folder, ".".join(TRAIN_SPLIT if part == split else part for part in parts))


def read_labels(path: str, sentences: int, option: str, split: str) -> List[str]:
    """One label per line, exactly as many as the split has sentences."""
    if not os.path.isfile(path):
        raise MissingDataError(f"{option} {path} does not exist: pass a file with one label per "
                               f"sentence of the {split} split ({sentences} lines)")
    with open(path, encoding="utf-8") as handle:
        labels = [line.strip() for line in handle.read().splitlines()]
    if len(labels) != sentences:
        raise OptionError(f"{option} {path} has {len(labels)} lines but the {split} split has {sentences} "
                          f"sentences: pass the label file of that split, one label per line")
    return labels


def train_labels_path(settings: ProbeSettings, split: str) -> str:
    if settings.train_labels:
        return settings.train_labels
    guess = default_train_labels(settings.labels, split)
    if guess == settings.labels or not os.path.isfile(guess):
        raise OptionError(f"the probes are fit on the {TRAIN_SPLIT} split and need its labels: "
                          f"{guess} does not exist; pass --train-labels FILE (one label per line of "
                          f"the {TRAIN_SPLIT} split)")
    return guess


# -- which sentences ---------------------------------------------------------------------------
def choose_eval_sentences(available: int, count: int, group_size: int, seed: int) -> List[int]:
    """At most ``count`` sentence indices of the evaluated split, seeded, in order; with a
    group size, whole groups of consecutive sentences (for paraphrase recall)."""
    rng = np.random.default_rng([seed, 24])
    if group_size:
        groups = np.sort(rng.permutation(available // group_size)[: count // group_size])
        return [int(g) * group_size + k for g in groups for k in range(group_size)]
    return np.sort(rng.permutation(available)[:count]).tolist()


def choose_train_sentences(available: int, count: int, seed: int, excluded: Sequence[int] = ()) -> List[int]:
    """At most ``count`` sentence indices of the train split, seeded, in order; ``excluded``
    (the eval sentences, when the evaluated split is the train split) are never chosen."""
    candidates = np.setdiff1d(np.arange(available), np.asarray(excluded, dtype=np.int64))
    rng = np.random.default_rng([seed, 25])
    return np.sort(rng.permutation(candidates)[:count]).tolist()


# -- the report --------------------------------------------------------------------------------
class ProbeReport:
    """Reads and checks everything the probes need when built (so that a wrong option fails
    before the sample report runs); :meth:`make` computes the probes."""

    def __init__(self, hub, data_dir: str, split: str, dataset, settings: ProbeSettings,
                 code_generation: Optional[Dict] = None):
        self.hub = hub
        self.dictionary = hub.dictionary
        self.split = split
        self.dataset = dataset
        self.settings = settings
        self.code_generation = dict(code_generation or {})
        self.progress: Progress = None
        group = settings.paraphrase_group_size
        self.eval_ids = choose_eval_sentences(len(dataset), settings.sentences, group, settings.seed)
        if group and len(self.eval_ids) < 2 * group:
            raise TooFewSentencesError(f"the {split} split has {len(dataset)} sentences, fewer than two "
                                       f"groups of --paraphrase-group-size {group}")
        self.eval_labels = None
        if settings.labels:
            labels = read_labels(settings.labels, len(dataset), "--labels", split)
            self.eval_labels = [labels[i] for i in self.eval_ids]
        self.train_dataset, self.train_ids, self.train_labels = None, [], None
        if settings.needs_train_split:
            _, self.train_dataset = load_split(data_dir, TRAIN_SPLIT)
            self.train_ids = choose_train_sentences(len(self.train_dataset), settings.train_sentences, settings.seed,
                                                    excluded=self.eval_ids if split == TRAIN_SPLIT else ())
            if settings.labels:
                labels = read_labels(train_labels_path(settings, split), len(self.train_dataset),
                                     "--train-labels", TRAIN_SPLIT)
                self.train_labels = [labels[i] for i in self.train_ids]
        if settings.attribute_words:
            for word in settings.attribute_words:
                if self.dictionary.index(word) == self.dictionary.unk():
                    raise OptionError(f"--attribute-words: {word!r} is not in the model's dictionary, so no "
                                      f"sentence can say it; choose words of the training data")
        if settings.attribute_labels:
            known = set(self.train_labels)
            for label in settings.attribute_labels:
                if label not in known:
                    raise OptionError(f"--attribute-labels: no training sentence is labelled {label!r}; "
                                      f"the labels are {sorted(known)[:20]}")
            source = settings.attribute_labels[1]
            if source not in self.eval_labels:
                raise OptionError(f"--attribute-labels: no probed {split} sentence is labelled {source!r}, so "
                                  f"none can be moved away from it; choose a label of the {split} split")

    def text(self, tokens: torch.Tensor) -> str:
        """Words as the dictionary sees them, as the rest of the report measures them."""
        return self.dictionary.string(tokens)

    def posterior_means(self, dataset, ids: Sequence[int]) -> np.ndarray:
        return self.hub.posterior_means([dataset[i]["source"] for i in ids], progress=self.progress)

    def decode(self, latents: torch.Tensor) -> List[str]:
        # Seeded like the report's prior samples, and torch's own generator left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.settings.seed)
            tokens = self.hub.decode_latents_to_tokens(latents, progress=self.progress, **self.code_generation)
        return [self.text(t) for t in tokens]

    def shifted_positions(self) -> List[int]:
        """Positions in ``eval_ids`` of the sentences an attribute shift may move."""
        group = self.settings.paraphrase_group_size
        if self.settings.first_of_each_group:
            return [k for k, i in enumerate(self.eval_ids) if i % group == 0]
        return list(range(len(self.eval_ids)))

    def make(self, progress: Progress = None) -> Dict:
        """The probes' figures; ``progress(n)`` is called as n sentences are encoded or decoded."""
        settings = self.settings
        self.progress = progress
        eval_means = self.posterior_means(self.dataset, self.eval_ids)
        eval_texts = [self.text(self.dataset[i]["source"]) for i in self.eval_ids]
        probes = {"settings": dict(asdict(settings), split=self.split, train_split=TRAIN_SPLIT,
                                   code_decoding=self.code_generation),
                  "sentences": len(self.eval_ids), "train_sentences": len(self.train_ids)}
        train_means, train_texts = None, None
        if self.train_dataset is not None:
            train_means = self.posterior_means(self.train_dataset, self.train_ids)
            train_texts = [self.text(self.train_dataset[i]["source"]) for i in self.train_ids]
        if settings.labels:
            probes["labels"] = label_probe(train_means, train_texts, self.train_labels,
                                           eval_means, eval_texts, self.eval_labels)
        if settings.paraphrase_group_size:
            probes["paraphrase"] = paraphrase_recall(eval_means, eval_texts, settings.paraphrase_group_size)
        shifted = self.shifted_positions()
        if settings.attribute_words:
            target, source = settings.attribute_words
            attribute = word_attribute(train_means, train_texts, eval_means[shifted],
                                       [eval_texts[k] for k in shifted], target, source)
            probes["attribute_words"] = measure_shift(attribute, self.decode, settings.attribute_alphas,
                                                      settings.examples)
        if settings.attribute_labels:
            target, source = settings.attribute_labels
            attribute = label_attribute(train_means, train_texts, self.train_labels, eval_means[shifted],
                                        [eval_texts[k] for k in shifted], [self.eval_labels[k] for k in shifted],
                                        target, source)
            probes["attribute_labels"] = measure_shift(attribute, self.decode, settings.attribute_alphas,
                                                       settings.examples)
        if settings.latent_map:
            if self.eval_labels is not None:
                labels, coloured_by = self.eval_labels, "labels"
            else:
                labels, coloured_by = shown_groups(len(self.eval_ids), settings.paraphrase_group_size), "groups"
            probes["latent_map"] = dict(latent_map(eval_means, labels, settings.latent_map, seed=settings.seed),
                                        coloured_by=coloured_by)
        return probes


# -- the table ---------------------------------------------------------------------------------
def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def probe_table(probes: Dict) -> str:
    """What ``svae-report`` prints after its other output."""
    settings = probes["settings"]
    fit_on = (f", probes fit on {probes['train_sentences']} {settings['train_split']} sentences"
              if probes["train_sentences"] else "")
    lines = [f"\nprobes of what z holds ({probes['sentences']} {settings['split']} sentences{fit_on}):"]
    if "labels" in probes or "paraphrase" in probes:
        lines += ["| probe | z | words | baseline |", "|---|---|---|---|"]
    if "labels" in probes:
        f = probes["labels"]
        lines.append(f"| label accuracy ({f['classes']} labels; logistic regression) | {_percent(f['accuracy_z'])} | "
                     f"{_percent(f['accuracy_bag_of_words'])} (bag of words) | {_percent(f['accuracy_majority'])} "
                     f"(majority: {f['majority_label']}) |")
        lines.append(f"| length in words, R² (linear) | {f['length_r2_z']:.3f} | – | 0 |")
    if "paraphrase" in probes:
        f = probes["paraphrase"]
        lines.append(f"| paraphrase recall@1 ({f['groups']} groups of {f['group_size']}; cosine) | "
                     f"{_percent(f['recall_at_1_z'])} | {_percent(f['recall_at_1_tfidf'])} (TF-IDF) | "
                     f"{_percent(f['chance'])} (chance) |")
    for key in ("attribute_words", "attribute_labels"):
        if key not in probes:
            continue
        f = probes[key]
        reference = "the original with the word swapped" if f["kind"] == "words" else "the original"
        judge = f"judge: {f['judge']}"
        if "judge_accuracy" in f:
            judge += f", {_percent(f['judge_accuracy'])} accurate on the two labels"
        lines.append(f"\nattribute vector {f['target']} - {f['source']} (|v| = {f['vector_norm']:.2f}, from "
                     f"{f['train_target_sentences']} + {f['train_source_sentences']} training sentences), "
                     f"added to {f['sentences']} sentences ({judge}; of the originals "
                     f"{_percent(f['judge_original'])}):")
        lines.append(f"| alpha | judge | BLEU against {reference} |")
        lines.append("|---|---|---|")
        for row in f["alphas"]:
            lines.append(f"| {row['alpha']:g} | {_percent(row['judge'])} | {row['bleu']:.1f} |")
        if "bleu_original" in f:
            lines.append(f"(the originals themselves: BLEU {f['bleu_original']:.1f})")
        # Each example once, with what it became at every alpha.
        for number, pair in enumerate(f["alphas"][0]["examples"] if f["alphas"] else []):
            lines.append(f"  {pair['sentence']}")
            lines.extend(f"  {row['alpha']:>4g} -> {row['examples'][number]['shifted']}" for row in f["alphas"])
    if "latent_map" in probes:
        f = probes["latent_map"]
        lines.append(f"\nlatent map (PCA and t-SNE of {f['sentences']} posterior means, coloured by "
                     f"{f['coloured_by']}): {f['path']}")
    return "\n".join(lines)
