"""Probes of what z holds (issue 24): the figures on synthetic codes and sentences where the answer
holds by construction, and svae-report's probes end to end on a model of the real fairseq-train."""

import json
import sys
from collections import Counter

import numpy as np
import pytest
import sacrebleu
import torch

from fairseq_svae.errors import OptionError, TooFewSentencesError
from fairseq_svae.evaluation.inputs import load_split
from fairseq_svae.latent_probes import (
    label_attribute,
    label_probe,
    latent_map,
    majority_label,
    measure_shift,
    paraphrase_recall,
    swap_word,
    word_attribute,
)
from fairseq_svae.probe_report import choose_eval_sentences, choose_train_sentences, default_train_labels, read_labels

from conftest import run_command

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FILLER = ["the", "a", "dog", "cat", "runs", "sits", "here", "there", "today", "slowly", "big", "small"]


def label_free_sentences(count, rng):
    """Sentences of 3-15 words drawn from one vocabulary whatever their label."""
    return [" ".join(rng.choice(FILLER, size=rng.integers(3, 16))) for _ in range(count)]


def coded_sentences(count, labels, rng):
    """Codes whose first dimensions are the label (one-hot plus a little noise) and whose next
    dimension is the sentence's length; the words say nothing about the label."""
    label_ids = rng.integers(0, len(labels), size=count)
    # Unequal class sizes, so that the majority label is well defined.
    label_ids[: count // 3] = 0
    texts = label_free_sentences(count, rng)
    means = rng.normal(scale=0.1, size=(count, len(labels) + 5))
    means[np.arange(count), label_ids] += 3.0
    means[:, len(labels)] = [len(text.split()) for text in texts]
    return means, texts, [labels[i] for i in label_ids]


# -- label probe -------------------------------------------------------------------------------
def test_a_label_written_into_z_is_read_from_z_and_not_from_label_free_words():
    rng = np.random.default_rng(0)
    labels = ["news", "fiction", "lore"]
    train = coded_sentences(600, labels, rng)
    evaluated = coded_sentences(300, labels, rng)
    figures = label_probe(*train, *evaluated)
    assert figures["accuracy_z"] > 0.97
    assert figures["accuracy_bag_of_words"] < figures["accuracy_z"] - 0.3
    assert figures["majority_label"] == "news"
    assert figures["accuracy_majority"] == pytest.approx(np.mean(np.asarray(evaluated[2]) == "news"))
    # One dimension is the length in words: read linearly, it explains all of it.
    assert figures["length_r2_z"] > 0.99
    assert (figures["train_sentences"], figures["eval_sentences"], figures["classes"]) == (600, 300, 3)


def test_a_label_in_the_words_is_read_from_the_words():
    rng = np.random.default_rng(1)

    def sentences(count):
        labels = rng.choice(["spam", "ham"], size=count).tolist()
        texts = [f"{' '.join(rng.choice(FILLER, size=rng.integers(2, 12)))} {label}word" for label in labels]
        return rng.normal(size=(count, 8)), texts, labels

    figures = label_probe(*sentences(400), *sentences(200))
    assert figures["accuracy_bag_of_words"] == 1.0
    assert figures["accuracy_z"] < 0.75  # z is noise
    assert -0.2 < figures["length_r2_z"] < 0.2  # so is the length it would read


def test_majority_ties_go_to_the_first_label_in_sorted_order():
    assert majority_label(["b", "a", "b", "a", "c"]) == "a"
    assert majority_label(["b", "b", "a"]) == "b"


def test_a_label_probe_needs_two_labels():
    rng = np.random.default_rng(2)
    means, texts = rng.normal(size=(10, 4)), label_free_sentences(10, rng)
    with pytest.raises(TooFewSentencesError, match="at least two labels"):
        label_probe(means, texts, ["news"] * 10, means, texts, ["news"] * 10)


# -- paraphrase recall -------------------------------------------------------------------------
def test_separated_groups_are_recalled_and_chance_counts_complete_groups_only():
    rng = np.random.default_rng(3)
    group_size, groups = 5, 8
    centres = rng.normal(scale=10.0, size=(groups + 1, 6))
    means = np.repeat(centres, group_size, axis=0)[: groups * group_size + 3]
    means = means + rng.normal(scale=0.01, size=means.shape)
    texts = [f"the group{i // group_size} says {'it' if i % 2 else 'so'}" for i in range(len(means))]
    figures = paraphrase_recall(means, texts, group_size)
    # 43 sentences: the 3 of the incomplete last group are left out.
    assert (figures["sentences"], figures["groups"], figures["group_size"]) == (40, 8, 5)
    assert figures["recall_at_1_z"] == 1.0
    assert figures["recall_at_1_tfidf"] == 1.0  # each group shares a word no other group has
    assert figures["chance"] == pytest.approx(4 / 39)


def test_a_sentence_is_never_its_own_nearest_neighbour():
    # Pairs (G = 2) at angles 0/90 and 5/95 degrees: each code's nearest other code is in the
    # other pair, so recall is 0 (it would be 1 if a code could be its own neighbour).
    angles = np.radians([0, 90, 5, 95])
    means = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    figures = paraphrase_recall(means, ["a b", "c d", "e f", "g h"], 2)
    assert figures["recall_at_1_z"] == 0.0
    assert figures["chance"] == pytest.approx(1 / 3)


def test_paraphrase_recall_needs_two_groups():
    with pytest.raises(TooFewSentencesError, match="two complete groups"):
        paraphrase_recall(np.ones((7, 3)), ["a"] * 7, 5)
    with pytest.raises(OptionError, match="at least 2"):
        paraphrase_recall(np.ones((7, 3)), ["a"] * 7, 1)


# -- attribute vectors -------------------------------------------------------------------------
def test_word_attribute_vector_shifted_codes_and_a_perfect_decoder():
    train_texts = ["the woman walks", "a woman sings", "a man runs", "the man and the woman",
                   "the manager sits", "the man eats"]
    train_means = np.arange(len(train_texts) * 3, dtype=np.float32).reshape(-1, 3) ** 1.5
    eval_texts = ["a man runs home", "the woman waits", "the manager sits", "a man and a woman", "man , man"]
    eval_means = np.random.default_rng(4).normal(size=(len(eval_texts), 3)).astype(np.float32)
    attribute = word_attribute(train_means, train_texts, eval_means, eval_texts, "woman", "man")
    # Whole tokens: "manager" does not say "man"; sentences with both words are on neither side.
    assert attribute.sentences == ["a man runs home", "man , man"]
    expected_vector = train_means[[0, 1]].mean(0) - train_means[[2, 5]].mean(0)
    assert torch.allclose(attribute.vector, torch.from_numpy(expected_vector))
    assert swap_word("man , man", "man", "woman") == "woman , woman"

    seen = []

    def perfect_decoder(latents):
        seen.append(latents.clone())
        return [swap_word(text, "man", "woman") for text in attribute.sentences]

    figures = measure_shift(attribute, perfect_decoder, alphas=(0.5, 2.0), examples=1)
    for alpha, latents in zip((0.5, 2.0), seen):
        assert torch.allclose(latents, torch.from_numpy(eval_means[[0, 4]] + alpha * expected_vector))
    assert [row["alpha"] for row in figures["alphas"]] == [0.5, 2.0]
    for row in figures["alphas"]:
        assert row["judge"] == 1.0
        assert row["bleu"] == pytest.approx(100.0)
        assert row["examples"] == [{"sentence": "a man runs home", "shifted": "a woman runs home"}]
    assert figures["judge_original"] == 0.0  # by the choice of sentences
    assert figures["bleu_original"] == pytest.approx(
        sacrebleu.corpus_bleu(attribute.sentences, [attribute.references]).score)
    assert (figures["train_target_sentences"], figures["train_source_sentences"], figures["sentences"]) == (2, 2, 2)

    # A decoder that ignores the shift changes nothing: the judge sees no woman.
    unchanged = measure_shift(attribute, lambda latents: list(attribute.sentences), alphas=(1.0,))
    assert unchanged["alphas"][0]["judge"] == 0.0
    assert unchanged["alphas"][0]["bleu"] == pytest.approx(figures["bleu_original"])


def test_word_attribute_needs_sentences_on_each_side():
    means = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(TooFewSentencesError, match="'woman' and not 'man'"):
        word_attribute(means, ["a man", "the man"], means, ["a man", "the man"], "woman", "man")


def test_label_attribute_judge_and_bleu_against_the_original():
    rng = np.random.default_rng(5)
    words = {"romance": "love", "news": "jury"}
    train_labels = rng.choice(["romance", "news", "lore"], size=90).tolist()
    train_texts = [f"{' '.join(rng.choice(FILLER, size=4))} {words.get(label, 'rock')}" for label in train_labels]
    train_means = rng.normal(size=(90, 4)).astype(np.float32)
    eval_labels = ["news", "romance", "news", "lore"]
    eval_texts = ["the jury said it was late", "my love is here", "a jury sat in the court", "the rock"]
    attribute = label_attribute(train_means, train_texts, train_labels, rng.normal(size=(4, 4)), eval_texts,
                                eval_labels, "romance", "news")
    assert attribute.sentences == attribute.references == ["the jury said it was late", "a jury sat in the court"]
    labels = np.asarray(train_labels)
    expected = train_means[labels == "romance"].mean(0) - train_means[labels == "news"].mean(0)
    assert torch.allclose(attribute.vector, torch.from_numpy(expected), atol=1e-6)

    romantic = measure_shift(attribute, lambda latents: ["the love said", "a love sat here"], alphas=(1.0,))
    assert romantic["alphas"][0]["judge"] == 1.0
    assert romantic["judge_original"] == 0.0
    assert romantic["judge_accuracy"] == 1.0  # the words tell the two labels apart
    unchanged = measure_shift(attribute, lambda latents: list(attribute.sentences), alphas=(1.0,))
    assert unchanged["alphas"][0]["bleu"] == pytest.approx(100.0)
    with pytest.raises(TooFewSentencesError, match="'fiction'"):
        label_attribute(train_means, train_texts, train_labels, rng.normal(size=(4, 4)), eval_texts,
                        eval_labels, "fiction", "news")


# -- the map -----------------------------------------------------------------------------------
def test_latent_map_is_a_png_with_the_most_frequent_labels(tmp_path):
    rng = np.random.default_rng(6)
    labels = [f"label{i}" for i in range(12) for _ in range(12 - i)] + [None] * 5
    means = rng.normal(size=(len(labels), 6))
    path = tmp_path / "map.png"
    figures = latent_map(means, labels, str(path), max_tsne_points=40)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert figures["labels_shown"] == [f"label{i}" for i in range(10)]
    assert (figures["sentences"], figures["tsne_sentences"]) == (len(labels), 40)


def test_latent_map_without_matplotlib_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if not installed
    with pytest.raises(OptionError, match=r"fairseq-svae\[plot\]"):
        latent_map(np.zeros((6, 3)), ["a"] * 6, str(tmp_path / "map.png"))
    assert not (tmp_path / "map.png").exists()


# -- which sentences and labels ----------------------------------------------------------------
def test_eval_sentences_are_whole_groups_and_seeded():
    chosen = choose_eval_sentences(103, 22, group_size=5, seed=1)
    assert len(chosen) == 20 and chosen == sorted(chosen)
    assert all(chosen[i] % 5 == 0 and chosen[i:i + 5] == list(range(chosen[i], chosen[i] + 5))
               for i in range(0, 20, 5))
    assert max(chosen) < 100  # the incomplete last group is never chosen
    assert chosen == choose_eval_sentences(103, 22, group_size=5, seed=1)
    assert choose_eval_sentences(103, 22, group_size=5, seed=2) != chosen
    assert choose_eval_sentences(10, 50, group_size=0, seed=1) == list(range(10))
    assert set(choose_train_sentences(10, 50, seed=1, excluded=[2, 3])) == set(range(10)) - {2, 3}


def test_label_files(tmp_path):
    assert default_train_labels("data/brown/test.genre", "test") == "data/brown/train.genre"
    assert default_train_labels("valid.genre", "valid") == "train.genre"
    labels = tmp_path / "test.genre"
    labels.write_text("news\nlore\n", encoding="utf-8")
    assert read_labels(str(labels), 2, "--labels", "test") == ["news", "lore"]
    with pytest.raises(OptionError, match="has 2 lines but the test split has 3 sentences"):
        read_labels(str(labels), 3, "--labels", "test")


def parsed_report_options(*extra):
    from fairseq import options

    from fairseq_svae.cli.report import build_parser

    return options.parse_args_and_arch(build_parser(), ["data-bin", "--path", "model.pt", *map(str, extra)])


def test_without_probe_options_no_probe_runs_and_probe_options_are_checked():
    from fairseq_svae.cli.report import probes_requested
    from fairseq_svae.probe_report import ProbeSettings, settings_from_command_line

    assert not probes_requested(parsed_report_options("--probe-sentences", 10, "--attribute-alphas", "1"))
    args = parsed_report_options("--paraphrase-group-size", 5, "--attribute-words", "woman,man")
    assert probes_requested(args)
    settings = settings_from_command_line(args)
    assert settings.attribute_words == ("woman", "man")
    assert settings.attribute_alphas == ProbeSettings().attribute_alphas == (0.5, 1.0, 1.5, 2.0)
    for extra, message in ((("--attribute-words", "woman"), "two different words"),
                           (("--labels", "x", "--attribute-alphas", "1,x"), "numbers separated by commas"),
                           (("--paraphrase-group-size", 1), "at least 2"),
                           (("--latent-map", "map.png"), "add --labels FILE or --paraphrase-group-size"),
                           (("--attribute-labels", "a,b"), "needs --labels")):
        with pytest.raises(OptionError, match=message):
            settings_from_command_line(parsed_report_options(*extra))


# -- svae-report end to end --------------------------------------------------------------------
def length_label(line):
    words = len(line.split())
    return "short" if words <= 12 else "medium" if words <= 25 else "long"


@pytest.fixture(scope="module")
def length_labels(brown_slice, tmp_path_factory):
    """A label per sentence of the slice's test and train splits: its length class (all Brown
    sentences of the slice are news, so genre would be a single label)."""
    folder = tmp_path_factory.mktemp("labels")
    labels = {}
    for split in ("train", "test"):
        labels[split] = [length_label(line) for line in
                         (brown_slice / f"{split}.txt").read_text(encoding="utf-8").splitlines()]
        (folder / f"{split}.length").write_text("\n".join(labels[split]) + "\n", encoding="utf-8")
    return folder / "test.length", labels


def svae_report(data_bin, checkpoint, *extra):
    return run_command(
        "svae-report", data_bin, "--path", checkpoint, "--cpu", "--gen-subset", "test", "--prior-samples", 5,
        "--reconstructions", 5, "--homotopies", 0, "--imputations", 0, "--max-len-b", 12, "--seed", 5,
        "--no-progress-bar", *extra, check=False,
    )


def test_svae_report_probes(trained_model, data_bin, brown_slice, length_labels, tmp_path):
    label_file, labels = length_labels
    out, picture = tmp_path / "report.json", tmp_path / "map.png"
    result = svae_report(data_bin, trained_model[0] / "checkpoint_best.pt", "--json", out,
                         "--labels", label_file, "--paraphrase-group-size", 5, "--attribute-words", "a,the",
                         "--attribute-labels", "long,short", "--attribute-alphas", "0.5,2", "--latent-map", picture)
    assert result.returncode == 0, result.stderr[-3000:]
    probes = json.loads(out.read_text())["probes"]

    # All 200 test sentences (40 whole groups of 5) and all 2,000 train sentences of the slice.
    assert (probes["sentences"], probes["train_sentences"]) == (200, 2000)
    figures = probes["labels"]
    for key in ("accuracy_z", "accuracy_bag_of_words", "accuracy_majority"):
        assert 0.0 <= figures[key] <= 1.0, key
    majority = Counter(labels["train"]).most_common(1)[0][0]
    assert figures["majority_label"] == majority
    assert figures["accuracy_majority"] == pytest.approx(labels["test"].count(majority) / 200)
    assert figures["length_r2_z"] <= 1.0

    paraphrase = probes["paraphrase"]
    assert paraphrase["chance"] == pytest.approx(4 / 199)
    assert 0.0 <= paraphrase["recall_at_1_z"] <= 1.0 and 0.0 <= paraphrase["recall_at_1_tfidf"] <= 1.0

    words = probes["attribute_words"]
    test_lines = (brown_slice / "test.txt").read_text(encoding="utf-8").splitlines()
    assert words["sentences"] == sum("the" in line.split() and "a" not in line.split() for line in test_lines)
    assert words["judge_original"] == 0.0
    assert [row["alpha"] for row in words["alphas"]] == [0.5, 2.0]
    for row in words["alphas"] + probes["attribute_labels"]["alphas"]:
        assert 0.0 <= row["judge"] <= 1.0 and 0.0 <= row["bleu"] <= 100.0
        assert len(row["examples"]) == 3
    assert all("the" in pair["sentence"].split() for row in words["alphas"] for pair in row["examples"])
    by_label = probes["attribute_labels"]
    assert by_label["sentences"] == labels["test"].count("short")
    assert 0.0 <= by_label["judge_accuracy"] <= 1.0

    assert picture.read_bytes()[:8] == PNG_SIGNATURE
    assert probes["latent_map"]["coloured_by"] == "labels"
    assert set(probes["latent_map"]["labels_shown"]) == {"short", "medium", "long"}
    for text in ("probes of what z holds", "label accuracy", "paraphrase recall@1", "attribute vector a - the",
                 "attribute vector long - short", str(picture)):
        assert text in result.stdout, text


def test_svae_report_refuses_a_label_file_of_another_length(trained_model, data_bin, tmp_path):
    labels = tmp_path / "test.genre"
    labels.write_text("news\n" * 199, encoding="utf-8")
    result = svae_report(data_bin, trained_model[0] / "checkpoint_best.pt", "--labels", labels)
    assert result.returncode == 1
    assert "OptionError" in result.stderr and "199 lines but the test split has 200 sentences" in result.stderr
    assert "probes" not in result.stdout


def test_svae_report_first_of_each_group_reads_only_each_groups_first_sentence(trained_model, data_bin,
                                                                               brown_slice, tmp_path):
    out = tmp_path / "report.json"
    result = run_command(
        "svae-report", data_bin, "--path", trained_model[0] / "checkpoint_best.pt", "--cpu", "--gen-subset", "test",
        "--prior-samples", 30, "--reconstructions", 30, "--homotopies", 4, "--homotopy-steps", 3,
        "--imputations", 3, "--imputation-iterations", 1, "--max-len-b", 12, "--seed", 5, "--no-progress-bar",
        "--json", out, "--paraphrase-group-size", 5, "--first-of-each-group", "--attribute-words", "a,the",
        "--attribute-alphas", "1", check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    task, dataset = load_split(str(data_bin), "test")
    text = [task.dictionary.string(dataset[i]["source"]) for i in range(len(dataset))]
    firsts, others = set(text[::5]), set(text) - set(text[::5])
    # 40 groups of 5 in the slice's test split: 30 of the 40 first sentences, never another.
    reconstructed = [pair["sentence"] for pair in report["outputs"]["reconstructions"]]
    assert len(reconstructed) == 30 and set(reconstructed) <= firsts and not set(reconstructed) & others
    for path in report["outputs"]["homotopies"]:
        assert len(path) == 3
    assert all(row["truth"] in firsts for row in report["outputs"]["imputation"])
    # Paraphrase recall still reads every sentence of the probed groups; shifts move first sentences only.
    probes = report["probes"]
    assert probes["sentences"] == 200
    shifted = sum("the" in line.split() and "a" not in line.split() for line in text[::5])
    assert probes["attribute_words"]["sentences"] == shifted
    assert all(pair["sentence"] in firsts for row in probes["attribute_words"]["alphas"] for pair in row["examples"])

    refused = run_command("svae-report", data_bin, "--path", trained_model[0] / "checkpoint_best.pt", "--cpu",
                          "--first-of-each-group", "--no-progress-bar", check=False)
    assert refused.returncode == 1 and "add --paraphrase-group-size G" in refused.stderr
