#!/usr/bin/env python3 -u
"""``svae-report``: what a user sees from a Sentence VAE, measured.

    svae-report data-bin/brown --path checkpoints/checkpoint_best.pt --gen-subset test \\
        --critic-path lm/checkpoint_best.pt --json report.json

decodes ``--prior-samples`` sentences from the prior, the reconstructions of
``--reconstructions`` sentences of the split (from their posterior means) and ``--homotopies``
paths of ``--homotopy-steps`` sentences between two sentences of the split, each as the hub
decodes it for that use (fairseq_svae/generation/decoding_defaults.py), with the fairseq
generation options the command line names (``--beam``, ``--sampling``, ``--sampling-topp``,
``--no-repeat-ngram-size``, ``--max-len-b``, ``--unkpen``, ...) on top, for every set. For each set, and for as many real sentences of the split
as the reference, it prints the mean length and its spread, the share that hit the length cap,
the share with a repeated 3-gram, the share of ``<unk>`` tokens, distinct-1/-2, self-BLEU
(sacreBLEU of each sentence against the others) and, with ``--critic-path`` (a fairseq language
model such as ``lstm_lm`` trained on the same data), the perplexity of the set under it; then the
reconstruction BLEU and exact-match rate, and per homotopy the distinct sentences and the words
changed between neighbouring steps; last, ``--imputations`` sentences of the split completed
after their last words were removed, through z and (given the critic) by the language model's
beam search. Seeded by ``--seed``; ``--json FILE`` writes it all.

Probes of what z holds (fairseq_svae/probe_report.py), each only when asked for: with
``--labels FILE`` (a label per sentence of the split) the accuracy of a linear classifier on
posterior means against one on the sentences' words and the majority label, and the R² of
sentence length read from z; with ``--paraphrase-group-size G`` (G consecutive sentences
describe one thing) the recall@1 of paraphrases by z against TF-IDF and chance, and
``--first-of-each-group`` makes the rest of the report read only the first sentence of each group
(captions: each image's first caption); with ``--attribute-words TARGET,SOURCE`` or
``--attribute-labels TARGET,SOURCE`` sentences decoded after an attribute vector was added to
their codes; with ``--latent-map FILE.png`` a PCA and t-SNE map of the codes.
"""

import sys

from fairseq import options, utils

import fairseq_svae  # noqa: F401  (registers the task before fairseq builds its parser)
from fairseq_svae.cli.sentence_commands import (
    fairseq_config,
    generation_parser,
    given_generation_options,
    quiet_logging,
)
from fairseq_svae.generation.decoding_defaults import CODE, PRIOR
from fairseq_svae.errors import IncompatibleCheckpointError, OptionError, exit_on_user_error
from fairseq_svae.evaluation.inputs import LANGUAGE_MODEL, load_model, load_split
from fairseq_svae.evaluation.report import write_json
from fairseq_svae.hub_interface import SentenceVAEHubInterface
from fairseq_svae.probe_report import ProbeReport, ProbeSettings, probe_table, settings_from_command_line
from fairseq_svae.sample_report import ReportSettings, SampleReport, report_table, work_units
from fairseq_svae.sentence_scorer import LanguageModelScorer

PROG = "svae-report"


def build_parser():
    parser = generation_parser(PROG, __doc__.split("\n\n")[0])
    defaults = ReportSettings()
    group = parser.add_argument_group("Report")
    # fmt: off
    group.add_argument("--prior-samples", type=int, default=defaults.prior_samples, metavar="N",
                       help="sentences decoded from z ~ N(0, I); as many sentences of the split "
                            "are the reference")
    group.add_argument("--reconstructions", type=int, default=defaults.reconstructions, metavar="M",
                       help="sentences of the split decoded from their posterior means")
    group.add_argument("--homotopies", type=int, default=defaults.homotopies, metavar="P",
                       help="paths between two sentences of the split")
    group.add_argument("--homotopy-steps", type=int, default=defaults.homotopy_steps, metavar="K",
                       help="sentences per path, both endpoints included")
    group.add_argument("--spherical", action="store_true", help="homotopies along the great circle (slerp)")
    group.add_argument("--imputations", type=int, default=defaults.imputations, metavar="R",
                       help="sentences of the split completed after their last words were "
                            "removed, through z (and by the critic's beam search as the baseline)")
    group.add_argument("--missing-fraction", type=float, default=defaults.missing_fraction, metavar="F",
                       help="share of each sentence's words removed for imputation (at least one)")
    group.add_argument("--imputation-iterations", type=int, default=defaults.imputation_iterations,
                       metavar="T", help="encode-sample-decode rounds of the imputation")
    group.add_argument("--critic-path", default=None, metavar="FILE",
                       help="a fairseq language model checkpoint trained on the same data: the "
                            "perplexity of each set under it")
    group.add_argument("--self-bleu-references", type=int, default=defaults.self_bleu_references, metavar="R",
                       help="compare each sentence with R others for self-BLEU (0: all others)")
    group.add_argument("--json", default=None, metavar="FILE", help="also write the report to FILE")
    # fmt: on
    add_probe_arguments(parser)
    return parser


# The options that ask for a probe; the others of the group only say how.
PROBES = ("labels", "paraphrase_group_size", "attribute_words", "attribute_labels", "latent_map")


def add_probe_arguments(parser) -> None:
    defaults = ProbeSettings()
    group = parser.add_argument_group("Probes of what z holds")
    # fmt: off
    group.add_argument("--labels", default=None, metavar="FILE",
                       help="one label per line of the split (e.g. brown/test.genre): accuracy of a "
                            "logistic regression on z vs on the words vs the majority label, and the "
                            "R² of sentence length read linearly from z")
    group.add_argument("--train-labels", default=None, metavar="FILE",
                       help="one label per line of the train split, where the probes are fit "
                            "(default: --labels with the split's name replaced by train)")
    group.add_argument("--probe-sentences", type=int, default=defaults.sentences, metavar="M",
                       help="at most M sentences of the split are probed (seeded choice)")
    group.add_argument("--probe-train-sentences", type=int, default=defaults.train_sentences, metavar="N",
                       help="at most N sentences of the train split fit the probes (seeded choice)")
    group.add_argument("--paraphrase-group-size", type=int, default=None, metavar="G",
                       help="G consecutive sentences describe one thing (5 for captions): recall@1 of "
                            "a paraphrase by cosine on z vs on TF-IDF vs chance")
    group.add_argument("--first-of-each-group", action="store_true",
                       help="with --paraphrase-group-size G: reconstructions, homotopies, imputations, "
                            "the reference sentences and attribute shifts read only the first sentence "
                            "of each group (captions: the first caption of each image)")
    group.add_argument("--attribute-words", default=None, metavar="TARGET,SOURCE",
                       help="e.g. woman,man: shift sentences with SOURCE toward TARGET by the vector "
                            "between train sentences with either word; judge and BLEU against the "
                            "sentence with the word swapped")
    group.add_argument("--attribute-labels", default=None, metavar="TARGET,SOURCE",
                       help="shift sentences labelled SOURCE toward TARGET (needs --labels); judged "
                            "by a bag-of-words classifier of the two labels")
    group.add_argument("--attribute-alphas", default=",".join(f"{alpha:g}" for alpha in defaults.attribute_alphas),
                       metavar="A,B,...",
                       help="multiples of the attribute vector added to each code")
    group.add_argument("--latent-map", default=None, metavar="FILE.png",
                       help="PCA and t-SNE of the probed sentences' codes, coloured by --labels or by "
                            "paraphrase group (needs matplotlib: pip install 'fairseq-svae[plot]')")
    # fmt: on


def probes_requested(args) -> bool:
    return any(getattr(args, name) is not None for name in PROBES)


def check_options(args) -> None:
    if args.path is None:
        raise OptionError("a checkpoint is needed: --path SAVE_DIR/checkpoint_best.pt")
    for name in ("prior_samples", "reconstructions"):
        if getattr(args, name) < 1:
            raise OptionError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.imputations < 0 or args.imputation_iterations < 0:
        raise OptionError("--imputations and --imputation-iterations must be >= 0")
    if not 0 < args.missing_fraction < 1:
        raise OptionError(f"--missing-fraction must be in (0, 1), got {args.missing_fraction}")
    if args.homotopies < 0:
        raise OptionError(f"--homotopies must be >= 0, got {args.homotopies}")
    if args.homotopy_steps < 2:
        raise OptionError(f"--homotopy-steps must be at least 2 (the two endpoints), got {args.homotopy_steps}")
    if args.first_of_each_group and not args.paraphrase_group_size:
        raise OptionError("--first-of-each-group reads the first sentence of each paraphrase group: "
                          "add --paraphrase-group-size G (5 for captions)")
    if args.train_labels is not None and args.labels is None:
        raise OptionError("--train-labels is read with --labels FILE (the labels of the split itself)")


def load_critic(path: str, data_dir: str, data_task):
    model, kind, arch = load_model(path, data_dir, data_task)
    if kind != LANGUAGE_MODEL:
        raise IncompatibleCheckpointError(
            f"--critic-path {path} holds a {arch} model; the critic is a fairseq language model "
            f"trained on the same data, e.g. fairseq-train --task language_modeling --arch lstm_lm"
        )
    return LanguageModelScorer(model.eval(), data_task.dictionary.pad(), max_logit_rows=512)


def main(argv=None) -> dict:
    parser = build_parser()
    args = options.parse_args_and_arch(parser, argv)
    quiet_logging()
    check_options(args)
    cfg = fairseq_config(args)
    utils.set_torch_seed(args.seed)  # for --sampling
    hub = SentenceVAEHubInterface.from_command_line(cfg)
    data_task, dataset = load_split(args.data, args.gen_subset)
    critic = load_critic(args.critic_path, args.data, data_task) if args.critic_path else None
    if critic is not None and hub.device.type == "cuda":
        critic.model.cuda()
    settings = ReportSettings(
        prior_samples=args.prior_samples, reconstructions=args.reconstructions, homotopies=args.homotopies,
        homotopy_steps=args.homotopy_steps, spherical=args.spherical, seed=args.seed,
        self_bleu_references=args.self_bleu_references, imputations=args.imputations,
        missing_fraction=args.missing_fraction, imputation_iterations=args.imputation_iterations,
        sentence_stride=args.paraphrase_group_size if args.first_of_each_group else 1,
    )
    # Each set is decoded as the hub decodes it for that use, with what the command line names on top.
    given = given_generation_options(parser, args, argv)
    hub.pinned_generation = frozenset()
    decoding = {"prior": hub.decoding(PRIOR, given), "codes": hub.decoding(CODE, given)}
    probes = None
    if probes_requested(args):
        # Built (label files read, options checked) before the long sample report runs.
        probes = ProbeReport(hub, args.data, args.gen_subset, dataset, settings_from_command_line(args),
                             code_generation=decoding["codes"])

    from tqdm import tqdm

    units = work_units(settings, critic is not None, hub.fitted_prior is not None)
    with tqdm(total=units, disable=args.no_progress_bar, desc=PROG, unit="sent", dynamic_ncols=True,
              file=sys.stderr) as bar:
        report = SampleReport(hub, dataset, settings, critic, decoding, progress=bar.update).make()
    report["checkpoint"], report["critic"] = args.path, args.critic_path
    report["data"], report["split"] = args.data, args.gen_subset

    print(report_table(report))
    examples = report["examples"]
    print("\nprior samples, N(0, I):\n" + "\n".join(f"  {text}" for text in examples["prior_samples"]))
    if "fitted_prior_samples" in examples:
        print("prior samples, fitted prior:\n" + "\n".join(f"  {text}" for text in examples["fitted_prior_samples"]))
    print("reconstructions:\n" + "\n".join(f"  {pair['sentence']}\n  -> {pair['reconstruction']}"
                                           for pair in examples["reconstructions"]))
    if examples["homotopy"]:
        print("homotopy:\n" + "\n".join(f"  {text}" for text in examples["homotopy"]))
    if examples["imputation"]:
        print("imputation (beginning | truth | through z | critic LM):")
        for row in examples["imputation"]:
            print(f"  {row['beginning']} | {row['truth'][len(row['beginning']):].strip()} | {row['vae']}"
                  f" | {row.get('language_model', '-')}")
    if probes is not None:
        with tqdm(disable=args.no_progress_bar, desc=f"{PROG} probes", unit="sent", dynamic_ncols=True,
                  file=sys.stderr) as bar:
            report["probes"] = probes.make(progress=bar.update)
        print(probe_table(report["probes"]))
    if args.json:
        write_json(args.json, report)
    return report


def cli_main():
    exit_on_user_error(main, PROG)


if __name__ == "__main__":
    cli_main()
