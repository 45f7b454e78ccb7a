"""The translation harness: the diversity scorer against sacreBLEU and fairseq's translation_moe
scorer on sentences where the answer holds by construction, and svae-translation-eval end to end
on a slice of Multi30k with a real fairseq lstm (fairseq-preprocess, fairseq-train,
fairseq-generate)."""

import contextlib
import io
import json
import math

import pytest
import sacrebleu
from conftest import PLUGIN_DIR, REPO, run_command

from fairseq_svae.diversity_bleu import (
    average_bleu,
    diversity_figures,
    leave_one_out_bleu,
    oracle_bleu,
    pairwise_bleu,
    reference_figures,
    references_covered,
    sentence_bleu,
)
from fairseq_svae.cli import translation_eval
from fairseq_svae.cli.user_dir import plugin_directory
from fairseq_svae.errors import MissingCheckpointError, OptionError
from fairseq_svae.text_statistics import has_repeated_ngram
from fairseq_svae.translation_eval.generation import Setting, generate_command, runs_of

MULTI30K = REPO.parent / "shared" / "data" / "multi30k"

# Already tokenized, as the corpora ship: sacreBLEU's 13a tokenization leaves them as they are,
# so its figures equal those of translation_moe's scorer (which does not tokenize).
REFERENCES = [
    ["a man in an orange hat is looking at something .", "a man wears an orange hat and glasses ."],
    ["a dog is running on the green grass .", "a black dog runs in a garden near a white fence ."],
    ["two girls are playing in the snow .", "two children play outside in the winter snow ."],
]
OUTPUTS = [
    ["a man in an orange hat looks at something .", "a man wears a hat .", "a man is looking ."],
    ["a dog is running on the grass .", "a black dog runs near a fence .", "the dog plays in a garden ."],
    ["two girls play in the snow .", "children are outside in the snow .", "two kids are playing ."],
]


def test_one_output_per_source_scores_as_corpus_bleu():
    hypotheses = [outputs[0] for outputs in OUTPUTS]
    expected = sacrebleu.corpus_bleu(hypotheses, [[refs[0] for refs in REFERENCES]]).score
    single = [[h] for h in hypotheses]
    first_references = [[refs[0]] for refs in REFERENCES]
    assert average_bleu(single, first_references) == pytest.approx(expected)
    assert oracle_bleu(single, first_references) == pytest.approx(expected)
    assert diversity_figures(single, first_references)["first_output_bleu"] == pytest.approx(expected)
    multi = sacrebleu.corpus_bleu(hypotheses, [list(stream) for stream in zip(*REFERENCES)]).score
    assert diversity_figures(single, REFERENCES)["first_output_bleu"] == pytest.approx(multi)
    assert multi > expected  # a second reference can only add matches


def test_identical_outputs_have_pairwise_bleu_100_and_disjoint_ones_0():
    assert pairwise_bleu([[outputs[0]] * 4 for outputs in OUTPUTS]) == pytest.approx(100)
    assert pairwise_bleu([["a b c d e", "f g h i j"], ["k l m n o", "p q r s t"]]) == 0
    with pytest.raises(OptionError):
        pairwise_bleu([[outputs[0]] for outputs in OUTPUTS])


def test_pairwise_and_leave_one_out_equal_translation_moe_scorer():
    score = pytest.importorskip("fairseq.examples.translation_moe.score")
    assert pairwise_bleu(OUTPUTS) == pytest.approx(score.pairwise(OUTPUTS))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        score.multi_ref(REFERENCES, OUTPUTS)  # prints its figures (two decimals)
        score.intra_ref(REFERENCES)
    lines = dict(line.rsplit(": ", 1) for line in printed.getvalue().splitlines())
    assert leave_one_out_bleu(OUTPUTS, REFERENCES) == pytest.approx(
        float(lines["average multi-reference BLEU (leave-one-out)"]), abs=0.006)
    figures = reference_figures(REFERENCES)
    assert figures["pairwise_bleu"] == pytest.approx(float(lines["ref pairwise BLEU"]), abs=0.006)
    assert figures["leave_one_out_bleu"] == pytest.approx(float(lines["multi-reference BLEU (leave-one-out)"]), abs=0.006)


def test_average_bleu_is_corpus_bleu_of_all_outputs_with_each_sources_references():
    flat = [output for outputs in OUTPUTS for output in outputs]
    streams = [[refs[j] for refs in REFERENCES for _ in range(3)] for j in range(2)]
    assert average_bleu(OUTPUTS, REFERENCES) == pytest.approx(sacrebleu.corpus_bleu(flat, streams).score)
    # Leave-one-out with two references: each reference alone, averaged.
    alone = [average_bleu(OUTPUTS, [[refs[j]] for refs in REFERENCES]) for j in range(2)]
    assert leave_one_out_bleu(OUTPUTS, REFERENCES) == pytest.approx(sum(alone) / 2)


def test_oracle_picks_the_output_that_is_a_reference():
    # One output of each source is one of its references: the oracle scores 100, above the average.
    outputs = [outputs[:2] + [refs[1]] for outputs, refs in zip(OUTPUTS, REFERENCES)]
    figures = diversity_figures(outputs, REFERENCES)
    assert figures["oracle_bleu"] == pytest.approx(100)
    assert figures["average_bleu"] < figures["oracle_bleu"]
    assert 0 < figures["pairwise_bleu"] < 100


def test_references_covered_counts_distinct_best_matches():
    both = [list(refs) for refs in REFERENCES]  # the outputs are the two references
    assert references_covered(both, REFERENCES) == 2
    assert references_covered([[refs[0], refs[0]] for refs in REFERENCES], REFERENCES) == 1
    assert reference_figures([[refs[0]] * 3 for refs in REFERENCES]) == pytest.approx(
        {"pairwise_bleu": 100, "leave_one_out_bleu": 100})


def test_sentence_bleu_is_add_one_smoothed_above_unigrams():
    assert sentence_bleu(OUTPUTS[0][0], [OUTPUTS[0][0]]) == pytest.approx(100)
    for outputs, refs in zip(OUTPUTS, REFERENCES):
        for output in outputs:
            expected = sacrebleu.sentence_bleu(output, refs, smooth_method="add-k", smooth_value=1).score
            assert sentence_bleu(output, refs) == pytest.approx(expected)


def test_uneven_outputs_or_references_are_refused():
    with pytest.raises(OptionError, match="same number"):
        diversity_figures([["a b"], ["c d", "e f"]], [["a b"], ["c d"]])
    with pytest.raises(OptionError, match="same number"):
        diversity_figures([["a b"], ["c d"]], [["a b"], ["c d", "e f"]])
    with pytest.raises(OptionError, match="2 sources"):
        diversity_figures([["a b"], ["c d"]], [["a b"]])


def test_a_translation_moe_setting_runs_each_expert_with_its_user_dir():
    setting = Setting("moe", "moe.pt", ["--task", "translation_moe", "--method", "hMoEup", "--num-experts", "5"])
    runs = runs_of(setting)
    assert [run[-2:] for run in runs] == [["--gen-expert", str(e)] for e in range(5)]
    command = generate_command("bin", "moe.pt", runs[0], [])
    assert command[command.index("--user-dir") + 1] == plugin_directory("translation_moe")
    assert runs_of(Setting("lstm", "lstm.pt", ["--beam", "5"])) == [["--beam", "5"]]
    with pytest.raises(OptionError, match="--gen-expert"):
        runs_of(Setting("moe", "moe.pt", ["--task=translation_moe", "--gen-expert", "1"]))
    # An OPTIONS string that is one option alone stays the setting's, not argparse's.
    assert translation_eval.take_settings(["bin", "--setting", "s", "lstm.pt", "--sampling", "--seed", "2"]) == \
        (["bin", "--seed", "2"], [["s", "lstm.pt", "--sampling"]])


def test_harness_refuses_a_missing_checkpoint_and_uneven_references(tmp_path):
    references = tmp_path / "test.de"
    references.write_text("ein hund .\n", encoding="utf-8")
    with pytest.raises(MissingCheckpointError, match="nothing.pt"):
        translation_eval.main([str(tmp_path), "--references", str(references), "--output-dir", str(tmp_path / "out"),
                               "--setting", "lstm", str(tmp_path / "nothing.pt"), "--beam 5"])
    shorter = tmp_path / "test2.de"
    shorter.write_text("", encoding="utf-8")
    with pytest.raises(OptionError, match="differ in length"):
        translation_eval.main([str(tmp_path), "--references", str(references), str(shorter),
                               "--output-dir", str(tmp_path / "out")])
    with pytest.raises(OptionError, match="--iw-prior-share .* must be in \\[0, 1\\), got 1.0"):
        translation_eval.main([str(tmp_path), "--references", str(references), "--output-dir", str(tmp_path / "out"),
                               "--iw-prior-share", "1"])


# --- end to end -------------------------------------------------------------------------------

# 42 test pairs: not a multiple of 8, so that a split fairseq would cut short (issue #5036) shows.
TRAIN_PAIRS, TEST_PAIRS = 1000, 42
TINY_LSTM = ["--arch", "lstm", "--encoder-embed-dim", "32", "--encoder-hidden-size", "32",
             "--decoder-embed-dim", "32", "--decoder-hidden-size", "32", "--decoder-out-embed-dim", "32"]


def _teacher_forced_nll(checkpoint: str, data: str) -> float:
    """-log p(y | x) of the test targets, nats per sentence, computed here from the model's
    distributions, independently of fairseq-generate's printout."""
    import torch
    from fairseq import checkpoint_utils

    import fairseq_svae  # noqa: F401  (reads the checkpoint with the weights-only protection on)

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides={"data": data})
    model = models[0].eval()
    task.load_dataset("test")
    dataset = task.dataset("test")
    total, sentences = 0.0, 0
    with torch.no_grad():
        batch = dataset.collater([dataset[i] for i in range(len(dataset))])
        log_probs = model.get_normalized_probs(model(**batch["net_input"]), log_probs=True)
        target = batch["target"]
        token_log_probs = log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        token_log_probs = token_log_probs.masked_fill(target.eq(task.target_dictionary.pad()), 0)
        total -= token_log_probs.sum().item()
        sentences += target.size(0)
    return total / sentences


@pytest.mark.skipif(not (MULTI30K / "train.en").exists(), reason="needs shared/data/multi30k")
def test_harness_end_to_end_on_a_multi30k_slice(tmp_path):
    text = tmp_path / "text"
    text.mkdir()
    for language in ("en", "de"):
        lines = (MULTI30K / f"train.{language}").read_text(encoding="utf-8").splitlines()
        (text / f"train.{language}").write_text("\n".join(lines[:TRAIN_PAIRS]) + "\n", encoding="utf-8")
        (text / f"valid.{language}").write_text("\n".join(lines[TRAIN_PAIRS:TRAIN_PAIRS + 50]) + "\n", encoding="utf-8")
        test = (MULTI30K / f"test.{language}").read_text(encoding="utf-8").splitlines()[:TEST_PAIRS]
        (text / f"test.{language}").write_text("\n".join(test) + "\n", encoding="utf-8")
    bin_dir, save_dir, results_dir = tmp_path / "bin", tmp_path / "lstm", tmp_path / "results"
    run_command("fairseq-preprocess", "--source-lang", "en", "--target-lang", "de", "--trainpref", text / "train",
                "--validpref", text / "valid", "--testpref", text / "test", "--destdir", bin_dir, "--workers", "1")
    run_command("fairseq-train", bin_dir, "--user-dir", PLUGIN_DIR, *TINY_LSTM, "--optimizer", "adam",
                "--lr", "0.005", "--max-tokens", "2000", "--max-update", "20", "--cpu", "--num-workers", "0",
                "--seed", "1", "--save-dir", save_dir, "--no-epoch-checkpoints", "--disable-validation")
    checkpoint = str(save_dir / "checkpoint_last.pt")
    run_command("svae-translation-eval", bin_dir, "--references", text / "test.de", "--output-dir", results_dir,
                "--generate-options", "--max-len-b 30", "--examples", str(TEST_PAIRS),
                "--setting", "lstm beam 5", checkpoint, "--beam 5",
                "--setting", "lstm 5-best", checkpoint, "--beam 5 --nbest 5",
                "--nll", "lstm", checkpoint)

    results = json.loads((results_dir / "results.json").read_text(encoding="utf-8"))
    assert results["sources"] == TEST_PAIRS and results["references_per_source"] == 1
    beam, nbest = results["settings"]
    assert beam["outputs_per_source"] == 1 and nbest["outputs_per_source"] == 5
    for key in ("first_output_bleu", "average_bleu", "oracle_bleu", "pairwise_bleu"):
        assert 0 <= nbest[key] <= 100, key
    assert 0 <= beam["first_output_bleu"] <= 100
    # The 5-best list's first output is what beam 5 returns: the same search.
    assert nbest["first_output_bleu"] == pytest.approx(beam["first_output_bleu"])
    assert [example["outputs"][0] for example in nbest["examples"]] == \
           [example["outputs"][0] for example in beam["examples"]]
    # Each source's best sentence usually lifts corpus BLEU well above the average; corpus BLEU
    # is not a mean of sentence scores, so the bound is given a margin.
    assert nbest["oracle_bleu"] >= nbest["average_bleu"] - 1.0
    assert "| lstm 5-best | 5 |" in (results_dir / "results.md").read_text(encoding="utf-8")
    # Loops: the share of all outputs (every source's N) with a repeated word 3-gram.
    for row in (beam, nbest):
        outputs = [output for example in row["examples"] for output in example["outputs"]]
        assert len(outputs) == TEST_PAIRS * row["outputs_per_source"]
        looping = [output for output in outputs if has_repeated_ngram(output.split())]
        assert row["repeated_3gram"] == pytest.approx(len(looping) / len(outputs))

    nll = results["nll"][0]
    assert nll["sentences"] == TEST_PAIRS
    assert nll["nll_per_sentence"] == pytest.approx(_teacher_forced_nll(checkpoint, str(bin_dir)), rel=1e-3)
    assert nll["ppl_per_token"] == pytest.approx(
        math.exp(nll["nll_per_sentence"] * TEST_PAIRS / nll["tokens_with_eos"]))
