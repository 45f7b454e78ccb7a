#!/usr/bin/env python3 -u
"""``svae-eval``: the benchmark numbers of a sentence VAE, or of a language model, on one split.

    svae-eval data-bin/brown --path checkpoints/checkpoint_best.pt --gen-subset test --iw-samples 500

For a ``sentence_vae`` checkpoint it prints the importance-weighted NLL with K posterior samples
(nats per sentence, tokens counted with end-of-sentence) and the perplexity derived from it, the
negative ELBO, reconstruction NLL, KL, mutual information I(x; z) and active units. For a
fairseq language model (``lstm_lm``) it prints the exact NLL and perplexity of the same sentences
counted the same way, so the two go in one table. ``--json FILE`` writes the numbers for scripts.

The parser is fairseq's validation parser (``--cpu``, ``--batch-size`` / ``--max-sentences``,
``--max-tokens``, ``--user-dir``, ``--seed``, ``--gen-subset``, ``--path``, ...) plus the options
below; ``--first-sentences N`` scores a prefix of the split, for a quick look at an expensive
evaluation; ``--bf16`` scores in bfloat16 on a CPU or a GPU (``--fp16`` converts the model to
half precision). The work is done in :mod:`fairseq_svae.evaluation`.
"""

import logging
import os
import sys

from fairseq import options

import fairseq_svae  # noqa: F401  (registers the task and model: --user-dir is optional)
from fairseq_svae.cli.help import own_options_first
from fairseq_svae.errors import OptionError, exit_on_user_error
from fairseq_svae.evaluation import evaluate
from fairseq_svae.evaluation.run import DEFAULT_LOGITS_MB, FP16_WITH_BF16
from fairseq_svae.importance_sampling import ACTIVE_UNIT_THRESHOLD

PROG = "svae-eval"
# fairseq's validation options that --help shows beside svae-eval's own (--help-all: all of them).
MAIN_FAIRSEQ_OPTIONS = ("--path", "--gen-subset", "--cpu", "--seed", "--batch-size", "--bf16", "--user-dir")


def get_parser():
    parser = options.get_validation_parser(default_task="sentence_vae")
    parser.prog = PROG
    parser.description = __doc__.split("\n\n")[0].replace("``", "")
    own_options_first(parser, MAIN_FAIRSEQ_OPTIONS, "%(prog)s DATA --path CHECKPOINT [options]")
    group = parser.add_argument_group("svae-eval")
    # fmt: off
    group.add_argument("--iw-samples", type=int, default=500, metavar="K",
                       help="posterior samples per sentence for the importance-weighted NLL "
                            "(500 is the literature's usual figure)")
    group.add_argument("--first-sentences", type=int, default=None, metavar="N",
                       help="evaluate only the first N sentences of the split")
    group.add_argument("--json", default=None, metavar="FILE",
                       help="also write the results to FILE as JSON")
    group.add_argument("--active-unit-threshold", type=float, default=ACTIVE_UNIT_THRESHOLD, metavar="V",
                       help="a latent dimension is active when the variance over the data of "
                            "its posterior mean exceeds V (Burda et al. 2016)")
    group.add_argument("--logits-memory-mb", type=float, default=None, metavar="MB",
                       help="size of the logits of one vocabulary-projection call (default: "
                            f"{DEFAULT_LOGITS_MB['cpu']} on a CPU, where it keeps them in cache, "
                            f"{DEFAULT_LOGITS_MB['cuda']} on a GPU)")
    # fmt: on
    # fairseq's own option, which means a TPU run in its help; svae-eval reads it itself.
    parser._option_string_actions["--bf16"].help = (
        "score in bfloat16, under an autocast: the vocabulary projection, and the LSTMs where the "
        "hardware has a bf16 LSTM, run in bf16 (the posterior head, the softmax and the sums over "
        "samples stay fp32 or fp64); it pays on a GPU and on CPUs with AVX512-BF16 or AMX, "
        "elsewhere it is several times slower than fp32")
    return parser


def parse_args(argv):
    try:
        return options.parse_args_and_arch(get_parser(), argv)
    except ValueError as error:
        # fairseq 0.12 turns --bf16 into --tpu and refuses --fp16 with it in those words.
        if "Cannot combine --fp16 and --tpu" in str(error):
            raise OptionError(FP16_WITH_BF16) from error
        raise


def check_options(args) -> None:
    if args.path is None:
        raise OptionError("a checkpoint is needed: --path SAVE_DIR/checkpoint_best.pt")
    if args.iw_samples < 1:
        raise OptionError(f"--iw-samples must be >= 1, got {args.iw_samples}")
    if args.first_sentences is not None and args.first_sentences < 1:
        raise OptionError(f"--first-sentences must be >= 1, got {args.first_sentences}")


def main(argv=None) -> dict:
    # fairseq's format, as in fairseq_cli. force: importing fairseq already logged a line, which
    # installed Python's default handler.
    logging.basicConfig(
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        level=os.environ.get("LOGLEVEL", "INFO").upper(),
        stream=sys.stdout,
        force=True,
    )
    args = parse_args(argv)
    check_options(args)
    return evaluate(args)


def cli_main():
    exit_on_user_error(main, PROG)


if __name__ == "__main__":
    cli_main()
