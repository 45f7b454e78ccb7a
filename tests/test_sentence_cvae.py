"""The conditional Sentence VAE (--arch sentence_cvae) under fairseq's own --task translation:
real fairseq-preprocess / fairseq-train / fairseq-generate on a slice of Multi30k (en -> de)."""

import json
import logging
import math
import re
import sys
from argparse import Namespace
from collections import Counter
from pathlib import Path

import pytest
import torch

from conftest import PLUGIN_DIR, REPO, TRAIN_SEED, json_log_records, run_command
from fairseq_svae.errors import USER_ERROR_EXIT_STATUS, OptionError

MULTI30K = REPO.parent / "shared" / "data" / "multi30k"
PAIRS = {"train": 2000, "valid": 100, "test": 40}
LANGUAGES = ["--source-lang", "en", "--target-lang", "de"]
TINY_CVAE = [
    "--arch", "sentence_cvae", "--encoder-embed-dim", "32", "--encoder-hidden-size", "64",
    "--decoder-embed-dim", "32", "--decoder-hidden-size", "64", "--decoder-out-embed-dim", "32",
    "--latent-dim", "8",
]
UPDATES = 40
TARGET_KL = 2.0

pytestmark = pytest.mark.skipif(not (MULTI30K / "train.en").exists(), reason="needs shared/data/multi30k")


@pytest.fixture(scope="module")
def multi30k_bin(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("multi30k-slice")
    for split, count in PAIRS.items():
        for language in ("en", "de"):
            with open(MULTI30K / f"{split}.{language}", encoding="utf-8") as handle:
                (root / f"{split}.{language}").write_text("".join(next(handle) for _ in range(count)),
                                                          encoding="utf-8")
    destination = root / "data-bin"
    run_command("fairseq-preprocess", *LANGUAGES, "--trainpref", root / "train", "--validpref", root / "valid",
                "--testpref", root / "test", "--nwordssrc", "1000", "--nwordstgt", "1000",
                "--destdir", destination, "--workers", "1")
    return destination


def train_command(data_bin, save_dir, *extra):
    return ["fairseq-train", data_bin, "--user-dir", PLUGIN_DIR, "--task", "translation", *LANGUAGES,
            *TINY_CVAE, "--criterion", "annealed_elbo", "--optimizer", "adam", "--lr", "5e-3",
            "--batch-size", "64", "--cpu", "--save-dir", save_dir, "--log-format", "json",
            "--log-interval", "5", "--seed", TRAIN_SEED, "--num-workers", "0", *extra]


@pytest.fixture(scope="module")
def trained_cvae(multi30k_bin, tmp_path_factory):
    """(checkpoint_last.pt, fairseq-train's output) of a tiny CVAE trained with --target-kl."""
    save_dir = tmp_path_factory.mktemp("cvae")
    result = run_command(*train_command(multi30k_bin, save_dir, "--max-update", str(UPDATES),
                                        "--target-kl", str(TARGET_KL), "--no-epoch-checkpoints"))
    return save_dir / "checkpoint_last.pt", result.stdout + result.stderr


def generate(data_bin, checkpoint, *extra) -> str:
    return run_command("fairseq-generate", data_bin, "--user-dir", PLUGIN_DIR, "--task", "translation",
                       *LANGUAGES, "--path", checkpoint, "--gen-subset", "test", "--batch-size", "16",
                       "--max-len-b", "25", "--cpu", *extra).stdout


def hypotheses(output: str) -> dict:
    """Source id -> the H- lines' sentences, in the printed order."""
    found = {}
    for line in output.splitlines():
        match = re.match(r"H-(\d+)\t\S+\t(.*)$", line)
        if match:
            found.setdefault(int(match.group(1)), []).append(match.group(2))
    return found


# --- The KL against a learned prior --------------------------------------------------------------

def test_kl_between_gaussians_closed_form():
    from fairseq_svae.gaussian import kl_between_gaussians, kl_to_standard_normal

    # q = N(1, 4), p = N(-1, 2): 0.5 (ln 2 - ln 4 + (4 + 2^2) / 2 - 1) = 1.5 - 0.5 ln 2.
    kl = kl_between_gaussians(torch.tensor([1.0]), torch.tensor([math.log(4.0)]),
                              torch.tensor([-1.0]), torch.tensor([math.log(2.0)]))
    assert kl.item() == pytest.approx(1.5 - 0.5 * math.log(2.0), abs=1e-6)
    generator = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(5, 7, generator=generator), torch.randn(5, 7, generator=generator)
    # Against N(0, I) it is the standard-normal KL; against itself 0.
    assert torch.allclose(kl_between_gaussians(mean, logvar, torch.zeros(()), torch.zeros(())),
                          kl_to_standard_normal(mean, logvar), atol=1e-6)
    assert torch.allclose(kl_between_gaussians(mean, logvar, mean, logvar), torch.zeros(5, 7), atol=1e-6)


def test_rate_control_steps_itself_under_a_task_that_does_not(trained_cvae):
    """--task translation never calls observe_training_update: the criterion steps its controller
    at the first forward of the next update, with the KL per sentence of the whole update."""
    from fairseq_svae.criterions.annealed_elbo import AnnealedELBOCriterion
    from fairseq_svae.kl_control import KLRateController

    class TranslationLikeTask:
        target_dictionary = None

    criterion = AnnealedELBOCriterion(
        TranslationLikeTask(), "constant", 1.0, 0.0025, 2500, 100, 4, 0.5, 0.0, target_kl=4.0, target_kl_gain=0.01)
    assert criterion.steps_rate_control_itself
    reference = KLRateController(4.0, max_weight=1.0, gain=0.01)
    criterion.follow_update(0)
    criterion._accumulate_update_kl(torch.tensor(30.0), 3)  # two batches of update 0 (--update-freq 2)
    criterion._accumulate_update_kl(torch.tensor(50.0), 5)
    assert criterion.rate_controller.weight == 0.0
    criterion.follow_update(0)  # another batch of the same update: no step yet
    assert criterion.rate_controller.weight == 0.0
    criterion.follow_update(1)
    assert criterion.rate_controller.weight == reference.observe(80.0 / 8) > 0
    criterion.follow_update(2)  # nothing accumulated in update 1 (e.g. all batches skipped)
    assert criterion.rate_controller.weight == reference.weight
    # The end-to-end run logged weights the controller can give: within [0, --kl-max-weight].
    _, log = trained_cvae
    weights = [float(record["kl_weight"]) for record in json_log_records(log, "train_inner")]
    assert weights and all(0.0 <= weight <= 1.0 for weight in weights)


# --- Training through fairseq-train --task translation ------------------------------------------

def test_training_lowers_the_loss_with_a_finite_nonnegative_kl(trained_cvae):
    _, log = trained_cvae
    records = json_log_records(log, "train_inner")
    assert len(records) == UPDATES // 5
    first, last = float(records[0]["nll_per_token"]), float(records[-1]["nll_per_token"])
    assert last < first - 0.5  # from about ln(1000) = 6.9 nats per token at the start
    kls = [float(record["kl"]) for record in records] + [float(r["valid_kl"]) for r in json_log_records(log, "valid")]
    assert all(math.isfinite(kl) and kl >= 0 for kl in kls)


def test_bn_vae_is_refused():
    from argparse import Namespace

    from fairseq_svae.models.sentence_cvae import base_architecture, check_options

    args = Namespace(posterior_mean_bn_gamma=0.5)
    base_architecture(args)
    with pytest.raises(OptionError, match="--posterior-mean-bn-gamma 0.5: BN-VAE is not available"):
        check_options(args)


# --- Generation through fairseq-generate ------------------------------------------------------

def test_latent_samples_is_listed_by_fairseq_generate_help():
    import fairseq_svae  # noqa: F401  (what --user-dir imports before fairseq builds its parser)
    from fairseq import options

    help_text = options.get_generation_parser(default_task="translation").format_help()
    assert "--latent-samples N" in help_text and "--latent-scale S" in help_text
    assert "--latent-candidates M" in help_text and "--latent-distinct" in help_text
    assert "--latent-max-copies C" in help_text


def test_default_generation_is_one_output_per_source(multi30k_bin, trained_cvae):
    checkpoint, _ = trained_cvae
    outputs = hypotheses(generate(multi30k_bin, checkpoint, "--beam", "2"))
    assert sorted(outputs) == list(range(PAIRS["test"]))
    assert all(len(per_source) == 1 for per_source in outputs.values())


def test_latent_samples_give_n_outputs_per_source_from_distinct_draws(multi30k_bin, trained_cvae):
    checkpoint, _ = trained_cvae
    sampled = generate(multi30k_bin, checkpoint, "--latent-samples", "5", "--sampling", "--seed", "3")
    by_source = hypotheses(sampled)
    assert sorted(by_source) == list(range(PAIRS["test"]))
    assert Counter(len(outputs) for outputs in by_source.values()) == {5: PAIRS["test"]}
    for kind in ("D", "P"):  # printed as fairseq prints an N-best list
        assert len(re.findall(rf"^{kind}-\d+\t", sampled, flags=re.M)) == 5 * PAIRS["test"]
    # Deterministic per --seed.
    assert hypotheses(generate(multi30k_bin, checkpoint, "--latent-samples", "5", "--sampling", "--seed", "3")) == by_source


def test_latent_distinct_with_beam_search_gives_different_outputs(multi30k_bin, trained_cvae):
    """By construction: a beam of 5 finishes 5 different hypotheses for each draw, so with
    --latent-distinct the 5 outputs chosen among 20 draws are 5 different sentences for every
    source, and with --latent-max-copies 2 none comes more than twice; by default an output
    repeats only as often as its share of the draws allows, and the repeated ones come first."""
    checkpoint, _ = trained_cvae
    options = ["--latent-samples", "5", "--beam", "5", "--seed", "3"]
    distinct = hypotheses(generate(multi30k_bin, checkpoint, *options, "--latent-distinct"))
    assert sorted(distinct) == list(range(PAIRS["test"]))
    assert all(len(set(outputs)) == 5 for outputs in distinct.values())
    default = hypotheses(generate(multi30k_bin, checkpoint, *options))
    assert Counter(len(outputs) for outputs in default.values()) == {5: PAIRS["test"]}
    capped = hypotheses(generate(multi30k_bin, checkpoint, *options, "--latent-max-copies", "2"))
    assert Counter(len(outputs) for outputs in capped.values()) == {5: PAIRS["test"]}
    assert all(max(Counter(outputs).values()) <= 2 for outputs in capped.values())
    for outputs in default.values():
        # the copies of an output are side by side
        blocks = [output for index, output in enumerate(outputs) if index == 0 or output != outputs[index - 1]]
        assert len(blocks) == len(set(outputs))


def test_latent_scale_reaches_the_generator_through_fairseq_generates_options(multi30k_bin, trained_cvae):
    """fairseq-generate's path: the parsed option becomes a model override, the loaded model holds
    it, and the task builds the generator with it."""
    import ast

    import fairseq_svae  # noqa: F401
    from fairseq import checkpoint_utils, options
    from fairseq_svae.generation.latent_samples import LatentSamplesGenerator

    checkpoint, _ = trained_cvae
    parser = options.get_generation_parser(default_task="translation")
    args = options.parse_args_and_arch(parser, [str(multi30k_bin), "--path", str(checkpoint), "--task", "translation",
                                                "--latent-samples", "3", "--latent-scale", "0.5",
                                                "--latent-candidates", "7", "--cpu"])
    overrides = ast.literal_eval(args.model_overrides)
    assert overrides["latent_samples"] == 3 and overrides["latent_scale"] == 0.5 and args.nbest == 3
    assert overrides["latent_candidates"] == 7
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)], arg_overrides=overrides)
    assert models[0].latent_scale == 0.5 and models[0].latent_candidates == 7
    generator = task.build_generator(models, args)
    assert isinstance(generator, LatentSamplesGenerator) and generator.scale == 0.5 and generator.samples == 3
    assert generator.draws == 7
    default = options.parse_args_and_arch(options.get_generation_parser(default_task="translation"),
                                          [str(multi30k_bin), "--path", str(checkpoint), "--task", "translation",
                                           "--latent-samples", "3", "--cpu"])
    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(checkpoint)], arg_overrides=ast.literal_eval(default.model_overrides))
    default_generator = task.build_generator(models, default)
    assert default_generator.draws == 12 and default_generator.max_copies == 0  # 4N, repeats by share
    distinct = options.parse_args_and_arch(options.get_generation_parser(default_task="translation"),
                                           [str(multi30k_bin), "--path", str(checkpoint), "--task", "translation",
                                            "--latent-samples", "3", "--latent-distinct", "--cpu"])
    overrides = ast.literal_eval(distinct.model_overrides)
    assert overrides["latent_distinct"] is True
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)], arg_overrides=overrides)
    assert models[0].latent_distinct and task.build_generator(models, distinct).max_copies == 1
    capped = options.parse_args_and_arch(options.get_generation_parser(default_task="translation"),
                                         [str(multi30k_bin), "--path", str(checkpoint), "--task", "translation",
                                          "--latent-samples", "3", "--latent-max-copies", "2", "--cpu"])
    overrides = ast.literal_eval(capped.model_overrides)
    assert overrides["latent_max_copies"] == 2
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)], arg_overrides=overrides)
    assert models[0].latent_max_copies == 2 and task.build_generator(models, capped).max_copies == 2


@pytest.mark.parametrize("option, message", [
    (["--latent-max-copies", "-1"], "--latent-max-copies must be >= 0"),
    (["--latent-max-copies", "2", "--latent-distinct"],
     "--latent-distinct is --latent-max-copies 1 and cannot be combined with --latent-max-copies 2"),
    (["--latent-max-copies", "2", "--latent-candidates", "3"],
     r"--latent-max-copies \(and --latent-distinct, which is 1\) choose the N outputs among more draws than N"),
    (["--latent-distinct", "--latent-candidates", "3"], r"--latent-max-copies \(and --latent-distinct"),
])
def test_latent_max_copies_out_of_range_or_in_conflict_is_refused(multi30k_bin, trained_cvae, option, message):
    import fairseq_svae  # noqa: F401
    from fairseq import options

    parser = options.get_generation_parser(default_task="translation")
    with pytest.raises(OptionError, match=message):
        options.parse_args_and_arch(parser, [str(multi30k_bin), "--path", str(trained_cvae[0]),
                                             "--latent-samples", "3", *option])


@pytest.mark.parametrize("scale", ["0", "-1"])
def test_latent_scale_out_of_range_is_refused(multi30k_bin, trained_cvae, scale):
    import fairseq_svae  # noqa: F401
    from fairseq import options

    parser = options.get_generation_parser(default_task="translation")
    with pytest.raises(OptionError, match="--latent-scale must be > 0"):
        options.parse_args_and_arch(parser, [str(multi30k_bin), "--path", str(trained_cvae[0]),
                                             "--latent-samples", "3", f"--latent-scale={scale}"])


@pytest.mark.parametrize("candidates", ["2", "-1"])
def test_fewer_latent_candidates_than_outputs_are_refused(multi30k_bin, trained_cvae, candidates):
    import fairseq_svae  # noqa: F401
    from fairseq import options

    parser = options.get_generation_parser(default_task="translation")
    with pytest.raises(OptionError, match=rf"--latent-candidates \({candidates}\) must be at least --latent-samples \(3\)"):
        options.parse_args_and_arch(parser, [str(multi30k_bin), "--path", str(trained_cvae[0]),
                                             "--latent-samples", "3", f"--latent-candidates={candidates}"])


@pytest.mark.parametrize("option, message", [
    (["--latent-scale", "0.5"], "--latent-scale scales the draws of --latent-samples N"),
    (["--latent-candidates", "9"], "--latent-candidates M chooses the outputs of --latent-samples N"),
    (["--latent-distinct"], "--latent-distinct keeps the outputs of --latent-samples N different"),
    (["--latent-max-copies", "2"], "--latent-max-copies limits the repeats among the outputs of --latent-samples N"),
])
def test_latent_options_without_latent_samples_are_one_error_line(multi30k_bin, trained_cvae, option, message):
    result = run_command("fairseq-generate", multi30k_bin, "--user-dir", PLUGIN_DIR, "--task", "translation",
                         *LANGUAGES, "--path", trained_cvae[0], "--cpu", *option, check=False)
    assert result.returncode == USER_ERROR_EXIT_STATUS
    assert f"error: OptionError: {message}" in result.stderr
    assert "Traceback" not in result.stderr


def test_most_frequent_outputs_rank_by_count_then_probability_mass():
    """By construction: different outputs by tokens, most frequent best output first, ties to the
    greater probability mass sum_k p(y|x,z_k) over the beams that found it, each as its best-scored
    hypothesis; fewer different best outputs than asked: the frequent ones again up to their
    rounded share of the n and at most max_copies times (1: not at all), then the beams' other hypotheses, the
    greatest mass first (not the most often found), and only then do the chosen ones come round."""
    from fairseq_svae.generation.latent_samples import draws_log_mass, most_frequent_outputs

    def hypothesis(tokens, log_p, score=None):
        # score: fairseq's length-normalised score (here any value that differs from log_p)
        return {"tokens": torch.tensor(tokens), "positional_scores": torch.tensor([log_p / 2, log_p / 2]),
                "score": torch.tensor(log_p / 2 if score is None else score)}

    def tokens(chosen):
        return [h["tokens"].tolist() for h in chosen]

    # 5 is best three times, 6 twice, 7 and 8 once each; 7 is also in two other beams, so its
    # mass is the greater of the tied two.
    draws = [[hypothesis([5, 2], -1.0, score=-0.4)], [hypothesis([5, 2], -2.0, score=-0.9)],
             [hypothesis([5, 2], -1.5, score=-0.2)], [hypothesis([6, 2], -1.0), hypothesis([7, 2], -2.0)],
             [hypothesis([6, 2], -3.0), hypothesis([7, 2], -2.0)], [hypothesis([8, 2], -1.0)],
             [hypothesis([7, 2], -1.0)]]
    log_mass = draws_log_mass(draws)
    assert log_mass[(7, 2)] == pytest.approx(math.log(2 * math.exp(-2.0) + math.exp(-1.0)))
    assert log_mass[(8, 2)] == pytest.approx(-1.0)
    chosen = most_frequent_outputs(draws, 4)
    assert tokens(chosen) == [[5, 2], [6, 2], [7, 2], [8, 2]]
    assert float(chosen[0]["score"]) == pytest.approx(-0.2)  # the best-scored hypothesis of 5
    assert tokens(most_frequent_outputs(draws, 2)) == [[5, 2], [6, 2]]
    # Two different best outputs for four: 6 (found once, likely) fills in before 7 (found by
    # two beams, each unlikely), then 9.
    beams = [[hypothesis([5, 2], -0.5), hypothesis([7, 2], -5.0), hypothesis([9, 2], -7.0)],
             [hypothesis([5, 2], -0.6), hypothesis([7, 2], -5.0)],
             [hypothesis([8, 2], -0.4), hypothesis([6, 2], -1.0), hypothesis([5, 2], -3.0)]]
    assert tokens(most_frequent_outputs(beams, 5, max_copies=1)) == [[5, 2], [8, 2], [6, 2], [7, 2], [9, 2]]
    # By default: 5 (2 of 3 draws: 3.33 of 5 outputs, so 3) and 8 (1.67, so 2) fill the five.
    assert tokens(most_frequent_outputs(beams, 5)) == [[5, 2]] * 3 + [[8, 2]] * 2
    # Shares rounded half up and given out by draws per copy (Adams): of 20 draws, 14 for 5 and 6
    # for 6 (3.5 and 1.5 of 5) give 5, 5, 5 and 6, 6; four different best outputs of four draws
    # (1.25 each) leave a fifth for the beams' likeliest other hypothesis.
    twenty = [[hypothesis([5, 2], -1.0)]] * 14 + [[hypothesis([6, 2], -1.0)]] * 6
    assert tokens(most_frequent_outputs(twenty, 5)) == [[5, 2]] * 3 + [[6, 2]] * 2
    # At most two copies: the fifth output is the beams' likeliest other hypothesis (7), not a
    # third 5; a limit above every share changes nothing.
    twenty_beams = [[hypothesis([5, 2], -1.0), hypothesis([7, 2], -3.0)]] * 14 + [[hypothesis([6, 2], -1.0)]] * 6
    assert tokens(most_frequent_outputs(twenty_beams, 5, max_copies=2)) == [[5, 2]] * 2 + [[6, 2]] * 2 + [[7, 2]]
    assert tokens(most_frequent_outputs(twenty_beams, 5, max_copies=3)) == [[5, 2]] * 3 + [[6, 2]] * 2
    assert most_frequent_outputs(twenty_beams, 5, max_copies=5) == most_frequent_outputs(twenty_beams, 5)
    four = [[hypothesis([token, 2], -1.0), hypothesis([9, 2], -4.0)] for token in (5, 6, 7, 8)]
    assert sorted(tokens(most_frequent_outputs(four, 5))[:4]) == [[5, 2], [6, 2], [7, 2], [8, 2]]
    assert tokens(most_frequent_outputs(four, 5))[4] == [9, 2]
    # One hypothesis a draw (sampling): 6 (the likelier) gets the fifth-share copy; with
    # max_copies=1 the chosen ones round again.
    sampled = [[hypothesis([5, 2], -2.0)], [hypothesis([6, 2], -1.0)]]
    assert tokens(most_frequent_outputs(sampled, 3)) == [[6, 2], [6, 2], [5, 2]]
    assert tokens(most_frequent_outputs(sampled, 3, max_copies=1)) == [[6, 2], [5, 2], [6, 2]]


@pytest.fixture(scope="module")
def hub(multi30k_bin, trained_cvae):
    from fairseq_svae import SentenceCVAEModel

    checkpoint, _ = trained_cvae
    return SentenceCVAEModel.from_pretrained(str(checkpoint.parent), checkpoint_file=checkpoint.name,
                                             data_name_or_path=str(multi30k_bin))


def test_the_hub_warns_when_a_sentencepiece_model_is_loaded_without_its_bpe(hub, monkeypatch, caplog):
    """A dictionary of sentencepiece pieces without bpe=... would split sentences at spaces into
    unknown words: the hub says so and how to fix it; a word-level dictionary gets no warning."""
    from fairseq.data import Dictionary

    from fairseq_svae.conditional_hub_interface import ConditionalVAEHubInterface, looks_like_sentencepiece

    pieces = Dictionary()
    for symbol in ["\u2581a", "\u2581man", "s", "\u2581rides", "ing", "\u2581."]:
        pieces.add_symbol(symbol)
    assert looks_like_sentencepiece(pieces)
    assert not looks_like_sentencepiece(hub.src_dict)
    with caplog.at_level(logging.WARNING, logger="fairseq_svae.conditional_hub_interface"):
        ConditionalVAEHubInterface(hub.cfg, hub.task, hub.models)
        assert "sentencepiece" not in caplog.text
        monkeypatch.setattr(hub.task, "src_dict", pieces)
        ConditionalVAEHubInterface(hub.cfg, hub.task, hub.models)
    assert "pass bpe='sentencepiece', sentencepiece_model=" in caplog.text


def test_the_draws_differ_within_a_source_and_do_not_depend_on_the_batch(hub):
    """By construction: z_k ~ N(prior mean, prior variance > 0) from the sample id's own stream."""
    from fairseq_svae.generation.latent_samples import LatentSamplesGenerator

    generator = LatentSamplesGenerator(hub.task.build_generator(hub.models, hub.cfg.generation), samples=5, seed=3,
                                       candidates=5)
    tokens = [hub.encode(s) for s in ["a man rides a bike .", "two dogs play in the snow .", "a girl sings ."]]
    batch = hub.task.build_dataset_for_inference(tokens, [t.numel() for t in tokens])
    sample = batch.collater([batch[i] for i in range(len(tokens))])
    latents = generator.prior_latents(hub.models[0], sample["net_input"], sample["id"].tolist()).view(3, 5, -1)
    for source in range(3):
        assert torch.cdist(latents[source], latents[source]).add(torch.eye(5)).min() > 0
    single = batch.collater([batch[1]])
    alone = generator.prior_latents(hub.models[0], single["net_input"], single["id"].tolist())
    position = sample["id"].tolist().index(1)
    assert torch.allclose(alone, latents[position], atol=1e-5)

    # --latent-scale S: the same draws, S times as far from the prior mean.
    scaled = LatentSamplesGenerator(hub.task.build_generator(hub.models, hub.cfg.generation), samples=5, seed=3,
                                    scale=0.25, candidates=5)
    mean = hub.models[0].encoder(**{k: sample["net_input"][k] for k in ("src_tokens", "src_lengths")})["prior_mean"]
    near = scaled.prior_latents(hub.models[0], sample["net_input"], sample["id"].tolist()).view(3, 5, -1)
    assert torch.allclose(near - mean[:, None], 0.25 * (latents - mean[:, None]), atol=1e-5)


def test_hub_translates_n_outputs_per_sentence(hub):
    sentences = ["a man rides a bike .", "two dogs play in the snow ."]
    outputs = hub.translate(sentences, n=3, seed=5, sampling=True, max_len_b=20)
    assert [len(per_sentence) for per_sentence in outputs] == [3, 3]
    assert all(isinstance(text, str) for per_sentence in outputs for text in per_sentence)
    assert hub.translate(sentences, n=3, seed=5, sampling=True, max_len_b=20) == outputs
    beam = hub.translate(sentences, n=3, seed=5, beam=2, max_len_b=20)
    assert [len(per_sentence) for per_sentence in beam] == [3, 3]
    # Without n: one string, from the prior mean, whatever torch's random state.
    torch.manual_seed(1)
    single = hub.translate("a man rides a bike .", beam=2, max_len_b=20)
    torch.manual_seed(2)
    assert isinstance(single, str) and single == hub.translate("a man rides a bike .", beam=2, max_len_b=20)
    assert [len(per_sentence) for per_sentence in hub.translate(sentences, n=2, seed=5, beam=2, latent_scale=0.5,
                                                                max_len_b=20)] == [2, 2]
    with pytest.raises(OptionError, match="latent_scale, latent_candidates, latent_distinct and latent_max_copies choose"):
        hub.translate(sentences, beam=2, latent_scale=0.5)


def test_latent_candidates_keep_the_outputs_most_draws_gave(hub):
    """n outputs chosen among m draws: with latent_distinct all different (beam search fills in
    from the beams), and those of the m draws' best outputs that are chosen are the most frequent
    (the same m draws as n = m, one output each: the k-th draw of a source does not depend on how
    many are drawn); by default the same different outputs, each at most its share of the n."""
    sentences = ["a man rides a bike .", "two dogs play in the snow .", "a girl in a red dress sings ."]
    every_draw = hub.translate(sentences, n=12, seed=7, beam=2, max_len_b=20, latent_scale=3.0, latent_candidates=12)
    chosen = hub.translate(sentences, n=3, seed=7, beam=2, max_len_b=20, latent_scale=3.0,
                           latent_distinct=True)  # 4 x 3 draws
    default = hub.translate(sentences, n=3, seed=7, beam=2, max_len_b=20, latent_scale=3.0)
    assert [len(outputs) for outputs in chosen] == [3, 3, 3] == [len(outputs) for outputs in default]
    for outputs, draws, repeating in zip(chosen, every_draw, default):
        counts = Counter(draws)
        assert all(copies <= math.floor(3 * counts[output] / 12 + 0.5) or copies == 1
                   for output, copies in Counter(repeating).items())
        # the same draws' outputs as with latent_distinct; repeats instead of the beams' fill-ins
        assert {o for o in repeating if o in counts} == {o for o in outputs if o in counts}
        counts = Counter(draws)
        assert len(set(outputs)) == 3
        from_draws = [output for output in outputs if output in counts]
        assert len(from_draws) == min(3, len(counts)) and outputs[:len(from_draws)] == from_draws
        assert [counts[output] for output in from_draws] == sorted((counts[o] for o in from_draws), reverse=True)
        left_out = [counts[output] for output in counts if output not in outputs]
        assert all(counts[output] >= max(left_out, default=0) for output in from_draws)
    with pytest.raises(OptionError, match=r"--latent-candidates \(2\) must be at least --latent-samples \(3\)"):
        hub.translate(sentences, n=3, beam=2, latent_candidates=2)


def _trained_model_and_batch(checkpoint, data_bin, size=8):
    import fairseq_svae  # noqa: F401  (the plugin's safe checkpoint loading)
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(checkpoint)], arg_overrides={"data": str(data_bin)})
    task.load_dataset("test")
    dataset = task.dataset("test")
    return models[0], task, dataset.collater([dataset[i] for i in range(size)])


def test_prior_draw_fraction_decodes_those_sentences_from_the_prior(multi30k_bin, trained_cvae):
    """--prior-draw-fraction 1: every sentence is decoded from z ~ p(z|x), so the reconstruction
    term sends no gradient to q(z|x, y)'s head (only the KL does); at 0 it does."""
    model, _, sample = _trained_model_and_batch(trained_cvae[0], multi30k_bin)
    model.train()

    def reconstruction_gradients(fraction):
        model.prior_draw_fraction = fraction
        model.zero_grad()
        output, _ = model(**sample["net_input"])
        model.get_normalized_probs((output, None), log_probs=True).gather(
            -1, sample["target"].unsqueeze(-1)).sum().backward()
        return model.encoder.to_posterior.weight.grad, model.encoder.to_prior.weight.grad

    posterior_head, prior_head = reconstruction_gradients(1.0)
    assert posterior_head is None or not posterior_head.any()
    assert prior_head.abs().sum() > 0
    posterior_head, _ = reconstruction_gradients(0.0)
    assert posterior_head.abs().sum() > 0


def _prior_draws_after_seed(encoder_out, rows, draws, seed):
    """K draws z ~ p(z|x) of ``rows``, drawn here as SentenceCVAEModel.prior_candidates draws
    them after ``torch.manual_seed(seed)``: K x R x D."""
    from fairseq_svae.models.sentence_cvae import PRIOR_LOGVAR, PRIOR_MEAN

    torch.manual_seed(seed)
    mean = encoder_out[PRIOR_MEAN][rows].detach()
    return mean + (0.5 * encoder_out[PRIOR_LOGVAR][rows].detach()).exp() * torch.randn(draws, *mean.shape)


def _decoded_under_each(model, encoder_out, prev_output_tokens, rows, candidates):
    """The decoder's output for ``rows`` under each candidate z in turn."""
    from fairseq_svae.models.sentence_vae_encoder import LATENT

    for candidate in candidates:
        scored = model.encoder.reorder_encoder_out(encoder_out, rows)
        scored[LATENT] = candidate
        yield model.decoder(prev_output_tokens[rows], encoder_out=scored)


@pytest.mark.parametrize("score_tokens", [0, 3])
def test_prior_draw_best_of_trains_on_the_draw_under_which_the_target_is_likeliest(multi30k_bin, trained_cvae,
                                                                                    score_tokens):
    """--prior-draw-best-of K: of K draws z ~ p(z|x), the one that gives the target (with
    --prior-draw-score-tokens T, its first T tokens) the highest likelihood (scored here
    independently, through the model's normalized probabilities of whole targets without
    dropout); the chosen draw stays reparameterized, so the prior head gets the gradient."""
    from fairseq_svae.models.sentence_cvae import targets_of

    model, task, sample = _trained_model_and_batch(trained_cvae[0], multi30k_bin)
    model.train()
    net_input, draws = sample["net_input"], 6
    dictionary = task.target_dictionary
    assert torch.equal(targets_of(net_input["prev_output_tokens"], dictionary.pad(), dictionary.eos()),
                       sample["target"])
    model.prior_draw_best_of = draws
    model.prior_draw_score_tokens = score_tokens
    encoder_out = model.encoder(net_input["src_tokens"], net_input["src_lengths"])
    rows = torch.tensor([0, 2, 3, 7])
    scored_steps = []
    hook = model.decoder.register_forward_pre_hook(lambda _, inputs: scored_steps.append(inputs[0].size(1)))
    torch.manual_seed(11)
    chosen = model.best_prior_draws(encoder_out, net_input["prev_output_tokens"], rows)
    hook.remove()
    # One scoring pass of score_tokens steps (0: of the batch's longest target).
    assert scored_steps == [score_tokens or net_input["prev_output_tokens"].size(1)]
    assert model.training and model.decoder.training  # scored in eval mode, then put back

    candidates = _prior_draws_after_seed(encoder_out, rows, draws, seed=11)
    model.eval()
    with torch.no_grad():
        log_likelihoods = []
        for output in _decoded_under_each(model, encoder_out, net_input["prev_output_tokens"], rows, candidates):
            log_probs = model.get_normalized_probs(output, log_probs=True)
            target = sample["target"][rows]
            token_log_probs = log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            if score_tokens:
                token_log_probs = token_log_probs[:, :score_tokens]
                target = target[:, :score_tokens]
            log_likelihoods.append(token_log_probs.masked_fill(target.eq(dictionary.pad()), 0).sum(-1))
    best = torch.stack(log_likelihoods).argmax(0)
    assert torch.allclose(chosen.detach(), candidates[best, torch.arange(len(rows))], atol=1e-6)

    chosen.sum().backward()
    assert model.encoder.to_prior.weight.grad.abs().sum() > 0


def test_prior_draw_choice_posterior_takes_the_draw_that_q_finds_likeliest(multi30k_bin, trained_cvae):
    """--prior-draw-choice posterior: of K draws z ~ p(z|x), the one with the highest density
    under q(z|x, y) (computed here independently with torch.distributions), chosen without any
    decoder pass; the chosen draw stays reparameterized, so the prior head gets the gradient."""
    model, _, sample = _trained_model_and_batch(trained_cvae[0], multi30k_bin)
    model.train()
    net_input, draws = sample["net_input"], 6
    model.prior_draw_best_of = draws
    encoder_out = model.encoder(net_input["src_tokens"], net_input["src_lengths"])
    q_mean, q_logvar = model.encoder.posterior(encoder_out, net_input["prev_output_tokens"])
    rows = torch.tensor([0, 2, 3, 7])
    decoder_passes = []
    hook = model.decoder.register_forward_pre_hook(lambda *_: decoder_passes.append(1))
    torch.manual_seed(11)
    chosen = model.prior_draws_likeliest_under_posterior(encoder_out, q_mean, q_logvar, rows)
    hook.remove()
    assert not decoder_passes

    candidates = _prior_draws_after_seed(encoder_out, rows, draws, seed=11)
    q = torch.distributions.Normal(q_mean[rows].detach(), (0.5 * q_logvar[rows].detach()).exp())
    best = q.log_prob(candidates).sum(-1).argmax(0)
    assert torch.allclose(chosen.detach(), candidates[best, torch.arange(len(rows))], atol=1e-6)
    # Not simply the first draw: the choice moves at least one sentence's draw.
    assert best.ne(0).any()

    chosen.sum().backward()
    assert model.encoder.to_prior.weight.grad.abs().sum() > 0


def _with_bag_of_words_head(model, weight=1.0):
    """``model`` with a fresh bag-of-words head over [z; the source's summary], as
    --bag-of-words-loss W builds it."""
    from fairseq_svae.models.bag_of_words import BagOfWordsHead

    dictionary = model.decoder.dictionary
    torch.manual_seed(5)
    model.bag_of_words = BagOfWordsHead(model.latent_dim + model.encoder.source_encoder.output_units,
                                        len(dictionary), ignored_ids=(dictionary.pad(), dictionary.eos()))
    model.bag_of_words_weight = weight
    return model


def _independent_bag_of_words_nll(model, latent, summary, target):
    """Each sentence's NLL of its target's words (end-of-sentence and padding left out) under the
    head's softmax over [z; summary], computed here from the head's weights."""
    dictionary = model.decoder.dictionary
    head = model.bag_of_words.projection
    log_probs = (torch.cat([latent, summary], -1) @ head.weight.t() + head.bias).log_softmax(-1)
    counted = target.ne(dictionary.pad()) & target.ne(dictionary.eos())
    return -(log_probs.gather(-1, target) * counted).sum(-1)


def test_bag_of_words_loss_is_the_targets_words_under_z_and_the_source(multi30k_bin, trained_cvae):
    """--bag-of-words-loss W: the model's extra output holds the batch's summed NLL of each
    target's words under the head's one distribution from [z; the source's summary], z the
    code the decoder reads; its gradient reaches the recognition network and the source encoder."""
    from fairseq_svae.models.bag_of_words import BAG_OF_WORDS_NLL
    from fairseq_svae.models.sentence_cvae import SOURCE_STATES, final_summary

    model, _, sample = _trained_model_and_batch(trained_cvae[0], multi30k_bin)
    model = _with_bag_of_words_head(model).train()
    model.prior_draw_fraction = 0.0
    net_input = sample["net_input"]
    read = {}
    hook = model.decoder.register_forward_pre_hook(
        lambda _, args, kwargs: read.update(latent=kwargs["encoder_out"]["latent"].detach()), with_kwargs=True)
    _, extra = model(**net_input)
    hook.remove()
    encoder_out = model.encoder(net_input["src_tokens"], net_input["src_lengths"])
    summary = final_summary(encoder_out[SOURCE_STATES][1]).detach()
    expected = _independent_bag_of_words_nll(model, read["latent"], summary, sample["target"]).sum()
    assert torch.allclose(extra[BAG_OF_WORDS_NLL].detach(), expected, rtol=1e-4)
    extra[BAG_OF_WORDS_NLL].backward()
    assert model.encoder.to_posterior.weight.grad.abs().sum() > 0
    assert model.encoder.source_encoder.embed_tokens.weight.grad.abs().sum() > 0


def test_prior_draw_choice_bag_of_words_takes_the_draw_whose_words_fit_the_target(multi30k_bin, trained_cvae):
    """--prior-draw-choice bag-of-words: of K draws z ~ p(z|x), the one under which the
    bag-of-words head gives the target's words the highest likelihood (computed here
    independently from the head's weights), with no decoder pass; the chosen draw stays
    reparameterized, so the prior head gets the gradient."""
    from fairseq_svae.models.sentence_cvae import SOURCE_STATES, final_summary

    model, _, sample = _trained_model_and_batch(trained_cvae[0], multi30k_bin)
    model = _with_bag_of_words_head(model).train()
    net_input, draws = sample["net_input"], 6
    model.prior_draw_best_of = draws
    encoder_out = model.encoder(net_input["src_tokens"], net_input["src_lengths"])
    rows = torch.tensor([0, 2, 3, 7])
    decoder_passes = []
    hook = model.decoder.register_forward_pre_hook(lambda *_: decoder_passes.append(1))
    torch.manual_seed(11)
    chosen = model.prior_draws_best_for_bag_of_words(encoder_out, net_input["prev_output_tokens"], rows)
    hook.remove()
    assert not decoder_passes

    candidates = _prior_draws_after_seed(encoder_out, rows, draws, seed=11)
    summary = final_summary(encoder_out[SOURCE_STATES][1])[rows].detach()
    with torch.no_grad():
        nll = torch.stack([_independent_bag_of_words_nll(model, candidate, summary, sample["target"][rows])
                           for candidate in candidates])
    best = nll.argmin(0)
    assert torch.allclose(chosen.detach(), candidates[best, torch.arange(len(rows))], atol=1e-6)
    assert best.ne(0).any()  # not simply the first draw

    chosen.sum().backward()
    assert model.encoder.to_prior.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("frequent", [0, 20])
def test_prior_draw_score_words_scores_the_draws_with_a_softmax_over_a_subset_of_the_vocabulary(
        multi30k_bin, trained_cvae, frequent):
    """--prior-draw-score-words N: the draws are ranked by the targets' log-probabilities under a
    softmax over the targets' own words and the N most frequent ones (computed here
    independently: the whole vocabulary's logits with every other word masked out), and the
    vocabulary-wide output layer is not run."""
    model, task, sample = _trained_model_and_batch(trained_cvae[0], multi30k_bin)
    model.train()
    net_input, draws, dictionary = sample["net_input"], 6, task.target_dictionary
    model.prior_draw_best_of = draws
    model.prior_draw_score_words = max(frequent, 1)  # 0 would be the whole vocabulary
    encoder_out = model.encoder(net_input["src_tokens"], net_input["src_lengths"])
    rows = torch.tensor([0, 2, 3, 7])
    vocabulary_wide = []
    hook = model.decoder.fc_out.register_forward_hook(lambda *_: vocabulary_wide.append(1))
    torch.manual_seed(11)
    chosen = model.best_prior_draws(encoder_out, net_input["prev_output_tokens"], rows)
    hook.remove()
    assert not vocabulary_wide

    candidates = _prior_draws_after_seed(encoder_out, rows, draws, seed=11)
    target = sample["target"][rows]
    kept = torch.zeros(len(dictionary), dtype=torch.bool)
    kept[target[target.ne(dictionary.pad())]] = True
    kept[dictionary.nspecial:dictionary.nspecial + max(frequent, 1)] = True
    assert kept.sum() < len(dictionary) // 2  # a real subset, so the test tells it from the full softmax
    model.eval()
    with torch.no_grad():
        log_likelihoods = []
        for logits, _ in _decoded_under_each(model, encoder_out, net_input["prev_output_tokens"], rows, candidates):
            log_probs = logits.masked_fill(~kept, float("-inf")).log_softmax(-1)
            token_log_probs = log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            log_likelihoods.append(token_log_probs.masked_fill(target.eq(dictionary.pad()), 0).sum(-1))
    best = torch.stack(log_likelihoods).argmax(0)
    assert torch.allclose(chosen.detach(), candidates[best, torch.arange(len(rows))], atol=1e-6)


def test_prior_draw_score_words_over_the_whole_dictionary_chooses_as_the_exact_softmax(multi30k_bin, trained_cvae):
    """With N at least the dictionary's size the subset is the whole vocabulary: the same draws
    as the exact choice (--prior-draw-score-words 0)."""
    model, task, sample = _trained_model_and_batch(trained_cvae[0], multi30k_bin)
    model.train()
    net_input = sample["net_input"]
    model.prior_draw_best_of = 6
    encoder_out = model.encoder(net_input["src_tokens"], net_input["src_lengths"])
    rows = torch.arange(net_input["src_tokens"].size(0))
    chosen = {}
    for words in (0, len(task.target_dictionary)):
        model.prior_draw_score_words = words
        torch.manual_seed(3)
        chosen[words] = model.best_prior_draws(encoder_out, net_input["prev_output_tokens"], rows)
    assert torch.allclose(chosen[0], chosen[len(task.target_dictionary)], atol=1e-6)


@pytest.mark.parametrize("choice, extra", [("likelihood", []), ("posterior", []),
                                           ("likelihood", ["--prior-draw-score-words", "50"]),
                                           ("bag-of-words", ["--bag-of-words-loss", "1"])])
def test_prior_draw_best_of_trains_through_fairseq_train(multi30k_bin, tmp_path, choice, extra):
    result = run_command(*train_command(multi30k_bin, tmp_path / "best-of", "--max-update", "6",
                                        "--prior-draw-fraction", "0.5", "--prior-draw-best-of", "3",
                                        "--prior-draw-choice", choice, *extra, "--no-save"))
    records = json_log_records(result.stdout + result.stderr, "train_inner")
    assert records and all(math.isfinite(float(record["loss"])) for record in records)
    # The bag-of-words loss is logged (per sentence) exactly when it is trained.
    assert all(("bow_nll" in record) == ("--bag-of-words-loss" in extra) for record in records)


@pytest.mark.parametrize("options, message", [
    ({"prior_draw_best_of": 0}, "--prior-draw-best-of must be at least 1, got 0"),
    ({"prior_draw_best_of": 4}, "--prior-draw-best-of 4 chooses among the draws of --prior-draw-fraction, which is 0"),
    ({"prior_draw_score_tokens": -1}, "--prior-draw-score-tokens must be >= 0 (0: the whole target), got -1"),
    ({"prior_draw_score_words": -5}, "--prior-draw-score-words must be >= 0 (0: the whole vocabulary), got -5"),
    ({"prior_draw_choice": "decoder"},
     "--prior-draw-choice must be one of likelihood, posterior, bag-of-words, got 'decoder'"),
    ({"prior_draw_fraction": 0.5, "prior_draw_best_of": 4, "prior_draw_choice": "bag-of-words"},
     "--prior-draw-choice bag-of-words chooses by the bag-of-words head, which --bag-of-words-loss 0 does not build"),
    ({"bag_of_words_loss": -1.0}, "--bag-of-words-loss must be >= 0, got -1.0"),
])
def test_prior_draw_best_of_without_prior_draws_is_refused(options, message):
    from argparse import Namespace

    from fairseq_svae.models.sentence_cvae import base_architecture, check_options

    args = Namespace(**options)
    base_architecture(args)
    with pytest.raises(OptionError, match=re.escape(message)):
        check_options(args)


def test_prior_draw_fraction_out_of_range_is_refused():
    from argparse import Namespace

    from fairseq_svae.models.sentence_cvae import base_architecture, check_options

    args = Namespace(prior_draw_fraction=1.5)
    base_architecture(args)
    with pytest.raises(OptionError, match="--prior-draw-fraction must be in \\[0, 1\\], got 1.5"):
        check_options(args)


# --- Importance-weighted log p(y|x) -----------------------------------------------------------

def test_importance_weighted_nll_bounds(hub, multi30k_bin, trained_cvae):
    from fairseq_svae.conditional_likelihood import conditional_iw_nll, conditional_log_weights, score_split

    model = hub.models[0]
    hub.task.load_dataset("test")
    dataset = hub.task.dataset("test")
    sample = dataset.collater([dataset[i] for i in range(12)])
    one = conditional_iw_nll(model, sample, samples=1, seed=7)
    # K = 1: the importance-weighted bound is the one-sample ELBO.
    assert torch.allclose(one["iw_nll"], one["sampled_neg_elbo"])
    many = conditional_iw_nll(model, sample, samples=16, seed=7)
    # log-mean-exp >= mean of logs (Jensen), sentence by sentence, for the same draws.
    assert bool((many["iw_nll"] <= many["sampled_neg_elbo"] + 1e-9).all())
    assert bool((many["kl"] >= 0).all()) and bool(torch.isfinite(many["iw_nll"]).all())
    # The draws of a sentence are its own stream's: K = 4 gives the first 4 of K = 16's.
    assert torch.allclose(conditional_log_weights(model, sample, 4, seed=7, prior_share=0),
                          conditional_log_weights(model, sample, 16, seed=7, prior_share=0)[:4], atol=1e-6)
    totals = score_split(str(trained_cvae[0]), str(multi30k_bin), "test", samples=4, seed=7,
                         source_lang="en", target_lang="de", prior_share=0)
    assert totals["sentences"] == PAIRS["test"] and totals["prior_share"] == 0
    assert totals["iw_nll"] <= totals["sampled_neg_elbo"] + 1e-9
    assert totals["ppl"] == pytest.approx(math.exp(totals["iw_nll_per_token"]))


def test_importance_samples_from_the_prior_reweighted_by_the_mixture(hub):
    from fairseq_svae.conditional_likelihood import conditional_iw_nll, conditional_log_weights
    from fairseq_svae.gaussian import gaussian_log_density
    from fairseq_svae.models.sentence_cvae import PRIOR_LOGVAR, PRIOR_MEAN

    model = hub.models[0]
    hub.task.load_dataset("test")
    dataset = hub.task.dataset("test")
    sample = dataset.collater([dataset[i] for i in range(12)])
    # A quarter of K = 16 from p(z|x): the first 12 draws are still q's (the same eps), so the
    # ELBO, estimated from q's draws alone, is the 12 q-only draws' ELBO.
    mixed = conditional_iw_nll(model, sample, samples=16, seed=7, prior_share=0.25)
    q_only = conditional_iw_nll(model, sample, samples=12, seed=7, prior_share=0)
    assert torch.allclose(mixed["sampled_neg_elbo"], q_only["sampled_neg_elbo"])
    assert torch.equal(mixed["kl"], q_only["kl"]) and bool(torch.isfinite(mixed["iw_nll"]).all())
    # A q draw's weight differs from the q-only weight by q / r, r = 3/4 q + 1/4 p(z|x); checked
    # here by recomputing the draws' densities independently of the estimator.
    from fairseq_svae.generation.latent_draws import mixture_latents

    net_input = sample["net_input"]
    encoder_out = model.encoder(net_input["src_tokens"], net_input["src_lengths"])
    mean, logvar = model.encoder.posterior(encoder_out, net_input["prev_output_tokens"])
    prior_mean, prior_logvar = encoder_out[PRIOR_MEAN], encoder_out[PRIOR_LOGVAR]
    z = mixture_latents(mean, logvar, prior_mean, prior_logvar, sample["id"].tolist(), 7, 16, 4)
    log_q = gaussian_log_density(z, mean, logvar).double()
    log_p = gaussian_log_density(z, prior_mean, prior_logvar).double()
    log_r = torch.log(0.75 * log_q.exp() + 0.25 * log_p.exp())
    mixed_weights = conditional_log_weights(model, sample, 16, seed=7, prior_share=0.25)
    q_weights = conditional_log_weights(model, sample, 12, seed=7, prior_share=0)
    assert torch.allclose(mixed_weights[:12], q_weights + (log_q - log_r)[:12], atol=1e-4)
    # The last 4 were drawn from the prior: near p(z|x)'s mean more than near q's, on average.
    assert float((log_p - log_q)[12:].mean()) > float((log_p - log_q)[:12].mean())


def test_prior_share_out_of_range_is_one_error_line(multi30k_bin, trained_cvae):
    result = run_command(sys.executable, "-m", "fairseq_svae.conditional_likelihood", multi30k_bin,
                         "--path", trained_cvae[0], "--prior-share", "1", "--cpu", check=False)
    assert result.returncode == USER_ERROR_EXIT_STATUS
    assert "error: OptionError: --prior-share is the share of the importance samples" in result.stderr
    assert "Traceback" not in result.stderr



def test_the_harness_estimates_the_cvae_likelihood_with_the_prior_share_it_is_given(multi30k_bin, trained_cvae,
                                                                                     tmp_path):
    from fairseq_svae.conditional_likelihood import score_split

    checkpoint = str(trained_cvae[0])
    run_command("svae-translation-eval", multi30k_bin, "--references", multi30k_bin.parent / "test.de",
                "--output-dir", tmp_path / "out", "--generate-options", "--max-len-b 25",
                "--setting", "cvae", checkpoint, "--beam 2", "--nll", "cvae", checkpoint,
                "--iw-samples", "4", "--iw-prior-share", "0.25", "--seed", "3")
    nll = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))["nll"][0]
    assert nll["method"] == "importance-weighted, K = 4 (1 from p(z|x))"
    expected = score_split(checkpoint, str(multi30k_bin), "test", samples=4, seed=3, prior_share=0.25)
    assert nll["nll_per_sentence"] == pytest.approx(expected["iw_nll"], rel=1e-6)
    assert nll["negative_elbo"] == pytest.approx(expected["sampled_neg_elbo"], rel=1e-6)


def test_no_repeat_ngram_size_blocks_on_the_cpu_for_the_translation_task(multi30k_bin, trained_cvae, hub):
    """fairseq's CPU fallback of --no-repeat-ngram-size never blocks anything; the translation
    task's generators (the CVAE's draws and fairseq's own models alike) get the plugin's blocker."""
    from fairseq_svae.generation.ngram_blocking import PrefixNGramRepeatBlock
    from fairseq_svae.text_statistics import has_repeated_ngram

    generator = hub.task.build_generator(hub.models, Namespace(no_repeat_ngram_size=2, beam=2))
    assert isinstance(generator.repeat_ngram_blocker, PrefixNGramRepeatBlock)
    output = generate(multi30k_bin, trained_cvae[0], "--beam", "3", "--latent-samples", "3",
                      "--no-repeat-ngram-size", "2")
    hypotheses = [line.split("\t")[2].split() for line in output.splitlines() if line.startswith("H-")]
    assert len(hypotheses) == 3 * PAIRS["test"]
    assert not any(has_repeated_ngram(tokens, 2) for tokens in hypotheses)
